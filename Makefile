# The two set-up commands of the README. Each works on a fresh machine from nothing: it
# creates .venv, installs CPU torch from its pinned wheel, then fsbench and its plugins.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fsbench-installed
DEMO   := demo-out

.PHONY: install test lint demo bench judge clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(VENV)/bin/fsbench demo --out $(DEMO)

bench: $(STAMP)
	$(PY) -m pytest tests/benchmarks -p no:cacheprovider -o addopts="" -o python_files="bench_*.py" -s -q

# Rebuild the default judge shipped in the package (world seed 9001, a few CPU minutes);
# the same seed gives the same weights only on the same kind of machine (see its recipe.json).
judge: $(STAMP)
	$(VENV)/bin/fsbench judge build --out plugins/embedders/judge_weights

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
