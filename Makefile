# The two commands: `make demo` (the whole loop on a synthetic catalog) and `make test`.
# Each installs what it needs into .venv first.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := var/demo
DEMO_LISTINGS ?= 1000000
# after the loop the demo serves the officers' console until Ctrl-C; DEMO_SERVE=0 exits instead
DEMO_SERVE ?= 1
# `make bench BENCH_FLAGS=--quick` runs the small versions of both benchmarks
BENCH_FLAGS ?=

# No environment exports here: telemetry off and passive OpenMP threads are set by
# knockoff.environment.quiet_environment(), which the `knockoff` command and the tests'
# conftest call first; the bench scripts set what they need before their own imports.

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
	$(BIN)/knockoff demo --out $(DEMO) --listings $(DEMO_LISTINGS) \
		$(if $(filter 0,$(DEMO_SERVE)),,--serve)

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/features.py $(BENCH_FLAGS)
	$(BIN)/python bench/score.py $(BENCH_FLAGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var
