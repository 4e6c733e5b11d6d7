# The C++ engine (cpp/): development build, unit tests, stress driver and sanitizer runs.
#   make build-engine      CMake + Ninja build of libspindle_engine.so, the unit tests and the stress driver
#                          into build/cpp (the Python tests load the library from there)
#   make test-engine-cpp   ctest: GoogleTest unit tests and the stress driver on the tiny test model
#   make test-engine-asan  the same under AddressSanitizer + UndefinedBehaviorSanitizer (build/cpp-asan)
#   make test-engine-tsan  the same under ThreadSanitizer (build/cpp-tsan)
ENGINE_JOBS ?= $(shell nproc)
ENGINE_STRESS_REQUESTS ?= 300
# The tiny test artifact (built into the shared test cache on first use); a failure stops the recipe.
ENGINE_TINY_MODEL = model="$$(PYTHONPATH=service:$$PYTHONPATH $(PYTHON) tests/engine/tiny_artifact.py)"
ENGINE_SAN_ENV = UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/cpp/tests/sanitizers.supp
ENGINE_TSAN_ENV = TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/cpp/tests/tsan.supp"

.PHONY: build-engine test-engine-cpp test-engine-asan test-engine-tsan
build-engine: setup
	cmake --preset dev -S cpp >/dev/null
	cmake --build build/cpp -j $(ENGINE_JOBS)

# pytest loads build/cpp/libspindle_engine.so (spindle._lib), so build it first.
test-python: build-engine

test-engine-cpp: build-engine
	cd build/cpp && ctest --output-on-failure
	$(ENGINE_TINY_MODEL) && build/cpp/spindle_stress "$$model" $(ENGINE_STRESS_REQUESTS) 4

test-engine-asan: setup
	cmake --preset asan -S cpp >/dev/null
	cmake --build build/cpp-asan -j $(ENGINE_JOBS) --target spindle_engine_tests spindle_stress
	$(ENGINE_SAN_ENV) build/cpp-asan/spindle_engine_tests
	$(ENGINE_TINY_MODEL) && $(ENGINE_SAN_ENV) build/cpp-asan/spindle_stress "$$model" 150 4

test-engine-tsan: setup
	cmake --preset tsan -S cpp >/dev/null
	cmake --build build/cpp-tsan -j $(ENGINE_JOBS) --target spindle_engine_tests spindle_stress
	$(ENGINE_TSAN_ENV) build/cpp-tsan/spindle_engine_tests
	$(ENGINE_TINY_MODEL) && $(ENGINE_TSAN_ENV) TVM_NUM_THREADS=1 build/cpp-tsan/spindle_stress "$$model" 150 4

EXTRA_TESTS += test-engine-cpp test-engine-asan test-engine-tsan
