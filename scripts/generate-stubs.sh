#!/usr/bin/env bash
# Generate every client's gRPC stubs from protos/ in one command.
#
#   scripts/generate-stubs.sh           regenerate the committed stubs in place
#   scripts/generate-stubs.sh --check   regenerate into a scratch directory and exit 1 when a committed
#                                       stub differs (or is missing, or is left over)
#
# Go, Java and TypeScript come from buf.gen.yaml (buf and the pinned plugins that `make polyglot-tools`
# puts in .cache/bin, and ts-proto from clients/typescript/node_modules); the TypeScript client also gets the
# google.rpc error-detail messages from clients/typescript/proto/. Python comes from
# clients/python/generate.py. Needs: make polyglot-tools (or the same tools on PATH) and `make setup`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
export PATH="$ROOT/.cache/bin:$ROOT/clients/typescript/node_modules/.bin:$PATH"

# Directories whose whole contents are generated (relative to the repository root).
GENERATED_DIRS=(
  clients/go/spindlev1
  clients/java/src/main/java/dev/spindle/v1
  clients/typescript/src/gen
)

# The google.rpc messages (Status, BadRequest, ErrorInfo, ...) for the TypeScript client, which has no
# package shipping them; Go and Java take them from genproto / proto-google-common-protos.
GOOGLE_RPC_TEMPLATE='{"version":"v2","plugins":[{"local":"protoc-gen-ts_proto","out":"clients/typescript/src/gen","opt":["env=node","esModuleInterop=true","useOptionals=messages"]}]}'

for tool in buf protoc protoc-gen-go protoc-gen-go-grpc protoc-gen-grpc-java protoc-gen-ts_proto; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "generate-stubs: '$tool' not found; run 'make polyglot-tools' first" >&2
    exit 2
  fi
done

# generate OUT_ROOT: write every buf-generated stub under OUT_ROOT (same relative layout as the repo).
generate() {
  local out_root="$1"
  for d in "${GENERATED_DIRS[@]}"; do
    rm -rf "${out_root:?}/$d"
  done
  buf generate --template buf.gen.yaml --output "$out_root"
  buf generate clients/typescript/proto --template "$GOOGLE_RPC_TEMPLATE" --output "$out_root"
}

if [[ "${1:-}" == "--check" ]]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  generate "$scratch"
  stale=0
  for d in "${GENERATED_DIRS[@]}"; do
    if ! diff -r -q "$d" "$scratch/$d"; then
      echo "generate-stubs: $d is not current (run scripts/generate-stubs.sh)" >&2
      stale=1
    fi
  done
  if ! "$PYTHON" clients/python/generate.py --check; then
    stale=1
  fi
  if [[ $stale -ne 0 ]]; then
    exit 1
  fi
  echo "generate-stubs: every generated stub is current"
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/generate-stubs.sh [--check]" >&2
  exit 2
fi

generate "$ROOT"
"$PYTHON" clients/python/generate.py
echo "generate-stubs: wrote ${GENERATED_DIRS[*]} and the Python stubs"
