# The two commands of the README. Both create .venv when it is missing and install polydiff into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.polydiff-installed
PYTEST_ARGS ?=

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install --quiet -e '.[test]'
	@command -v espeak-ng >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq espeak-ng >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq espeak-ng >/dev/null 2>&1)) || \
		echo "espeak-ng not installed: the audio recipe falls back to synthetic voiced signals"; }
	touch $(STAMP)

install: $(STAMP)

## make demo: train the digits recipe (about 10 minutes on 2 CPU cores) and write a PNG grid of samples to demo_out/
demo: $(STAMP)
	$(BIN)/python -m polydiff.core.demo --out demo_out

## make test: the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## make bench: sampler accuracy and speed benchmarks, written to docs/benchmarks.md
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/samplers.py

clean:
	rm -rf runs demo_out build dist *.egg-info
