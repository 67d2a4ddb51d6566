# Quickstart targets (see README):
#   make run    set up .venv, build, then `lenetalex check` and `lenetalex bench`
#   make test   set up .venv, build, then the full test suite
# A second run reuses the virtual environment and the build.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.14.1
CPU_TORCH ?= torch==2.13.0
CPU_VENV ?= .venv-cpu
CPU_TREE ?= .cpu-check
BENCH_ARGS ?= --quick
PYTEST_ARGS ?=

export MAX_JOBS ?= 2
# The nvcc on PATH would make torch guess /usr/local, which lacks the libraries.
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif

SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h')

.PHONY: run test test-cpu build clean gpu-check

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)    # torch first: the build compiles against it
	$(PY) -m pip install -q numpy pytest expecttest ninja setuptools wheel tqdm
	touch $@

# Builds lenetalex._C in place (ninja reuses build/ between runs), then, once,
# registers the checkout in the venv (editable, with the `lenetalex` command)
# without compiling again.
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PY) setup.py build_ext --inplace
	[ -e $(VENV)/bin/lenetalex ] || LENETALEX_NO_EXTENSION=1 $(PY) -m pip install -q \
	  --no-build-isolation --no-deps -e .
	touch $@

build: $(VENV)/.built

run: build
	$(VENV)/bin/lenetalex info
	$(VENV)/bin/lenetalex check
	$(VENV)/bin/lenetalex bench $(BENCH_ARGS)

test: build
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The CPU-only build: torch's CPU wheel, LENETALEX_CUDA=0, in a copy of the
# tree so its binary never mixes with the CUDA one.
test-cpu:
	[ -x $(CPU_VENV)/bin/python ] || ( $(PYTHON) -m venv $(CPU_VENV) && \
	  $(CPU_VENV)/bin/pip install -q $(CPU_TORCH) && \
	  $(CPU_VENV)/bin/pip install -q numpy pytest expecttest ninja setuptools wheel tqdm )
	mkdir -p $(CPU_TREE)
	tar --exclude=./$(VENV) --exclude=./$(CPU_VENV) --exclude=./$(CPU_TREE) --exclude=./build \
	    --exclude='*.so' --exclude=./.git -cf - . | tar -xf - -C $(CPU_TREE)
	cd $(CPU_TREE) && LENETALEX_CUDA=0 ../$(CPU_VENV)/bin/python setup.py build_ext --inplace
	cd $(CPU_TREE) && ../$(CPU_VENV)/bin/python -c 'import lenetalex, sys; i = lenetalex.build_info(); print(i); sys.exit(i["cuda_compiled"])'
	cd $(CPU_TREE) && ../$(CPU_VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf build $(CPU_TREE) lenetalex/_C*.so lenetalex/_build_config.py $(VENV)/.built

# On a lent GPU machine (the device tool): build for its architecture, CUDA
# tests, compute-sanitizer, `lenetalex bench --device cuda`; see bench/gpu_check.sh.
# Exits 2 where there is no GPU.
gpu-check:
	bash bench/gpu_check.sh
