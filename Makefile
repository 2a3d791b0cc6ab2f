# Set-up and entry points. `make smoke` and `make test` create .venv on first use.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: venv smoke mini test test-slow lint format bench preflight report clean-results

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

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

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix . && $(BIN)/snakefmt workflow

# Before spending GPU-hours: a few steps of every job kind at the configured scale, and the
# projected wall time of every job and of the whole DAG (reduced size on a CPU, said so).
preflight: $(STAMP)
	$(BIN)/python -m ascl preflight params.yaml

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

report: $(STAMP)
	$(BIN)/snakemake --configfile config/smoke.yaml --report report.html

clean-results:
	rm -rf results checkpoints logs .snakemake mlflow.db
