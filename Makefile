# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rating-engine demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check rating_engine tests benchmarks
	$(BIN)/ruff format --check rating_engine tests benchmarks
	$(BIN)/mypy rating_engine benchmarks tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_rating.py
	$(BIN)/python benchmarks/bench_ledger.py
	$(BIN)/python benchmarks/bench_refusals.py
	$(BIN)/python benchmarks/bench_authorize.py
	$(BIN)/python benchmarks/bench_deck.py
	$(BIN)/python benchmarks/bench_activity.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
