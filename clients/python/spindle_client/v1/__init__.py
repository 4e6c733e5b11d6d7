"""Generated protobuf and gRPC modules of spindle.v1."""
