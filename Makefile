# sslbook: two commands do all the set-up on a fresh machine (Python 3.11, no GPU needed).
#   make book   create .venv, install sslbook, execute every chapter at the tiny preset, build _build/html
#   make test   the linter (ruff), the unit tests (with the CI-sized peer comparison: the bench extra) and nbval on every chapter
#   make lab    JupyterLab on chapters/
# SSLBOOK_PRESET=full make book runs every chapter at full scale (GPUs; real data sets under data/).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sslbook-installed
export SSLBOOK_PRESET ?= tiny
# One chapter per kernel: keep each on at most two threads, as on the CI machines.
export OMP_NUM_THREADS ?= 2

.PHONY: all book test lint unit nbval lab clean env

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[book,bench]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (sslbook)" >/dev/null
	@touch $@

env: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --config jupyter_book_config.yml --toc _toc.yml --keep-going
	@echo "site: $(CURDIR)/_build/html/index.html"

test: lint unit nbval

# ruff (the book extra) with pyproject.toml's [tool.ruff]: the lint rules, then the formatting (`ruff format
# sslbook tests benchmarks` rewrites the tree to it).
LINT_PATHS := sslbook tests benchmarks
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

nbval: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider chapters -v

lab: $(STAMP)
	$(BIN)/jupyter lab chapters

clean:
	rm -rf _build .pytest_cache runs
	find . -name __pycache__ -prune -exec rm -rf {} +
