# The two commands a newcomer types: `make run` and `make test`. Both set up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint mutation clean

# The virtual environment, rebuilt when the pinned requirements change. pip (with the machine's
# own pip settings) fetches uv, and uv installs the lock: the same packages in under a minute on
# a fresh machine, where pip took over three (uv downloads and unpacks in parallel). Bytecode is
# compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set, nothing else would
# write it, and every process would compile torch anew. uv reads its index from UV_DEFAULT_INDEX
# (pip's --index-url) and keeps its cache in UV_CACHE_DIR (README, Quick start).
UV_VERSION := 0.13.10

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

# The workflow on the bundled example, with stand-in weights (works offline); `make run CORES=2`
# leaves the rest of the machine to others.
CORES ?= all
run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/example.yaml
	$(BIN)/snakemake --configfile config/example.yaml --report results/example/report.zip
	$(BIN)/python -m avtokens.report_pages results/example/report.zip  # files readable by all, as unpacked
	@echo "Report: results/example/report.zip (unzip it and open report/report.html)"

test: setup
	$(BIN)/pytest

# Day to day: unit tests and dry runs, without the tests that run the whole workflow, a
# benchmark, a compiler or full-size networks (the `workflow` marker; docs/testing.md says which
# tier proves what).
test-fast: setup
	$(BIN)/pytest -m "not workflow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint --cores 1

# Mutation testing of the pure modules against their fast unit tests ([tool.mutmut] in
# pyproject.toml; scores and survivors in docs/testing.md). Two workers: a 2-core machine.
# Starts afresh (mutmut would keep earlier verdicts that new tests could change); prints the
# surviving mutants, then killed / total per module.
mutation: setup
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results
	$(BIN)/mutmut results --all true | awk -F': ' '{split($$1, key, "."); n[key[2]]++} \
		$$2 == "killed" || $$2 == "timeout" {k[key[2]]++} \
		END {for (m in n) printf "%-10s %4d / %4d killed (%.1f%%)\n", m, k[m], n[m], 100 * k[m] / n[m]}' | sort
	$(BIN)/mutmut export-cicd-stats

clean:
	rm -rf results logs resources/demo_weights resources/example resources/compile_cache .snakemake mutants
