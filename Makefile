# Two entry points for a fresh machine with only Python 3.10+:
#   make demo   -> virtualenv + speechkit[plot], then enhance the bundled real example with the bundled model
#   make test   -> virtualenv + speechkit[dev], then the whole test suite (what .ci/run runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch 2.13.0 CPU: on this workplace's machines pip takes it from local disk.
TORCH  ?= torch==2.13.0

.PHONY: demo test bench clean-venv

$(VENV)/.base-stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-stamp: $(VENV)/.base-stamp
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(VENV)/.plot-stamp: $(VENV)/.base-stamp
	$(BIN)/pip install -q -e '.[plot]'
	touch $@

demo: $(VENV)/.plot-stamp
	$(BIN)/speechkit demo -o demo_output --force

test: $(VENV)/.dev-stamp
	$(BIN)/python -m pytest -q tests

bench: $(VENV)/.dev-stamp
	$(BIN)/python -m bench.run_all

clean-venv:
	rm -rf $(VENV)
