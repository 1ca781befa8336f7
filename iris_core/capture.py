"""The capture's layout: where a proxy puts each prediction and label in an artifact store, and where the steps look.

A capture is a location MLflow's artifact repositories reach: ``mlflow-artifacts:/capture``
on a tracking server started with ``--serve-artifacts``, ``s3://bucket/capture``,
``gs://...``, or a local directory. Every serving replica writes Parquet files of its own
into it, partitioned by kind, model, version, date and hour (UTC, of each record's ``ts``)::

    predictions/model=iris/version=2/date=2026-12-06/hour=21/web-1-1796592123456789.parquet
    feedback/model=iris/version=2/date=2026-12-06/hour=21/web-1-1796592123502210.parquet

A file is named ``<replica>-<seq>.parquet``: the replica that wrote it and a number that
grows with every file it closes (microseconds since the epoch when it closed, so that a
replica restarted under the same name never writes a name it wrote before). Files are
immutable and appear whole under their final name; any other name (a store's temporary
upload, a name starting with ``.``) is not part of the capture.

Partition values are escaped as Hive escapes them (``%`` and the characters a path cannot
carry), so any registered model name fits. A record that names no registry version goes
under ``version=unknown``; a label whose answer the proxy no longer remembered too, since
its version is known only once the steps join it with its prediction.

The columns of a file are the record formats of ``iris_core.records`` (``FIELDS``,
``FEEDBACK_FIELDS``), with ``features`` a struct of the version's feature columns, ``ts``
a UTC timestamp, and the feedback files carrying ``model_name`` and ``model_version`` too.
Pure functions: no I/O, no pyarrow; the proxy's writer (``serving.capture``) and the steps'
reader (``steps.monitoring.capture_source``) both build on them.
"""

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

PREDICTIONS, FEEDBACK = "predictions", "feedback"
KINDS = (PREDICTIONS, FEEDBACK)
UNKNOWN_VERSION = "unknown"
SUFFIX = ".parquet"
HOUR_S = 3600

# What a replica id may look like: it is part of every file name the replica writes.
REPLICA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
REPLICA_RULE = "1 to 100 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
# Schemes whose locations only MLflow's artifact repositories reach (anything with "://" but file).
_ARTIFACT_PROXY_SCHEME = "mlflow-artifacts"
_PART = re.compile(r"(\w+)=(.*)")
_SAFE = "-_.~ "  # kept as they are in a partition value; everything else a path might trip on is %-escaped


@dataclass(frozen=True, order=True)
class Partition:
    """One directory of the capture: a kind of record, a model, a version and an hour (its start, epoch seconds)."""

    kind: str
    model: str
    version: str
    hour: int

    @classmethod
    def of(cls, kind: str, model: str, version: str | None, epoch: float) -> "Partition":
        """The partition a record of ``kind`` written at ``epoch`` (seconds) belongs to."""
        return cls(kind, model, version_value(version), int(epoch // HOUR_S) * HOUR_S)

    @property
    def path(self) -> str:
        """``predictions/model=iris/version=2/date=2026-12-06/hour=21``."""
        day, hour = time.strftime("%Y-%m-%d %H", time.gmtime(self.hour)).split()
        return f"{self.kind}/model={escape(self.model)}/version={escape(self.version)}/date={day}/hour={hour}"

    @property
    def end(self) -> int:
        return self.hour + HOUR_S


def version_value(version: str | None) -> str:
    """What a record's ``model_version`` is as a partition value: ``unknown`` for none."""
    return UNKNOWN_VERSION if version is None or not str(version) else str(version)


def escape(value: str) -> str:
    return quote(value, safe=_SAFE)


def unescape(value: str) -> str:
    return unquote(value)


def parse_partition(path: str) -> Partition | None:
    """The partition a relative directory path names (``predictions/model=iris/.../hour=21``), or None."""
    parts = path.strip("/").split("/")
    if len(parts) != 5 or parts[0] not in KINDS:
        return None
    values = {}
    for part, key in zip(parts[1:], ("model", "version", "date", "hour")):
        match = _PART.fullmatch(part)
        if match is None or match.group(1) != key:
            return None
        values[key] = match.group(2)
    try:
        start = datetime.strptime(f"{values['date']} {values['hour']}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    except ValueError:
        return None
    return Partition(parts[0], unescape(values["model"]), unescape(values["version"]), int(start.timestamp()))


def file_name(replica: str, seq: int) -> str:
    return f"{replica}-{seq:016d}{SUFFIX}"


def is_capture_file(name: str) -> bool:
    """A finished file of the capture, not a store's temporary upload or anything else lying there."""
    return name.endswith(SUFFIX) and not name.startswith(".") and "/" not in name


def check_replica(replica: str) -> str:
    if not REPLICA.fullmatch(replica):
        raise ValueError(f"a replica id must be {REPLICA_RULE}, got {replica[:40]!r}")
    return replica


class FileSequence:
    """The ``seq`` of a replica's files: microseconds since the epoch at each close, and always growing."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, int(self._clock() * 1_000_000))
        return self._last


# -- where a capture is --------------------------------------------------------------------------


def is_remote(location: str) -> bool:
    """A location with a scheme other than ``file``: the proxy and the steps reach it through a store's API."""
    scheme = urlparse(location).scheme
    return bool(scheme) and scheme != "file" and len(scheme) > 1  # "C:" is a drive, not a scheme


def is_artifact_proxy(location: str) -> bool:
    """``mlflow-artifacts:/...``: the tracking server's own artifact store, reached through its REST API."""
    return urlparse(location).scheme == _ARTIFACT_PROXY_SCHEME


def local_directory(location: str) -> Path | None:
    """The directory a local location names (a path or ``file://``), or None for a remote one."""
    if is_remote(location):
        return None
    parsed = urlparse(location)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(location)


def is_capture(location: str) -> bool:
    """Whether a step's ``--predictions`` or ``--feedback`` names a capture rather than a JSON-lines log.

    Any location with a scheme is a capture; a local directory is one when it holds the
    ``predictions/`` or ``feedback/`` tree of partitions (``model=...`` directories).
    """
    directory = local_directory(location)
    if directory is None:
        return True
    return any(
        (directory / kind).is_dir() and any(child.name.startswith("model=") for child in (directory / kind).iterdir())
        for kind in KINDS
    )


def child(location: str, relative: str) -> str:
    """``location`` joined with a relative path, for a URI or a local path alike."""
    return location.rstrip("/") + "/" + relative.strip("/")
