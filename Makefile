# One place for the setup steps the README and CI use.
PYTHON ?= python3
VENV ?= .venv
# torch from this machine's local wheels (CPU-capable CUDA build, with torchvision for the
# stock Qwen2-VL/SmolVLM processors). On your own machine `make install TORCH=` lets pip choose.
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: install test demo demo-offline bench clean

$(BIN)/groundrec: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(strip $(TORCH)),$(BIN)/pip install --quiet $(TORCH))
	$(BIN)/pip install --quiet -e ".[offline,serve,dev]"
	touch $@

install: $(BIN)/groundrec

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/groundrec demo --out demo-artifacts

# No network: a tiny random-weight SmolVLM stands in for the real one (answers are noise,
# recommendations come from the catalog text).
demo-offline: install
	$(BIN)/groundrec dev make-tiny-vlm .tmp/tiny-vlm
	$(BIN)/groundrec demo --out demo-artifacts --vlm .tmp/tiny-vlm

clean:
	rm -rf $(VENV) demo-artifacts .tmp
