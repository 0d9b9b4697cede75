# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: demo test test-slow lint bench clean

# The venv is (re)built whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# Not --no-compile: it saved 96 of 256 s of install here, but the demo's dozen Ray
	# processes then compiled torch & co. on first import, costing ~250 s (benchmarks/RESULTS.md).
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/seqablate demo --out $(DEMO_OUT)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m slow

lint: $(VENV)/.installed
	$(BIN)/ruff check seqablate tests benchmarks

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
