"""Python client of the Spindle gRPC service (spindle.v1.EngineService)."""
