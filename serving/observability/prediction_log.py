"""The prediction log: every row of the sampled scoring requests, for the ``monitor`` step.

The line format is ``iris_core.records`` (the steps read it back from there); the thread,
queue, rotation and drop counting are ``serving.files.log_writer``'s. Sampling is per request
(``sample_rate`` of the requests are logged with all their rows), so the hot path pays one
random number, not one per row, and nothing is copied or encoded on it.
"""

import random
import time
from collections.abc import Sequence
from pathlib import Path

from iris_core.records import encode, make_record, timestamp
from iris_core.table.models import answer_class, answer_confidence
from serving.files.log_writer import LogWriter


class PredictionLogWriter(LogWriter):
    """Logs the rows of sampled requests from a background thread; ``submit`` never blocks."""

    kind = "prediction log"

    def __init__(self, path: str | Path, *, sample_rate: float = 1.0, **options):
        if not 0 <= sample_rate <= 1:
            raise ValueError(f"sample_rate must be between 0 and 1, got {sample_rate}")
        super().__init__(path, **options)
        self.sample_rate = sample_rate

    def submit(
        self,
        *,
        request_id: str,
        model_name: str,
        model_version: str | None,
        names: Sequence[str],
        rows: Sequence,
        predictions: Sequence,
        latency_ms: float,
    ) -> bool:
        """Queue one request; False if it is not logged.

        ``rows`` are dicts or value sequences in the order of ``names`` (the answering
        version's contract); ``predictions`` are the model's answers for them (the class and
        any confidence are read from each: ``iris_core.table.models``).
        """
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return False
        return self.put((time.time(), request_id, model_name, model_version, names, rows, predictions, latency_ms))

    def rows(self, item) -> int:
        return len(item[5])

    def lines(self, item) -> list[bytes]:
        epoch, request_id, model_name, model_version, names, rows, predictions, latency_ms = item
        ts = timestamp(epoch)
        return [
            encode(
                make_record(
                    ts=ts,
                    request_id=request_id,
                    row=index,
                    model_name=model_name,
                    model_version=model_version,
                    features=features,
                    names=names,
                    prediction=answer_class(output),
                    confidence=answer_confidence(output),
                    latency_ms=latency_ms,
                )
            )
            for index, (features, output) in enumerate(zip(rows, predictions))
        ]
