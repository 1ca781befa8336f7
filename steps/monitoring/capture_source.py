"""Finding and reading a capture's files: the partitions of one model in a time window, one file at a time.

The layout is ``iris_core.capture``'s. A local capture (a directory or ``file://``) is read
where it lies; any other location through MLflow's own artifact repository for it
(``mlflow-artifacts:/...`` through the tracking server of ``MLFLOW_TRACKING_URI``, with its
credentials; ``s3://``, ``gs://``... with their clients), listed directory by directory and
downloaded one file at a time into a temporary directory that is emptied as it goes. Only
the partitions of the model whose date and hour meet the window are listed at all, so what a
step reads grows with the window, never with the capture. Names that are not finished files
(a store's temporary upload, anything starting with ``.``) are not part of the capture.
"""

import contextlib
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from iris_core.capture import KINDS, Partition, escape, is_capture_file, local_directory, parse_partition
from steps.common.errors import InvalidParameter, StepError
from steps.monitoring.window import Window

_logger = logging.getLogger(__name__)

PREFETCH = 4  # files downloaded ahead of the one being read


@dataclass(frozen=True)
class CaptureFile:
    partition: Partition
    relative: str  # its path in the capture


class CaptureSource:
    """One capture location, listed and read by partition."""

    def __init__(self, location: str):
        self.location = location.strip()
        self.directory = local_directory(self.location)
        self._repository = None

    def __str__(self) -> str:
        return self.location

    def files(self, kind: str, model: str, window: Window, required: bool = True) -> list[CaptureFile]:
        """The finished files of ``kind`` for ``model`` in the partitions that meet ``window``, oldest hour first.

        A capture with no ``kind`` at all is an ``InvalidParameter`` when ``required`` (a wrong
        location, most likely); one with none in the window is an empty list (no traffic yet).
        """
        assert kind in KINDS
        if not self._listing(kind) and required:
            raise InvalidParameter(f"nothing captured at {self.location}: no {kind}/ partitions there")
        found = []
        model_dir = f"{kind}/model={escape(model)}"
        for version_dir in self._directories(model_dir):
            for date_dir in self._directories(version_dir):
                day = _day(date_dir)
                if day is None or not window.meets_day(day):
                    continue
                for hour_dir in self._directories(date_dir):
                    partition = parse_partition(hour_dir)
                    if partition is None or not window.meets_hour(partition.hour):
                        continue
                    names = sorted(name for name in self._names(hour_dir, files=True) if is_capture_file(name))
                    found += [CaptureFile(partition, f"{hour_dir}/{name}") for name in names]
        return sorted(found, key=lambda f: (f.partition.hour, f.relative))

    def tables(
        self, files: list[CaptureFile], columns: list[str] | None = None
    ) -> Iterator[tuple[CaptureFile, pa.Table]]:
        """Each file's table (only ``columns``), in order; remote files downloaded a few ahead and deleted once read."""
        if self.directory is not None:
            for file in files:
                yield file, self._read(self.directory / file.relative, file, columns)
            return
        with tempfile.TemporaryDirectory(prefix="capture-") as scratch, ThreadPoolExecutor(PREFETCH) as pool:
            pending = deque()
            queue = iter(files)
            for file in queue:
                pending.append((file, pool.submit(self._download, file, Path(scratch))))
                if len(pending) >= PREFETCH:
                    break
            while pending:
                file, future = pending.popleft()
                local = future.result()
                try:
                    yield file, self._read(local, file, columns)
                finally:
                    shutil.rmtree(local.parent, ignore_errors=True)
                following = next(queue, None)
                if following is not None:
                    pending.append((following, pool.submit(self._download, following, Path(scratch))))

    # -- listing -------------------------------------------------------------------------------

    def _listing(self, kind: str) -> list[str]:
        if self.directory is not None and not self.directory.is_dir():
            raise InvalidParameter(f"the capture {self.location!r} does not exist")
        return self._directories(kind)

    def _directories(self, relative: str) -> list[str]:
        return [f"{relative}/{name}" for name in self._names(relative, files=False)]

    def _names(self, relative: str, files: bool) -> list[str]:
        """The names of the files (or of the directories) directly under ``relative``."""
        if self.directory is not None:
            try:
                with os.scandir(self.directory / relative) as entries:
                    return [e.name for e in entries if (e.is_file() if files else e.is_dir())]
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise StepError(f"cannot list the capture at {relative}: {exc.strerror or exc}") from None
        try:
            listed = self._artifacts().list_artifacts(relative)
        except Exception as exc:  # MLflow's and the stores' errors, as one line
            raise StepError(f"cannot list the capture {self.location}: {_one_line(exc)}") from None
        return [Path(info.path).name for info in listed if info.is_dir != files]

    def _artifacts(self):
        if self._repository is None:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            self._repository = get_artifact_repository(self.location)
        return self._repository

    # -- reading -------------------------------------------------------------------------------

    def _download(self, file: CaptureFile, scratch: Path) -> Path:
        target = Path(tempfile.mkdtemp(dir=scratch))
        try:
            return Path(self._artifacts().download_artifacts(file.relative, str(target)))
        except Exception as exc:
            raise StepError(f"cannot download {file.relative} from the capture: {_one_line(exc)}") from None

    @staticmethod
    def _read(path: Path, file: CaptureFile, columns: list[str] | None) -> pa.Table:
        try:
            return pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise StepError(f"cannot read the capture's file {file.relative}: {exc}") from None


def _day(date_dir: str) -> int | None:
    name = date_dir.rsplit("/", 1)[-1]
    if not name.startswith("date="):
        return None
    with contextlib.suppress(ValueError):
        return int(datetime.strptime(name[5:], "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
    return None


def _one_line(exc: BaseException) -> str:
    from iris_core.tracking import one_line

    return one_line(exc)
