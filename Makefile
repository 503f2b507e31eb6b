# The two set-up commands of the README. Each works on a fresh machine from nothing: it
# creates .venv, installs CPU torch from its pinned wheel, then fsbench and its plugins.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fsbench-installed
DEMO   := demo-out

.PHONY: install test lint demo report bench judge vigface-default segtex-default clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# FID references of tests/test_fid_parity.py, without their torchvision (it would pull a CUDA torch)
	$(PY) -m pip install -q --no-deps pytorch-fid==0.3.0 torch-fidelity==0.4.0 tqdm
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(VENV)/bin/fsbench demo --out $(DEMO)

# The generator leaderboard (reports/leaderboard/, fsbench/leaderboard.py): every set scored by the
# default judge and trained on (FR gap-to-real); datasets, samples and models stay in build/leaderboard.
report: $(STAMP)
	$(PY) -m fsbench.leaderboard --out reports/leaderboard --work build/leaderboard

bench: $(STAMP)
	$(PY) -m pytest tests/benchmarks -p no:cacheprovider -o addopts="" -o python_files="bench_*.py" -s -q

# Rebuild the default judge shipped in the package (world seed 9001, a few CPU minutes);
# the same seed gives the same weights only on the same kind of machine (see its recipe.json).
judge: $(STAMP)
	$(VENV)/bin/fsbench judge build --out plugins/embedders/judge_weights

# Rebuild VIGFace's embedded default (generators/vigface/embedded): the procedural world of seed 0,
# both stages of the tiny preset on one CPU thread (about 45 minutes on a 2-core machine), then
# the weights-only export with its recipe.json. Same seed, same weights on the same kind of machine.
VIGFACE_BUILD := build/vigface
VIGFACE_RECIPE := fsbench data make procedural --out world --ids 1000 --per-id 8 --seed 0; \
  OMP_NUM_THREADS=1 fsbench train vigface --data world --run run --preset tiny; \
  fsbench runs export run --out generators/vigface/embedded $(VIGFACE_SAMPLE_DEFAULTS)
# 25 DDIM steps lose nothing measurable at this size; real identities at w 1.5, where the tiny
# model keeps them (82.7 % nearest their own identity vs 25.3 % at the paper's 0.5, README).
VIGFACE_SAMPLE_DEFAULTS := --sample-default steps=25 --sample-default guidance_real=1.5
vigface-default: $(STAMP)
	mkdir -p $(VIGFACE_BUILD)
	cd $(VIGFACE_BUILD) && $(CURDIR)/$(VENV)/bin/fsbench data make procedural --out world --ids 1000 --per-id 8 --seed 0 --resume
	cd $(VIGFACE_BUILD) && OMP_NUM_THREADS=1 $(CURDIR)/$(VENV)/bin/fsbench train vigface --data world --run run --preset tiny
	$(VENV)/bin/fsbench runs export $(VIGFACE_BUILD)/run --out generators/vigface/embedded $(VIGFACE_SAMPLE_DEFAULTS) --note "$(VIGFACE_RECIPE)"

# Rebuild SegTex's embedded default (generators/segtex/embedded): the seed-0 world of 300 x 8,
# both stages of the tiny preset on one CPU thread (about 30 minutes on a 2-core machine), the
# weights-only export, then its 100-image texture pool (the faces sampling draws crops from).
SEGTEX_BUILD := build/segtex
SEGTEX_RECIPE := fsbench data make procedural --out world --ids 300 --per-id 8 --seed 0; \
  OMP_NUM_THREADS=1 fsbench train segtex --data world --run run --preset tiny; \
  fsbench runs export run --out generators/segtex/embedded; \
  fsbench data make procedural --out generators/segtex/embedded/textures --ids 100 --per-id 1 --seed 0
segtex-default: $(STAMP)
	mkdir -p $(SEGTEX_BUILD)
	cd $(SEGTEX_BUILD) && $(CURDIR)/$(VENV)/bin/fsbench data make procedural --out world --ids 300 --per-id 8 --seed 0 --resume
	cd $(SEGTEX_BUILD) && OMP_NUM_THREADS=1 $(CURDIR)/$(VENV)/bin/fsbench train segtex --data world --run run --preset tiny
	$(VENV)/bin/fsbench runs export $(SEGTEX_BUILD)/run --out generators/segtex/embedded --note "$(SEGTEX_RECIPE)"
	rm -rf generators/segtex/embedded/textures
	$(VENV)/bin/fsbench data make procedural --out generators/segtex/embedded/textures --ids 100 --per-id 1 --seed 0

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
