"""Server reflection that serves the .proto documentation along with the descriptors.

The generated ``_pb2`` modules carry descriptors without source info, so reflection alone would show
grpcurl users bare fields. The client package ships the FileDescriptorSet with source info
(``engine_descriptor_set.binpb``, generated from protos/); the pool handed to grpc's reflection servicer
here answers with those richer file descriptors and falls back to the default pool for everything else.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection

DESCRIPTOR_SET = "engine_descriptor_set.binpb"


def _documented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    try:
        data = resources.files("spindle_client.v1").joinpath(DESCRIPTOR_SET).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    return {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}


class _DocumentedFile:
    """A FileDescriptor whose CopyToProto keeps the source info (comments) when it is known."""

    def __init__(self, fd: Any, documented: dict[str, descriptor_pb2.FileDescriptorProto]):
        self._fd = fd
        self._documented = documented
        self.name = fd.name

    @property
    def dependencies(self) -> list["_DocumentedFile"]:
        return [_DocumentedFile(d, self._documented) for d in self._fd.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # noqa: N802 - protobuf's name
        doc = self._documented.get(self.name)
        if doc is not None:
            proto.CopyFrom(doc)
        else:
            self._fd.CopyToProto(proto)


class DocumentedPool:
    """The default descriptor pool, answering file look-ups with documented file descriptors."""

    def __init__(self, pool: Any = None):
        self._pool = pool or descriptor_pool.Default()
        self._documented = _documented_files()

    def FindFileByName(self, name: str) -> _DocumentedFile:  # noqa: N802
        return _DocumentedFile(self._pool.FindFileByName(name), self._documented)

    def FindFileContainingSymbol(self, symbol: str) -> _DocumentedFile:  # noqa: N802
        return _DocumentedFile(self._pool.FindFileContainingSymbol(symbol), self._documented)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable(service_names: tuple[str, ...], server: Any) -> None:
    reflection.enable_server_reflection(service_names, server, pool=DocumentedPool())
