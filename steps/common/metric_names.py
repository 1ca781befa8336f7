"""Metric keys and artifact file names built from feature and class names, which may hold any character.

MLflow refuses a metric key with a character other than letters, digits, ``_ - . : /``
and space, one longer than 250 characters, and one that reads as another path
(``a//b``, ``a/../b``); an artifact file name must not hold ``/``. A name that already
fits is used as it is (``psi_alcohol`` stays), others get each refused
character replaced by ``_``. Names that would then collide, or be cut to length, get a
short digest of the original name, so two features never share a key.
"""

import hashlib
import posixpath
import re
from collections.abc import Iterable

MAX_KEY = 250
_KEY_REFUSED = re.compile(r"[^\w.\- :/]")
_FILE_REFUSED = re.compile(r"[^\w.\- ]")


def metric_keys(prefix: str, names: Iterable[str]) -> dict[str, str]:
    """``prefix + name`` made a valid, distinct MLflow metric key for each name."""
    return _distinct(prefix, names, _metric_key)


def file_names(names: Iterable[str], suffix: str = "") -> dict[str, str]:
    """A distinct file name (no ``/``, no leading dot) for each name, ending in ``suffix``."""
    return _distinct("", names, _file_name, suffix)


def _metric_key(text: str) -> str:
    key = _KEY_REFUSED.sub("_", text)
    if _not_unique_path(key):
        key = key.replace("/", "_")
    return key


def _file_name(text: str) -> str:
    name = _FILE_REFUSED.sub("_", text)
    return "_" + name[1:] if name.startswith(".") else name


def _not_unique_path(key: str) -> bool:
    norm = posixpath.normpath(key)
    return norm != key or norm == "." or norm.startswith("..") or norm.startswith("/")


def _distinct(prefix: str, names: Iterable[str], clean, suffix: str = "") -> dict[str, str]:
    result: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        key = clean(prefix + str(name))
        if len(key) + len(suffix) > MAX_KEY or key in taken:
            digest = hashlib.sha1(str(name).encode()).hexdigest()[:8]
            key = f"{key[: MAX_KEY - len(suffix) - 9]}-{digest}"
        result[name] = key + suffix
        taken.add(key)
    return result
