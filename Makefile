# emo_mm: `make demo` and `make test` set up everything they need (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export TORCH_SPEC VENV

.PHONY: env data demo test bench clean

env:            ## create/refresh .venv (torch, compiled mmcv 2.1.0 cached in ~/.cache/emo_mm, mm* stack, emo_mm)
	@bash tools/setup_env.sh

data: env       ## generate the embedded mini COCO / ADE20K / ImageNet sets under data/mini
	@$(PY) tools/make_mini_data.py

demo: env data  ## train SSDLite-EMO-1M on mini COCO for a few minutes, evaluate it, draw predictions
	@$(PY) tools/demo.py

test: env       ## run the test suite
	@$(PY) -m pytest tests -q -p no:cacheprovider

bench: env      ## CPU throughput of EMO/EMOv2 (plain and deploy) and mmpretrain peers
	@$(PY) tools/benchmark.py

clean:          ## remove generated data and work dirs (keeps .venv and the mmcv wheel cache)
	rm -rf data/mini work_dirs
