# TokenPool: `make run` starts everything on embedded defaults, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test lint venv bench clean wheel

$(STAMP): requirements/base.txt requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	PORT=$(PORT) exec $(PY) -m devtools.runner

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# House style checked by machine (pyproject.toml [tool.ruff], [tool.mypy]); .ci/run runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The benchmark suite (bench/suite.py: starts its own stack, rewrites the generated section
# of docs/benchmarks.md). BENCH_ARGS="--quick" checks it in minutes, "--list" names the entries.
bench: $(STAMP)
	$(PY) -m bench.suite $(BENCH_ARGS)

wheel: $(STAMP)
	$(PY) -m build --wheel --outdir dist/ .

clean:
	rm -rf $(VENV) var dist build
