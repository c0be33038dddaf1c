# metabt: `make demo` runs the main job on the sample data; `make test` runs lint, type
# checks and the tests (one of which builds the API reference, a pdoc warning failing it);
# `make docs` builds the API reference into docs/api.
# Both create the virtual environment (.venv) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.metabt-installed
RAY_STAMP := $(VENV)/.metabt-ray-installed
# A local wheel directory (the CPU build of torch) is used when the machine has one.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP    := $(BIN)/python -m pip install --disable-pip-version-check $(FIND_LINKS) -c constraints.txt

.PHONY: setup demo test lint typecheck docs bench clean constraints

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, alone and pinned, so nothing later can pull a CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $(STAMP)

# the optional Ray extra (distributed experiments): tests run a real local Ray
$(RAY_STAMP): $(STAMP)
	$(PIP) -e '.[dev,ray]'
	touch $(RAY_STAMP)

demo: $(STAMP)
	$(BIN)/metabt backtest

# lint and type checks first: a red linter fails the run before the slower tests
# two workers: the suite is single-threaded per test and the machines have 2 cores
test: lint typecheck $(RAY_STAMP)
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check metabt strategies tests benchmarks scripts examples
	$(BIN)/ruff format --check metabt strategies tests benchmarks scripts examples

typecheck: $(STAMP)
	$(BIN)/mypy

# the API reference (pdoc, Google-style docstrings) into docs/api; any pdoc warning fails
docs: $(STAMP)
	$(BIN)/python scripts/docs.py --out docs/api

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_backtest.py

constraints: $(STAMP)
	{ head -n 3 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed -e 's/^torch==.*/torch==2.13.0/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) reports build docs/api *.egg-info
