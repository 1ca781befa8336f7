"""The model servers the proxy forwards to and how rows reach them.

``servers``: a ``mlflow models serve`` the proxy starts and supervises (``ManagedUpstream``)
or one it is pointed at (``ExternalUpstream``), each counting its calls (``call_stats``);
``forwarding``: one request's rows to one upstream; ``batching``: many requests' rows
gathered into one call.
"""
