# facestream: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
# Face data: ../shared/data beside the checkout; a clone elsewhere (a CI workspace) falls back to the
# workplace's copy at /work/shared/data. Override with DATA=... or FACESTREAM_DATA.
DATA ?= $(firstword $(wildcard ../shared/data /work/shared/data) ../shared/data)
export FACESTREAM_DATA ?= $(abspath $(DATA))

.PHONY: help setup up down status test test-unit demo models train eval calibrate bench bench-quick bench-accuracy clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup:  ## install Debian packages, .venv with pinned deps, the Kafka broker jars (idempotent)
	@scripts/setup.sh

up: setup  ## start Kafka (KRaft, one node) and Redis on loopback, create the topics
	@$(PY) scripts/stack.py up

down:  ## stop what `make up` started
	@if [ -x $(PY) ]; then $(PY) scripts/stack.py down; else python3 scripts/stack.py down; fi

status:  ## is the stack running?
	@python3 scripts/stack.py status

test: models  ## setup, up, the whole suite, down; non-zero on any failure
	@$(PY) scripts/stack.py up
	rc=0; $(PY) -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS) || rc=$$?
	$(PY) scripts/stack.py down
	exit $$rc

test-unit: models  ## only the tests that need no server
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

demo: models  ## the whole pipeline on a real Kafka and Redis over a sample clip, printing identity events
	@$(PY) scripts/stack.py up
	rc=0; $(PY) scripts/demo.py $(DEMO_ARGS) || rc=$$?
	$(PY) scripts/stack.py down
	exit $$rc

models: setup  ## fetch the pinned face-api npm tarball (checked), convert its ResNet into models/
	@$(PY) -m training.fetch_faceapi

train: models  ## fine-tune the Siamese tower with contrastive loss (see README for the recipe)
	@$(VENV)/bin/facestream train $(TRAIN_ARGS)

eval: models  ## LFW View 2 benchmark of the default model; writes out/eval/*.json and the ROC plot
	@$(VENV)/bin/facestream eval $(EVAL_ARGS)

calibrate: models  ## LFW View 2 at FAR 1e-3: the matcher's threshold, into the checkpoint and models/calibration.json
	@$(VENV)/bin/facestream eval --calibrate-far 1e-3 --write-threshold --record-calibration $(EVAL_ARGS)

bench-accuracy: models  ## dlib's model beside ours on the same LFW pairs, one JSON file
	@$(PY) -m training.bench_accuracy $(BENCH_ACCURACY_ARGS)

bench: models  ## every stage against its raw component, the pipeline under load (JSON in bench/results/)
	@$(PY) scripts/stack.py up
	rc=0; $(PY) -m bench.run $(BENCH_ARGS) || rc=$$?
	exit $$rc

bench-quick: models  ## the same, small sizes: a smoke run in under 3 minutes
	@$(PY) scripts/stack.py up
	rc=0; $(PY) -m bench.run --quick $(BENCH_ARGS) || rc=$$?
	exit $$rc

clean:  ## remove the run folder (broker data, logs); keeps .venv and the jars
	rm -rf .run/stack
