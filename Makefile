# Quickstart targets (see README):
#   make run    set up .venv, build, then `lenetalex check` and `lenetalex bench`
#   make test   set up .venv, build, then the full test suite
#   make test-emu       the CUDA kernels on the CPU: build the CUDA emulator
#                       module lenetalex._emu, run the CUDA tests and its own
#   make test-emu-asan  the same under AddressSanitizer (out-of-bounds accesses)
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

.PHONY: run test test-cpu test-emu test-emu-asan build clean gpu-check

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

# The CUDA emulator (csrc/cuda_emu): csrc/cuda compiled by the host compiler
# into lenetalex._emu; the `cuda` tests run on it when there is no GPU, each
# call under three schedules. Its build folder is its own; ninja reuses it.
EMU_TESTS := -m "cuda or emulator"
test-emu: build
	LENETALEX_EMU=1 $(PY) setup.py build_ext --inplace --build-temp build/emu
	$(PY) -m pytest -q $(EMU_TESTS) $(PYTEST_ARGS)

# Under AddressSanitizer: built beside the tree (build/emu-asan-lib), never in
# place, since an ASan module only loads into a python that preloads the ASan
# runtime (and libstdc++, so its allocations are intercepted); LENETALEX_EMU_LIB
# points lenetalex.emu at it. -s: ASan's reports go to the terminal.
EMU_ASAN_LIB := build/emu-asan-lib
test-emu-asan: build
	LENETALEX_EMU_ASAN=1 $(PY) setup.py build_ext --build-lib $(EMU_ASAN_LIB) --build-temp build/emu-asan
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	  ASAN_OPTIONS=detect_leaks=0 LENETALEX_EMU_LIB=$(EMU_ASAN_LIB)/lenetalex \
	  $(PY) -m pytest -q -s $(EMU_TESTS) $(PYTEST_ARGS)

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
