# CPU schedules and quantized formats (service/spindle/compiler/schedules, quantization.py). Their tests run
# inside `make test-python`; these targets are for working on them alone.
#   make test-schedules   the schedule-rule, attention-kernel, RoPE-scaling and quantization tests
#   make bench-compile    prefill/decode speed of every weight format against the memory-bandwidth bound
#   make bench-prefill    the current pipeline against the previous one (alternating), and single kernels
#   make bench-decode-ab  decode steps of the default model, a baseline revision (BASELINE) against the working tree
#   make bench-decode-profile  the VM calls of a decode step of the default model, each timed
BENCH_COMPILE_ARGS ?=
BASELINE ?= HEAD

.PHONY: test-schedules bench-compile bench-prefill bench-decode-ab bench-decode-profile
test-schedules: setup
	$(PYTHON) -m pytest -q tests/compiler/test_schedules.py tests/compiler/test_attention.py \
		tests/compiler/test_rope_scaling.py tests/compiler/test_quantization.py

bench-compile: setup
	TVM_NUM_THREADS=$$(nproc) OPENBLAS_NUM_THREADS=1 $(PYTHON) bench/bench_compile.py $(BENCH_COMPILE_ARGS)

bench-prefill: setup
	TVM_NUM_THREADS=$$(nproc) OPENBLAS_NUM_THREADS=1 $(PYTHON) bench/bench_compile.py --side-by-side --dtypes float32 --repeats 15
	TVM_NUM_THREADS=$$(nproc) OPENBLAS_NUM_THREADS=1 $(PYTHON) bench/bench_compile.py --kernels --repeats 30

bench-decode-ab: setup
	OPENBLAS_NUM_THREADS=1 $(PYTHON) bench/decode_ab.py --baseline $(BASELINE)

bench-decode-profile: setup
	OPENBLAS_NUM_THREADS=1 $(PYTHON) bench/decode_profile.py
