# Quick start: `make demo` (the POC notebook run headless on the embedded default) and `make test`.
# Both create .venv and install the package into it the first time.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_FLAGS ?= --mode nsr --vlm-name tiny --dataset-name synthetic --seed 2025 --subset-size 16 \
	--num-generations 4 --batch-size 2 --max-steps 10 --max-completion-length 64 --logging-steps 1 \
	--save-steps 5 --output-root runs

.PHONY: setup demo train-demo eval-demo test restamp
setup: $(VENV)/.installed

# torch/torchvision first and pinned: on this project's machines they come from the local disk; in Colab
# use requirements-colab.txt instead, which never touches Colab's own torch.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The four modes on 100 synthetic charts, then their comparison plots and summary (a few minutes on a CPU).
# The tiny random model only moves visibly in 50 steps with a learning rate far above the paper's 1e-6.
demo: setup
	mkdir -p runs
	$(PY) -m papermill notebooks/01_poc.ipynb runs/01_poc.ipynb -p output_root runs -p learning_rate 0.02 -k python3

# One short NSR run from the command line.
train-demo: setup
	$(PY) -m chartrl_colab.train $(DEMO_FLAGS)

# Samples from the base model and the train-demo run, then pass@k curves.
eval-demo: train-demo
	$(PY) -m chartrl_colab.generate --vlm-name tiny --dataset-name synthetic --seed 2025 --subset-size 8 \
		--num-samples 8 --max-new-tokens 64 --output runs/base.jsonl
	$(PY) -m chartrl_colab.generate --checkpoint runs/nsr-tiny-synthetic-16-2025 --seed 2025 --subset-size 8 \
		--num-samples 8 --max-new-tokens 64 --output runs/nsr.jsonl
	$(PY) -m chartrl_colab.evaluate --samples runs/base.jsonl runs/nsr.jsonl --labels Base NSR --output-dir runs/eval

test: setup
	$(PY) -m ruff check chartrl_colab tests benchmarks
	$(PY) -m pytest -q

# A fork: point pyproject's [project.urls] and every notebook's Colab badge and clone cell at it, e.g.
# `make restamp REPO=you/chartrl-colab`. Needs only nbformat, so it uses .venv when there is one, else python3.
restamp:
	@test -n "$(REPO)" || (echo "usage: make restamp REPO=OWNER/REPO" && exit 2)
	$(if $(wildcard $(PY)),$(PY),python3) -m chartrl_colab.restamp $(REPO)
