"""Which version answers, and how that changes: the router and the jobs it coordinates.

``router``: one model's versions and the routes requests take; ``supervision``: a live
server that died, started again with backoff; ``following``: the alias polled (or told by a
webhook) and reconciled; ``switching``: a new version brought in, warm or cold; ``delivery``:
the canary compared with the previous version (``analysis``) and rolled back when it is
worse; ``shadow`` and ``shadowing``: a version that answers copies of requests, never clients.
"""
