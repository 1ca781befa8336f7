"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), in the proxy's own event loop.

gRPC's fork handlers are switched off before grpc is imported: the proxy forks only to exec
its model servers at once, and with them on, every such start printed "Other threads are
currently calling into gRPC, skipping fork() handlers" on stderr.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
