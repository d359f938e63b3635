# The two Quickstart commands: `make demo` and `make test` (see README.md).
#
# Everything installs into a project-local virtual environment, .venv, never
# into the Python that runs make: a Debian/Ubuntu system Python refuses pip
# installs (PEP 668, "externally-managed-environment"), and elsewhere they would
# land in the user's global site-packages.  PYTHON is only used to create .venv.
PYTHON ?= python3
VENV ?= .venv
VPY = $(VENV)/bin/python
PIP = $(VPY) -m pip

.PHONY: demo test install lint bench clean mutants

$(VPY):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "could not create $(VENV) with '$(PYTHON) -m venv'; on Debian/Ubuntu: sudo apt install python3-venv" >&2; \
	  exit 1; }

# Stamp files: reinstall only when the venv is new or pyproject.toml changed.
$(VENV)/.installed: pyproject.toml | $(VPY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VPY)
	$(PIP) install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(VPY) -m intervalnn.cli demo

lint: install
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .

test: lint
	$(VPY) -m pytest -q

bench: install
	$(VPY) benchmarks/bench_engine.py

# Each soundness-critical mutation in tests/mutants.py must make its tests fail.
mutants: install
	$(VPY) tests/mutants.py

# Numba caches each function by its own file's timestamp only: after editing
# kernels/rounding.py, stale compiled callers in other files survive. Clear them.
# (.venv stays: `rm -rf .venv` to reinstall from scratch.)
clean:
	find . -path ./$(VENV) -prune -o \( -name '*.nbi' -o -name '*.nbc' \) -exec rm -f {} +
