# Quick start: `make demo` (the POC notebook run headless on the embedded default) and `make test`.
# Both create .venv and install the package into it the first time.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_FLAGS ?= --mode nsr --vlm-name tiny --dataset-name synthetic --seed 2025 --subset-size 16 \
	--num-generations 4 --batch-size 2 --max-steps 10 --max-completion-length 64 --logging-steps 1 \
	--save-steps 5 --output-root runs

.PHONY: setup demo train-demo eval-demo test
setup: $(VENV)/.installed

# torch/torchvision first and pinned: on this project's machines they come from the local disk; in Colab
# use requirements-colab.txt instead, which never touches Colab's own torch.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The POC notebook headless on the embedded default (under 10 minutes on 2 CPU cores): the four modes trained
# from the base on 32 synthetic charts (16 steps of 2 prompts x 4 completions each), then 16 completions for
# each of 16 held-out test charts from the base and each mode: pass@k curves, the table (printed at the end),
# the training plots and summary. --log-output streams every cell's output here: a header per stage, a line
# per training step and per sampled model, the table. The learning rate is far above the paper's 1e-6: the
# embedded model only moves visibly in 16 steps with a large one. One torch thread: the embedded model's ops
# are too small to gain from two, and on a shared CPU a second thread mostly waits (measured 10x slower).
DEMO_POC ?= -p subset_size 32 -p max_steps 16 -p save_steps 16 -p num_generations 4 -p batch_size 2 \
	-p eval_samples 16 -p eval_questions 16 -p learning_rate 0.02 -y "report_to: [tensorboard]"
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

test: setup
	$(PY) -m ruff check chartrl_colab tests benchmarks
	$(PY) -m pytest -q
