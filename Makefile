# Two entry points, both self-contained on a fresh machine (Python 3.10+):
#   make quickstart   install, generate example clips, embed them into HDF5 + a Milvus Lite
#                     file (embedded, no server), print a summary, then search with one clip
#   make test         install everything (core, plugins, test extras) and run every test
# torch is pinned to one version through constraints.txt. Which *build* you get depends on
# the index: on the public PyPI, Linux torch wheels are CUDA builds (several GB with the
# nvidia-* packages). For the CPU build (what CI uses), run with
#   make quickstart TORCH_INDEX=https://download.pytorch.org/whl/cpu
# and for a given CUDA version, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu128.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PLUGIN_DIRS = $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
EXAMPLE_PLUGIN = examples/musicembed-example-plugin
TORCH_INDEX ?=
# torch from TORCH_INDEX first (when given); the pinned version then satisfies everything else.
TORCH_FIRST = $(if $(TORCH_INDEX),$(BIN)/pip install -q -c constraints.txt torch --index-url $(TORCH_INDEX) &&,)

.PHONY: install install-test browser quickstart test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(TORCH_FIRST) $(BIN)/pip install -q -c constraints.txt -e '.[train]' $(foreach p,$(PLUGIN_DIRS),-e $(p))

install-test: $(BIN)/python browser
	$(TORCH_FIRST) $(BIN)/pip install -q -c constraints.txt -e '.[test,train,serve,evaluate,ray]' $(foreach p,$(PLUGIN_DIRS),-e '$(p)[test]')

# The web page's browser test (tests/test_serve_browser.py) drives Debian's chromium through
# its chromedriver (selenium; nothing is downloaded at test time). Installed here when missing,
# if we are root with apt-get; otherwise that test fails and says what to install.
BROWSER_PKGS = chromium chromium-driver
browser:
	@if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(BROWSER_PKGS) (apt-get) for the page's browser test"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BROWSER_PKGS); \
	else \
	  echo "note: chromium and chromedriver are missing and cannot be installed here (not root, or no apt-get): tests/test_serve_browser.py will fail until they are (Debian/Ubuntu: sudo apt-get install $(BROWSER_PKGS))"; \
	fi

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
