"""Files the proxy writes that hold requests' data: private to their owner (``private``), rotated and written off
the event loop (``log_writer``), their queue shown at ``/metrics`` (``queue_metrics``)."""
