"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), in the proxy's own event loop."""
