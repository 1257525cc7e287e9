# One-command set-up: every target creates the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STAMP_ALL := $(VENV)/.installed-all
PIP_FLAGS ?= -q
EXTRAS ?= test,serve
# every extra the test suite exercises (make test, CI): the service, TRL (llm) and Ray
TEST_EXTRAS ?= test,serve,llm,ray

.PHONY: install install-all test-fast demo demo-preferences demo-fusion demo-loop test bench bench-throughput bench-preferences bench-ppo bench-fusion bench-llm bench-check clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

$(STAMP_ALL): $(STAMP)
	$(BIN)/pip install $(PIP_FLAGS) -c constraints.txt -e '.[$(TEST_EXTRAS)]'
	touch $(STAMP_ALL)

install: $(STAMP)

## every optional extra (serve, llm, ray): what make test needs
install-all: $(STAMP_ALL)

## make demo: the marketing example end to end (train, baselines, oracle, pilot, report, DuckDB store)
demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/grpokit run examples/marketing.toml --out runs/demo --store grpokit.duckdb

## the preference-group comparison (GRPO, Dr. GRPO, rank, P-GRPO)
demo-preferences: $(STAMP)
	$(BIN)/grpokit demo --out runs/demo-preferences

## GRADE: personalized ranking fusion weights vs static weights on the search simulator (~2-4 min)
demo-fusion: $(STAMP)
	rm -rf runs/demo-fusion
	$(BIN)/grpokit fusion run examples/fusion.toml --out runs/demo-fusion

## the closed loop: a real grpokit serve on loopback, 5 rounds of serve -> learn -> gate -> pilot -> promote/rollback (~3-5 min quiet)
demo-loop: $(STAMP)
	rm -rf runs/loop
	$(BIN)/grpokit loop examples/marketing_loop.toml --out runs/loop

## make test: the whole test suite with every extra installed (CPU; what CI runs)
test: $(STAMP_ALL)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

## make test-fast: for local edits: skips the slow, Ray and language-model tests
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow and not ray and not llm"

bench: bench-throughput bench-preferences

bench-throughput: $(STAMP)
	$(BIN)/grpokit bench throughput --json runs/bench/throughput.json

bench-preferences: $(STAMP)
	$(BIN)/grpokit bench preferences --json runs/bench/preferences.json

## needs the benchmark extra (stable-baselines3)
bench-ppo: $(STAMP)
	$(BIN)/pip install $(PIP_FLAGS) -c constraints.txt -e '.[test,bench]'
	$(BIN)/python benchmarks/ppo_vs_grpo.py --json runs/bench/ppo_vs_grpo.json

## GRADE over 5 seeds (the BENCHMARKS.md table; ~15-20 min on 2 cores)
bench-fusion: $(STAMP)
	for s in 0 1 2 3 4; do rm -rf runs/bench/fusion_s$$s; \
	  $(BIN)/grpokit fusion run examples/fusion.toml --out runs/bench/fusion_s$$s --set fusion.seed=$$s --set grpo.seed=$$s --no-progress || exit 1; done
	$(BIN)/python benchmarks/fusion_table.py runs/bench/fusion_s0 runs/bench/fusion_s1 runs/bench/fusion_s2 runs/bench/fusion_s3 runs/bench/fusion_s4

## P-GRPO for language models: the persona benchmark on TRL (--quick, 3 seeds; ~20-30 min on 2 shared cores)
bench-llm: $(STAMP_ALL)
	$(BIN)/grpokit bench llm-preferences --json runs/bench/llm_preferences.json --quick --seeds 3
	$(BIN)/python benchmarks/llm_overhead.py --steps 30 --repeats 4 --json runs/bench/llm_overhead.json

## rerun the tables of BENCHMARKS.md marked bench-check from their commands and compare (11 business runs, 20 fusion runs, 5 preference benchmark files, 13 OBD runs when ../shared has the data, the coverage script, the 48-run group-relative frontier (~5 min), the learn-defaults sweeps (~8 min): hours, the fusion runs alone 3-19 min each on 2 shared cores)
bench-check: $(STAMP)
	$(BIN)/python benchmarks/check_benchmarks.py

clean:
	rm -rf $(VENV) runs .pytest_cache
