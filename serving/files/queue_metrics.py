"""The two gauges every queued log writer shows at ``/metrics``: rows waiting, and a disk that stopped answering.

Written once for the prediction log (``serving.observability.metrics``) and the feedback log
(``serving.feedback.service``); ``PREFIX`` starts every metric name of the proxy.
"""

from prometheus_client.core import GaugeMetricFamily

PREFIX = "proxy"


def log_queue_families(name: str, title: str, writer):
    """A log writer's queue (rows) and whether its disk stopped answering: the two gauges of ``name``."""
    yield GaugeMetricFamily(
        f"{PREFIX}_{name}_queued_rows",
        f"Rows waiting for the {title}'s writer (at most {writer.max_queued_rows}; past it rows are dropped).",
        value=writer.queued_rows,
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_{name}_stalled",
        f"1 while an open or a write of the {title} has not returned for a while (a disk that stopped), else 0.",
        value=1 if writer.stalled else 0,
    )
