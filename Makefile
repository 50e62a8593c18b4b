# Quick start: `make demo` (the POC notebook run headless on the embedded default) and `make test`.
# Both create .venv and install the package into it the first time.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_FLAGS ?= --mode nsr --vlm-name tiny --dataset-name synthetic --seed 2025 --subset-size 16 \
	--num-generations 4 --batch-size 2 --max-steps 10 --max-completion-length 64 --logging-steps 1 \
	--save-steps 5 --output-root runs

.PHONY: setup demo train-demo eval-demo test restamp wheels gpu-check colab-check
setup: $(VENV)/.installed

# torch/torchvision first and pinned: on this project's machines they come from the local disk; in Colab
# use requirements-colab.txt instead, which never touches Colab's own torch.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The POC notebook headless on the embedded default (8 min measured on 2 CPU cores; recipes/poc.yaml holds
# the same training settings for the command line): the four modes trained from the warm base on 256 synthetic
# charts (80 steps of 4 prompts x 8 completions each: 2560 completions per mode), then 16 completions for each
# of 64 held-out test charts from the base and each mode: pass@k curves, the table with paired differences to
# the base (printed at the end), the training plots and summary.
# --log-output streams every cell's output here: a header per stage, a line per training step and per sampled
# model, the table. Completions are cut at 48 tokens (the warm base answers in about 30). The learning rate,
# 1e-3, is far above the LoRA default (1e-5), which does not move a model in this budget; it was set before any
# of these runs and not tuned to them. 80 steps: as many as keep the demo within 10 minutes here with a margin
# (64 steps took 7.5 minutes), chosen by time, not by outcome. One torch thread per process and two modes at once (parallel_runs 2, each
# its own process, then two models sampled at once): the embedded model's ops are too small to gain from a second
# thread, which mostly waits, while a second run keeps the other core busy; the numbers are those of one at a time.
DEMO_POC ?= -p subset_size 256 -p max_steps 80 -p save_steps 16 -p num_generations 8 -p batch_size 4 \
	-p max_completion_length 48 -p eval_samples 16 -p eval_questions 64 -p learning_rate 1e-3 \
	-p disable_gradient_checkpointing True -y "report_to: [tensorboard]" -p parallel_runs 2
demo: setup
	mkdir -p runs
	OMP_NUM_THREADS=1 $(PY) -m papermill --log-output notebooks/01_poc.ipynb runs/01_poc.ipynb -p output_root runs \
		$(DEMO_POC) -k python3

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

# pytest on two workers (pytest-xdist), a test file each at a time: each test computes on one torch thread
# (tests/conftest.py), so a second worker fills the second core; a file's tests share their session fixtures (the
# warm base is built once). TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m ruff check chartrl_colab tests benchmarks conftest.py
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# A fork: point pyproject's [project.urls] and every notebook's Colab badge and clone cell at it, e.g.
# `make restamp REPO=you/chartrl-colab`. Needs only nbformat, so it uses .venv when there is one, else python3.
restamp:
	@test -n "$(REPO)" || (echo "usage: make restamp REPO=OWNER/REPO" && exit 2)
	$(if $(wildcard $(PY)),$(PY),python3) -m chartrl_colab.restamp $(REPO)

# GPU figures: on a GPU machine with no internet and only torch, transformers, peft and accelerate,
# `make gpu-check` installs wheels/ (beside its own packages) and measures Qwen2.5-VL-3B (random weights) in
# bf16 LoRA, 4-bit QLoRA and fp16 LoRA. `make wheels` fills wheels/ here first, from the package index, with
# what such a machine lacks or has in another version: the pinned trl, transformers, peft, datasets (and its
# dill, multiprocess), bitsandbytes and filelock (the run lock's), for CPython 3.12 on x86-64 Linux; about
# 57 MiB, under the 64 MiB a carried tree may hold. This package itself runs from the tree. WHEEL_PY /
# WHEEL_PLATFORMS for another machine.
WHEELS ?= wheels
WHEEL_PY ?= 3.12
WHEEL_PLATFORMS ?= manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any
WHEEL_PINS ?= trl==1.16.0 transformers==5.24.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
	bitsandbytes==0.50.2 filelock==4.3.1
wheels:
	mkdir -p $(WHEELS)
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version $(WHEEL_PY) --implementation cp \
		$(addprefix --platform ,$(WHEEL_PLATFORMS)) -d $(WHEELS) $(WHEEL_PINS)
	du -sh $(WHEELS)

gpu-check:
	bash benchmarks/gpu_check.sh

# What the notebooks' install changes in Colab, without Colab: requirements-colab.txt resolved as Colab's pip
# would (its version, Python 3.13, torch held at Colab's build) against a venv of metadata stubs of Colab's
# published package list; prints what changes and which declared requirements it would break. This machine's
# pip configuration is ignored, so pip resolves against the package index it reaches by default (as Colab's
# does). A new list: copy pip-freeze.gpu.txt from googlecolab/backend-info and point COLAB_FREEZE at it.
COLAB_FREEZE ?= ../shared/colab/pip-freeze.gpu.txt
colab-check:
	$(if $(wildcard $(PY)),$(PY),python3) benchmarks/colab_check.py --freeze $(COLAB_FREEZE) \
		$(if $(COLAB_PYTHON),--python $(COLAB_PYTHON))
