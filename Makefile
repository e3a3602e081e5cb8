# The two commands a newcomer types: `make run` and `make test`. Both set up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint clean

# The virtual environment, rebuilt when the pinned requirements change.
setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The workflow on the bundled example, with stand-in weights (works offline).
run: setup
	$(BIN)/snakemake --cores all --configfile config/example.yaml
	$(BIN)/snakemake --configfile config/example.yaml --report results/example/report.zip
	@echo "Report: results/example/report.zip (unzip it and open report/report.html)"

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint --cores 1

clean:
	rm -rf results logs resources/demo_weights resources/example resources/compile_cache .snakemake
