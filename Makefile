# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= dev,postgres,ray,faiss,tensorboard
VIDEOS ?=

.PHONY: venv test test-fast demo bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

# The test command CI runs (.ci/run). Starts its own PostgreSQL in a temp dir.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: $(STAMP)
	BIN=$(BIN) bash scripts/demo.sh $(VIDEOS)

bench: $(STAMP)
	$(BIN)/python benchmarks/crop_store.py
	$(BIN)/python benchmarks/mining.py
	$(BIN)/python benchmarks/graph.py
	$(BIN)/python benchmarks/train.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) vidmine-data demo-out *.egg-info
