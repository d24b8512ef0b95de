# Two entry points, both self-contained on a fresh machine (Python 3.10+):
#   make quickstart   install, generate example clips, embed them into HDF5 + a Milvus Lite
#                     file (embedded, no server), print a summary, then search with one clip
#   make test         install everything (core, plugins, test extras) and run every test
# torch is pinned through constraints.txt to the CPU build (an unpinned torch pulls CUDA).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PLUGIN_DIRS = $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
EXAMPLE_PLUGIN = examples/musicembed-example-plugin

.PHONY: install install-test quickstart test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e . $(foreach p,$(PLUGIN_DIRS),-e $(p))

install-test: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[test]' $(foreach p,$(PLUGIN_DIRS),-e '$(p)[test]')

quickstart: install
	$(BIN)/musicembed examples examples/audio
	$(BIN)/musicembed run --gin_file runs/quickstart_milvus.gin
	$(BIN)/musicembed search --gin_file runs/quickstart_milvus.gin --audio examples/audio/jazz/b.flac -k 5

test: install-test
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python benchmarks/bench_logmel.py

clean:
	rm -rf musicembed-out examples/audio .pytest_cache
