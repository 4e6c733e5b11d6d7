"""``python -m spindle_client.healthcheck [ADDRESS] [SERVICE]``: exit 0 when the server reports SERVING.

A grpc.health.v1 probe for container health checks and scripts (ADDRESS defaults to 127.0.0.1:50051).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str = "127.0.0.1:50051", service: str = "", timeout_s: float = 3.0) -> str:
    """The serving status name of ``service`` ("" is the whole server)."""
    with grpc.insecure_channel(address) as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=timeout_s)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    address = args[0] if args else "127.0.0.1:50051"
    service = args[1] if len(args) > 1 else ""
    try:
        status = check(address, service)
    except grpc.RpcError as exc:
        print(f"{address}: {exc.code().name}", file=sys.stderr)
        return 1
    print(f"{address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
