"""Credentials never leave in what we show: the user-info part of every URL in a text becomes ``***``.

A tracking URI (``http://alice:secret@mlflow:5000``, ``postgresql://mlflow:pw@db/mlflow``)
or an ``--upstream`` URL may carry a password. Anything that shows one to a person or a
log (``/health``, start-up lines, error messages, warnings) passes it through ``redact``.
"""

import re

# "://" then everything up to the last "@" before the next "/" or blank: a password may hold
# an unescaped "@". Scanning stops at "/" or blank, so the cost stays linear in the text.
_USER_INFO = re.compile(r"://[^/\s]*@")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced: ``http://***@host:5000/path``."""
    return _USER_INFO.sub("://***@", text) if "@" in text else text
