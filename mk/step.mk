# The non-matmul part of a decode step (service/spindle/compiler/schedules/decode_kernels.py and the
# VM around it). Its tests run inside `make test-python` (tests/compiler/test_attention.py).
#   make bench-step       KV-cache kernels, per-layer fixed cost and SmolLM2 decode steps, against
#                         STEP_BASELINE (a git revision), alternating in one process
STEP_BASELINE ?= HEAD~1
STEP_ARGS ?=

.PHONY: bench-step
bench-step: setup
	TVM_NUM_THREADS=$$(nproc) OPENBLAS_NUM_THREADS=1 $(PYTHON) bench/compile_step.py --baseline $(STEP_BASELINE) $(STEP_ARGS)
