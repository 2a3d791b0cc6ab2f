# Set-up and entry points. `make smoke` and `make test` create .venv on first use.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
# Every package and its hashes, for Linux x86_64 and Python 3.11, the `dev` extra included.
LOCK := requirements.lock
# `make lock LOCK_FLAGS=--upgrade` moves every package to the newest release pyproject.toml
# allows, `LOCK_FLAGS='--upgrade-package mlflow'` that one only; plain `make lock` keeps the
# locked versions that still satisfy pyproject.toml.
LOCK_FLAGS ?=

.PHONY: venv lock smoke mini test test-slow lint dvc-yaml format bench preflight report clean-results

# Plain pip installs the lock (nothing but python3 is needed), then the project itself.
$(STAMP): $(LOCK) pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

$(BIN)/uv:
	$(MAKE) $(STAMP)

# Re-resolves pyproject.toml's dependencies into the lock and records their hash in its first
# line (tests/test_dependencies.py fails when pyproject.toml's dependencies no longer match it).
# uv comes from the locked .venv, as it is: an out-of-date .venv is not reinstalled first.
lock: | $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--custom-compile-command 'make lock' --quiet $(LOCK_FLAGS) --output-file $(LOCK)
	$(BIN)/python tests/test_dependencies.py --stamp $(LOCK)

# The main job: the whole paper DAG on the embedded offline data (tiny widths and epochs),
# about 10 minutes on 2 cores (benchmarks/smoke_walltime.py).
# No GPU is involved: `gpu=2` lets two single-threaded training jobs share the two CPU cores.
smoke: $(STAMP)
	$(BIN)/snakemake --configfile config/smoke.yaml --cores $(CORES) --resources gpu=$(CORES)

# The paper's claims at CPU scale: the whole DAG on the offline data with three seeds, in the
# regime chosen by the pre-study of docs/small-scale.md (config/mini.yaml); see
# docs/results-mini/README.md for its measured wall time on 2 cores. Its claims report is
# results/paper/claims.md.
mini: $(STAMP)
	$(BIN)/snakemake --configfile config/mini.yaml --cores $(CORES) --resources gpu=$(CORES)

# The test suite (CI runs exactly this).
test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/snakefmt --check workflow

# dvc.yaml is generated from the job registry (ascl.registry.KINDS) and the jobs each stage
# runs for params.yaml and config/*.yaml (ascl.dag); the tests check it is up to date.
dvc-yaml: $(STAMP)
	$(BIN)/python -m ascl dvc-yaml

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix . && $(BIN)/snakefmt workflow

# Before spending GPU-hours: a few steps of every job kind at the configured scale, and the
# projected wall time of every job and of the whole DAG (reduced size on a CPU, said so).
preflight: $(STAMP)
	$(BIN)/python -m ascl preflight params.yaml

# On the first GPU: versions, syncs per step, bf16 step time and peak memory per job kind at
# batch 512, projected hours (a labelled CPU dry run without CUDA; benchmarks/gpu_check.py).
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --json results/gpu-check.json

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

report: $(STAMP)
	$(BIN)/snakemake --configfile config/smoke.yaml --report report.html

clean-results:
	rm -rf results checkpoints logs .snakemake mlflow.db
