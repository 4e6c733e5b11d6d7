# The gRPC service, the Python client and the CLI.
#   make python-stubs        regenerate clients/python/spindle_client/v1 from protos/ (grpcio-tools)
#   make test-python-stubs   fail when the committed Python stubs differ from freshly generated ones
#   make test-service        the service and client tests only (tests/service, tests/client)
#   make bench-grpc          gRPC vs in-process engine: TTFT, inter-token latency, tok/s at 1 and 16 streams
#   make docker-image        build the serving image (Dockerfile)
DOCKER ?= docker
IMAGE ?= spindle:latest

.PHONY: python-stubs test-python-stubs test-service bench-grpc docker-image
python-stubs: setup
	$(PYTHON) clients/python/generate.py

test-python-stubs: setup
	$(PYTHON) clients/python/generate.py --check

test-service: setup build-engine
	$(PYTHON) -m pytest -q tests/service tests/client

bench-grpc: setup build-engine
	$(PYTHON) bench/bench_grpc.py

docker-image:
	$(DOCKER) build -t $(IMAGE) .

EXTRA_TESTS += test-python-stubs
