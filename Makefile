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
	$(BIN)/pip install --quiet --no-deps 'k-diffusion>=0.1.1'
	@command -v espeak-ng >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq espeak-ng >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq espeak-ng >/dev/null 2>&1)) || \
		echo "espeak-ng not installed: the audio recipe falls back to synthetic voiced signals"; }
	touch $(STAMP)

install: $(STAMP)

DEMO_RUN := runs/demo/$(shell date +%Y%m%d-%H%M%S)

## make demo: train the digits recipe (about 10 minutes on 2 CPU cores) and write PNG samples to demo_out/
demo: $(STAMP)
	$(BIN)/polydiff fit --config recipes/image/digits.yaml --trainer.default_root_dir $(DEMO_RUN)
	$(BIN)/polydiff sample --config recipes/image/digits.yaml \
		--ckpt_path $(DEMO_RUN)/lightning_logs/version_0/checkpoints/last.ckpt \
		--num_samples 100 --sampler dpmpp_2m --steps 20 --guidance 2 --out demo_out --overwrite true
	@echo "demo: samples in demo_out/ (grid.png: 10 per class), run in $(DEMO_RUN)"

## make test: the layer contracts (import-linter), the linter (ruff) and the whole test suite
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

## make bench: sampler accuracy and speed benchmarks, written to docs/benchmarks.md
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/pip install --quiet --no-deps 'k-diffusion>=0.1.1'
	$(BIN)/python benchmarks/samplers.py
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/collect.py

clean:
	rm -rf runs demo_out build dist *.egg-info
