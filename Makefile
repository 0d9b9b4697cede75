# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: demo test test-slow lint bench clean

# The venv is (re)built whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# --no-compile: byte-compiling every installed file (torch alone has thousands) took ~95 of
	# 256 s here; Python compiles what is imported, on first import.
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]'
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
