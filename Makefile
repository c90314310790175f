# Two commands do all set-up on a fresh machine:
#   make reproduce   install into .venv, then run the quick profile of every study
#   make test        install into .venv, then run the test suite (pytest, two workers), printing the 20 slowest
#   make test-fast   the tests that run no study, subprocess, browser or Ray (-m "not slow"): the edit-test loop
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
OUT ?= batchlab-results
BIN = $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# The CPU wheel of torch 2.13.0 lies on disk on the project's machines; elsewhere pip fetches
	@# any torch>=2.4 (bring your CUDA build for a GPU: install it into .venv before `make`).
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q "torch>=2.4"
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

reproduce: $(BIN)/.installed
	$(BIN)/batchlab reproduce --profile $(PROFILE) --out $(OUT)

# two pytest workers (pytest-xdist), one thread each, a test file per worker at a time (--dist loadfile: a file's
# module fixtures are built once): on 2 cores, 5 min 58 s alone (2026-12-07); one process with the default threads
# took 11-12 min alone and 19 min 28 s while other jobs shared the machine
test: $(BIN)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20 tests

# one thread per process: the fast tier's workloads are tiny, and threads that wait on a busy CPU cost more than
# they give (measured: 67 s with one thread, 233 s with two, on 2 cores shared with other jobs)
test-fast: $(BIN)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" tests

# one formatter and line length for the repository (ruff, 120 columns; see pyproject.toml)
format: $(BIN)/.installed
	$(BIN)/pip install -q ruff
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix --select I src tests benchmarks

.PHONY: install reproduce test test-fast format
