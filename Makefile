# The two commands: `make demo` (the whole loop on a synthetic catalog) and `make test`.
# Each installs what it needs into .venv first.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := var/demo
DEMO_LISTINGS ?= 1000000

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export ORT_DISABLE_TELEMETRY := 1
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install test demo bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/knockoff demo --out $(DEMO) --listings $(DEMO_LISTINGS)

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/features.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var
