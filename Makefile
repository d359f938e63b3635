# The two Quickstart commands: `make demo` and `make test` (see README.md).
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: demo test install lint bench clean mutants

install:
	$(PIP) install -q -e '.[test]'

demo:
	$(PIP) install -q -e .
	$(PYTHON) -m intervalnn.cli demo

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: lint
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) benchmarks/bench_engine.py

# Each soundness-critical mutation in tests/mutants.py must make its tests fail.
mutants: install
	$(PYTHON) tests/mutants.py

# Numba caches each function by its own file's timestamp only: after editing
# kernels/rounding.py, stale compiled callers in other files survive. Clear them.
clean:
	find . -name '*.nbi' -delete -o -name '*.nbc' -delete
