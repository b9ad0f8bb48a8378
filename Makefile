# emo_mm: `make demo` and `make test` set up everything they need (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export TORCH_SPEC VENV

.PHONY: help env data demo test test-slow bench clean

help:           ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):[^#]*## /  \1\t/' | expand -t 14

env:            ## create/refresh .venv (torch, compiled mmcv 2.1.0 cached in ~/.cache/emo_mm, mm* stack, emo_mm)
	@bash tools/setup_env.sh

data: env       ## generate the embedded mini COCO / ADE20K / ImageNet sets under data/mini
	@$(PY) tools/misc/make_mini_data.py

demo: env data  ## SSDLite-EMO-1M memorises 8 mini COCO images; mAP and pictures: fitted images vs held-out val
	@$(PY) tools/demo.py

test: env       ## run the test suite (all but the `slow` loops); lists the 15 slowest
	@$(PY) -m pytest tests -q -p no:cacheprovider -m "not slow" --durations=15

test-slow: env  ## the slow loops: 10 SIGKILL + resume trials, all 200 fuzzed checkpoints (~15 minutes)
	@$(PY) -m pytest tests -q -p no:cacheprovider -m slow

bench: env      ## CPU throughput of EMO/EMOv2 (plain and deploy) and mmpretrain peers
	@$(PY) tools/analysis_tools/benchmark.py

clean:          ## remove generated data and work dirs (keeps .venv and the mmcv wheel cache)
	rm -rf data/mini work_dirs
