"""Spindle: serve large language models over gRPC from a C++ threaded engine running TVM-compiled models."""

__version__ = "0.1.0"
