"""Labels sent back for answered requests: read (``labels``), judged against the answer (``answers``), kept
(``log``) and served at ``POST /feedback`` (``service``)."""
