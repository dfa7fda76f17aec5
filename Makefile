# The README's two commands: `make demo` (the main job) and `make test` (the suite). Both set everything up first.
VENV ?= .venv
BIN := $(VENV)/bin
export MPLBACKEND := Agg

.PHONY: setup demo test bench lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/xrfed demo

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: setup
	mkdir -p bench
	$(BIN)/xrfed bench sim --json bench/sim.json

lint: setup
	$(BIN)/ruff check bridge agents federation tests
	$(BIN)/mypy

clean:
	rm -rf runs out .pytest_cache
