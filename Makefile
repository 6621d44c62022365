# Abstractinator: `make help` lists the targets. Every target sets itself up (creates .venv) first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS_VENV := .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
PYTEST := $(PY) -m pytest
DATA_DIR := .data/prepared/default
GPUS ?= 1
IMAGE ?= ghcr.io/abstractinator/abstractinator:0.1.0
GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)

.PHONY: help setup demo up down compile-pipeline test test-slow test-all lint format bench bench-codec bench-quality eval-data evaluate image image-constraints manifests-check manifests-tools clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all]'
	$(PY) -m pip check
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install the package editable with all extras (pinned)

demo: setup ## the whole pipeline on CPU with kfp.local (sqlite MLflow, local artifacts): prepare_data, stage1_pretrain, stage2_top_lm, evaluate, promote (the gate); ARGS=... adds flags
	$(PY) -m abstractinator pipeline run-local --config demo --stage1-steps 500 --stage2-steps 300 \
		--artifact-root .data/artifacts --pipeline-root .data/kfp-local --model-name abstractinator-demo \
		--eval-max-bytes 65536 --no-canterbury $(ARGS)

up: setup ## start SeaweedFS (S3), PostgreSQL and an MLflow server on loopback (state in .data/stack)
	$(PY) -m abstractinator stack up --state-dir .data/stack

down: setup ## stop the local stack (its data stays for the next `make up`)
	$(PY) -m abstractinator stack down --state-dir .data/stack

compile-pipeline: setup ## write the kfp pipeline YAML to build/pipeline.yaml (IMAGE=..., GPUS=1)
	$(PY) -m abstractinator pipeline compile --out build/pipeline.yaml --image $(IMAGE) --gpus $(GPUS)

test: setup ## run the default test suite (fast; no slow or GPU tests)
	$(PYTEST) -m "not slow and not cuda" -q

test-slow: setup ## run the slow tests (real corpus download, end to end, whole files through the codec); CI runs these too
	$(PYTEST) -m "slow and not cuda" -q

test-all: setup ## run every test that this machine can run
	$(PYTEST) -m "not cuda" -q

lint: setup ## ruff lint and format check (CI runs it)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup ## ruff format the code
	$(PY) -m ruff format .

bench: setup ## model throughput and attention memory benchmarks (JSON + table under bench/results/)
	$(PY) bench/model_throughput.py

bench-codec: setup ## compress/decompress (static, --adapt) vs gzip/bzip2/xz/zstd: MODEL=checkpoint-or-models:/ [MAX_BYTES=] [ARGS=...]
	$(if $(MODEL),,$(error set MODEL=<checkpoint file/folder, s3:// or models:/name@alias>))
	$(PY) bench/codec.py --model $(MODEL) $(if $(MAX_BYTES),--max-bytes $(MAX_BYTES)) $(ARGS)

bench-quality: setup ## model vs a plain byte transformer of equal size at equal training seconds (demo config and workflow; ARGS=...)
	$(PY) bench/quality.py --config demo --stage1-steps 500 --stage2-steps 300 $(ARGS)

eval-data: setup ## fetch the offline lm-eval data and write the <task>_local task YAMLs
	$(PY) -m abstractinator evaluate --write-local-tasks

evaluate: setup ## compression report of CKPT (default checkpoints/ci) into evaluation/
	$(PY) -m abstractinator evaluate --checkpoint $(or $(CKPT),checkpoints/ci) --compression --out evaluation/

image: ## build the CUDA training image (needs a Docker engine; IMAGE=registry/name:tag)
	docker build -f docker/Dockerfile --build-arg GIT_COMMIT=$(GIT_COMMIT) -t $(IMAGE) .

image-constraints: setup ## regenerate docker/constraints.txt (the image's pins) from the tested .venv
	{ sed -n '/^#/p;/^[^#]/q' docker/constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(torch|triton|nvidia-[a-z0-9-]+|abstractinator)==' | grep -v -E '^-e | @ '; } > docker/constraints.txt.new && mv docker/constraints.txt.new docker/constraints.txt

# checkov pins boto3/botocore/packaging below the project's pins, so the checkers get their own venv.
$(TOOLS_STAMP): manifests/tools/requirements.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet -r manifests/tools/requirements.txt
	$(TOOLS_VENV)/bin/python -m pip check
	touch $(TOOLS_STAMP)

manifests-tools: $(TOOLS_STAMP) ## install the pinned policy checkers (checkov, hadolint) into .venv-tools

manifests-check: setup $(TOOLS_STAMP) ## build every kustomization; kubernetes-validate, checkov, hadolint and the project's contracts
	$(PY) manifests/check.py --tools $(TOOLS_VENV)/bin

clean: ## remove caches and build outputs (keeps .venv and .data)
	rm -rf .pytest_cache .ruff_cache .hypothesis *.egg-info build
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
