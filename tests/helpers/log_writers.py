"""Rows submitted to the prediction log's writer, and a tally of what it reports written and dropped."""

from iris_core.table.iris import IRIS

FEATURES = IRIS.feature_names
ROW = [5.1, 3.5, 1.4, 0.2]


class Tally:
    """Collects what the writer reports, as the metrics would."""

    def __init__(self):
        self.written = 0
        self.dropped: dict[str, int] = {}

    def on_written(self, rows):
        self.written += rows

    def on_dropped(self, reason, rows):
        self.dropped[reason] = self.dropped.get(reason, 0) + rows


def submit(writer, request_id="r1", rows=(ROW,), version="2"):
    return writer.submit(
        request_id=request_id,
        model_name="iris",
        model_version=version,
        names=FEATURES,
        rows=list(rows),
        predictions=[{"prediction": "setosa", "confidence": 0.97}] * len(rows),
        latency_ms=3.25,
    )
