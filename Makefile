# RAN: every target creates .venv from the pinned requirements when it is missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip
PROFILE ?= default

.DEFAULT_GOAL := help
.PHONY: help all warm test test-browser lint format smoke run report bench lab notebooks clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)  ## create .venv with the pinned requirements

all: $(STAMP)  ## run every notebook (default profile), export HTML, build the FINDINGS PDF
	$(PY) -m ran run --profile $(PROFILE)
	$(PY) -m ran report --profile $(PROFILE)

warm: $(STAMP)  ## make all again on the caches of a first make all; timing in pipeline_warm.json
	$(PY) -m ran run --profile $(PROFILE) --record pipeline_warm
	$(PY) -m ran report --profile $(PROFILE)

test: $(STAMP)  ## lint (ruff check + format check) and the test suite, smoke pipeline included
	$(PY) -m ruff check ran notebooks tests
	$(PY) -m ruff format --check ran notebooks tests
	$(PY) -m pytest -q

# Debian's chromium (Playwright's own browser download cannot reach its CDN here)
# driven by the PyPI playwright pinned in requirements.txt.
CHROMIUM := /usr/bin/chromium
test-browser: $(STAMP)  ## notebook 01's sliders and 07's chat panel in JupyterLab, headless Chromium (installs both)
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "test-browser: $(CHROMIUM) is missing; as root run: apt-get update && apt-get install -y chromium" >&2; \
	    exit 1; \
	  fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi
	$(PIP) install --quiet "$$(grep -E '^playwright==' requirements.txt)"
	$(PY) -m pytest -q -m browser tests/acceptance/

lint: $(STAMP)  ## ruff check and format check only
	$(PY) -m ruff check ran notebooks tests
	$(PY) -m ruff format --check ran notebooks tests

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix ran notebooks tests
	$(PY) -m ruff format ran notebooks tests

smoke: $(STAMP)  ## the smoke profile of the pipeline (tiny models, seconds), under build/smoke/
	$(PY) -m ran run --profile smoke
	$(PY) -m ran report --profile smoke

run: $(STAMP)  ## one notebook: make run ONLY=01 [PROFILE=default]
	$(PY) -m ran run --profile $(PROFILE) --only $(ONLY)

report: $(STAMP)  ## regenerate FINDINGS.md's generated sections and the PDF from data/results
	$(PY) -m ran report --profile $(PROFILE)

bench: $(STAMP)  ## benchmarks (overhead, pass cost, sweep, lower-layer reuse, notebook times) -> data/results/bench.json
	$(PY) -m ran bench all

lab: $(STAMP)  ## JupyterLab on the notebooks (sliders need the widget extension, installed)
	$(VENV)/bin/jupyter lab notebooks/

clean:  ## remove build/ (executed notebooks, HTML, PDF, caches); keeps .venv and results
	rm -rf build
