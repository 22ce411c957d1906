# One command each: `make test` and `make demo` create .venv and install what they use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Serving and the embedded broker only (make demo): no PyTorch, no transformers.
SERVE_STAMP := $(VENV)/.serve-stamp
# Everything: training, export and the dev tools (make test, bench, model).
STAMP := $(VENV)/.installed-stamp
# pytest-xdist workers for `make test`. More workers than this 2-core CPU's cores pays off because
# the integration tests mostly wait on brokers, receivers and clocks; the PyTorch training tests
# share one worker (xdist_group "torch-training") so they never fight each other for the cores, and
# PyTorch gets one OpenMP thread: its default of one per core spun against the other workers
# (measured here: 677 s serial, 364 s on 3 workers, 310 s with OMP_NUM_THREADS=1).
TEST_WORKERS ?= 3

.PHONY: test lint demo bench model clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	# torch first and exactly pinned: it resolves to the local CPU wheel, never a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ingest model monitor alerts finsent bench tests

test: lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup

demo: $(SERVE_STAMP)
	$(BIN)/finsent demo

bench: $(STAMP)
	$(BIN)/python bench/model_throughput.py

# Rebuild the shipped model from data/ (two 30-minute training runs on a 2-core CPU, then a soup).
model: $(STAMP)
	$(BIN)/finsent train --out build/train
	$(BIN)/finsent train --out build/train4 --train-only-source "poojathakoor/twitter-stock-sentiment"
	$(BIN)/finsent soup --out build/soup build/train/checkpoint build/train4/checkpoint
	$(BIN)/finsent export --train-dir build/soup --out build/export --ship-dir model/default

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
