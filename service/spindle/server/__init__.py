"""The Spindle gRPC server: spindle.v1.EngineService over the threaded or stepped engine."""
