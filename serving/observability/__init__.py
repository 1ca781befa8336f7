"""What the proxy tells about itself: Prometheus metrics (``metrics``), the prediction log
(``prediction_log``), and ``monitoring``, which plugs them, the capture and the feedback into the app."""
