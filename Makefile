# One-command set-up: every target creates the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP_FLAGS ?= -q
EXTRAS ?= test

.PHONY: install demo demo-preferences test bench bench-throughput bench-preferences bench-ppo clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

## make demo: the marketing example end to end (train, baselines, oracle, pilot, report, DuckDB store)
demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/grpokit run examples/marketing.toml --out runs/demo --store grpokit.duckdb

## the preference-group comparison (GRPO, Dr. GRPO, rank, P-GRPO)
demo-preferences: $(STAMP)
	$(BIN)/grpokit demo --out runs/demo-preferences

## make test: the whole test suite (CPU, about a few minutes on 2 cores)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: bench-throughput bench-preferences

bench-throughput: $(STAMP)
	$(BIN)/grpokit bench throughput --json runs/bench/throughput.json

bench-preferences: $(STAMP)
	$(BIN)/grpokit bench preferences --json runs/bench/preferences.json

## needs the benchmark extra (stable-baselines3)
bench-ppo: $(STAMP)
	$(BIN)/pip install $(PIP_FLAGS) -c constraints.txt -e '.[test,bench]'
	$(BIN)/python benchmarks/ppo_vs_grpo.py --json runs/bench/ppo_vs_grpo.json

clean:
	rm -rf $(VENV) runs .pytest_cache
