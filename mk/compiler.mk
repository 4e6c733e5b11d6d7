# The model compiler (service/spindle/compiler). Its tests run inside `make test-python`; these targets
# are for working on it alone.
#   make test-compiler     the compiler's pytest suite (tiny models, loaders, tokenizer, SmolLM2)
#   make compile-default   compile the embedded SmolLM2 (default format) into the cache and print its path
COMPILE_DTYPE ?= q4_1

.PHONY: test-compiler compile-default
test-compiler: setup
	$(PYTHON) -m pytest -q tests/compiler

compile-default: setup
	PYTHONPATH=service:$$PYTHONPATH $(PYTHON) -m spindle.compiler.command compile --dtype $(COMPILE_DTYPE) --check
