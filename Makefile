# thermocg: the two commands of the README.
#   make demo   set up a virtual environment and run the embedded default study
#   make test   set up the same environment and run the test suite
# TORCH is installed first unless torch is already importable, so that no multi-GB CUDA build is pulled.
# setup then builds thermocg's compiled kernel (python -m thermocg._ext, cached; without a C++ compiler
# it says so and thermocg uses its PyTorch paths).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?= -m "not slow"
DEMO_CONFIG ?= configs/demo.yaml
DEMO_RUN_DIR ?= runs/demo

BIN := $(VENV)/bin
export OMP_WAIT_POLICY := passive
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export OPENMM_CPU_THREADS ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-all setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed
	$(BIN)/python -m thermocg._ext

demo: setup
	$(BIN)/thermocg study $(DEMO_CONFIG) --run-dir $(DEMO_RUN_DIR)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs
