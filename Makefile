# Two-command quickstart: `make train` and `make test` install what is missing first (apt data, a venv under .venv).
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR := /usr/share/datasets/fashion-mnist
ARGS ?=

.PHONY: setup data train test bench lint clean

setup: data $(VENV)/.installed

# Debian's dataset-fashion-mnist: the real data without internet (skipped where apt or root is missing)
data:
	@if [ ! -d $(DATA_DIR) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

train: setup
	$(PY) -m fmnist.train model=medium $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

bench: setup
	$(PY) -m fmnist.bench_train $(ARGS)

lint: setup
	$(PY) -m ruff check fmnist hydra_plugins tests
	$(PY) -m ruff format --check fmnist hydra_plugins tests

clean:
	rm -rf $(VENV) .pytest_cache
