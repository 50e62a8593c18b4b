# Quick start: `make demo` (a short training run on the embedded default) and `make test`.
# Both create .venv and install the package into it the first time.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_FLAGS ?= --mode nsr --vlm-name tiny --dataset-name synthetic --seed 2025 --subset-size 16 \
	--num-generations 4 --batch-size 2 --max-steps 10 --max-completion-length 64 --logging-steps 1 \
	--save-steps 5 --output-root runs

.PHONY: setup demo test
setup: $(VENV)/.installed

# torch/torchvision first and pinned: on this project's machines they come from the local disk; in Colab
# use requirements-colab.txt instead, which never touches Colab's own torch.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(PY) -m chartrl_colab.train $(DEMO_FLAGS)

test: setup
	$(PY) -m pytest -q
