"""The embedded warm base ``tiny-warm``: the tiny Qwen2.5-VL after a short supervised warm-up.

The random ``tiny`` model never answers correctly, so an RL objective has nothing to tell apart. ``tiny-warm`` is
the same model (same seed, tokenizer and processor) taught the answer format and part of the task by
teacher-forced cross-entropy on synthetic *train* charts, with the prompts training uses. Each chart is asked
every question kind of ``synthetic.QUESTION_KINDS``; the target is a short completion in the rewards' format::

    <think><type>bar</type><table>{}</table> Compare Kiwis and Plums.</think><answer>Kiwis</answer>

The table is left empty: a model this small cannot read the values off a 112x112 image, and a short target keeps
the warm-up and every later sampling cheap. Images are normalised with white as zero: with CLIP's mean and std the
white background dominates every patch and the tiny vision tower learned to read nothing. What the base reads
(:func:`reading`) and how the recipe was chosen: ``benchmarks/README.md``.

The build is deterministic per seed (one thread, seeded data order and weights; ``tests/test_warm.py`` compares
the bits) and cached like the tiny model, as ``tiny-warm-<version>-<seed>``.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from chartrl_colab.data import synthetic
from chartrl_colab.data.loading import make_prompt
from chartrl_colab.models import tiny
from chartrl_colab.rewards.presets import AUTO, resolve_preset

# The prompt training asks on the synthetic charts: the warm base learns to answer exactly that one.
PROMPT_PRESET = resolve_preset(AUTO, "synthetic")

if TYPE_CHECKING:  # heavy imports stay lazy: importing this module must be cheap
    from transformers import PreTrainedModel, ProcessorMixin

__all__ = ["WARM_VERSION", "build_warm", "build_warm_fresh", "reading", "warm_cache_path", "warm_target"]

log = logging.getLogger(__name__)

# Bump the suffix when the warm-up (data, target, recipe) changes; a new tiny model or tokenizer bumps the prefix.
WARM_VERSION = f"{tiny.TINY_VERSION}.3"

# The recipe, chosen by pass@1 / pass@16 on test charts (benchmarks/README.md): with fewer steps the format is not
# learned; with many more the model is sure of its guesses, and a group of samples stops holding right and wrong.
_CHARTS = 128  # train charts; each is asked every question kind
_STEPS = 1000
_BATCH = 8  # measured better than 16 for the same cost (more updates)
_LR = 3e-3  # at 1e-2 what the model reads varied from one random seed to another
_WARMUP_STEPS = 15
_IMAGE_MEAN = (1.0, 1.0, 1.0)  # white -> 0 (pixels rescaled to 0..1 first)
_IMAGE_STD = (0.5, 0.5, 0.5)  # black -> -2

# One short, kind-specific line of reasoning: it names what the answer depends on, never a value.
_HINTS = {
    "value": "Read {0}.",
    "max": "Find the highest.",
    "min": "Find the lowest.",
    "diff": "Subtract {0} and {1}.",
    "sum": "Add all.",
    "count": "Count.",
    "compare": "Compare {0} and {1}.",
    "type": "Look at the shape.",
}


def warm_cache_path(cache_dir, seed: int) -> Path:
    """The cache folder of the warm base of ``seed``: ``<cache root>/tiny-warm-<version>-<seed>``."""
    return tiny.cache_root(cache_dir) / f"tiny-warm-{WARM_VERSION}-{int(seed)}"


def build_warm(cache_dir: str | None = None, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The warm base of ``seed`` and its processor, loaded from the cache, or built (a minute or two) and saved."""
    path = warm_cache_path(cache_dir, seed)

    def build_fresh():
        log.info(f"Building the embedded warm base tiny-warm (seed {seed}): a one-off supervised warm-up of the "
                 f"tiny model on synthetic train charts, cached in {path}")
        return build_warm_fresh(seed)

    return tiny.load_or_build(path, build_fresh, "warm-model")


def warm_target(spec: dict) -> str:
    """The completion the warm-up teaches for one synthetic question (a spec of ``synthetic``)."""
    return (f"<think><type>{spec['chart_type']}</type><table>{{}}</table> "
            f"{_HINTS[spec['kind']].format(*spec['args'])}</think><answer>{spec['answer']}</answer>")


def build_warm_fresh(seed: int, *, steps: int = _STEPS, n_charts: int = _CHARTS, progress: bool = True):
    """The warm base and processor built in memory (the disk cache untouched)."""
    from tqdm.auto import tqdm

    threads = torch.get_num_threads()
    # One thread: float sums run in one order, so the bits do not depend on the core count (a 64-wide model gains
    # little from more).
    torch.set_num_threads(1)
    try:
        model, processor = tiny.build_tiny_fresh(seed)
        # White is the zero input (module docstring); saved with the processor, so sampling sees images the same way.
        processor.image_processor.image_mean = list(_IMAGE_MEAN)
        processor.image_processor.image_std = list(_IMAGE_STD)
        examples = _examples(processor, seed, n_charts)
        shared = _shared_length(examples, model.config.image_token_id)
        rng = random.Random(f"chartrl-warm-order:{seed}")
        with tiny.seeded(seed):
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=_LR, weight_decay=0.0)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: min(1.0, (s + 1) / _WARMUP_STEPS) * max(0.0, 1.0 - s / steps))
            order: list[int] = []
            bar = tqdm(range(steps), desc="warming up tiny-warm", unit="step", disable=not progress)
            for _ in bar:
                if len(order) < _BATCH:
                    perm = list(range(len(examples)))
                    rng.shuffle(perm)
                    order += perm
                batch, order = [examples[i] for i in order[:_BATCH]], order[_BATCH:]
                loss = _completion_loss(model, _collate(batch, processor.tokenizer.pad_token_id), shared)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
    finally:
        torch.set_num_threads(threads)
    return model, processor


def _examples(processor, seed: int, n_charts: int = _CHARTS) -> list[dict]:
    """Tokenised warm-up examples: every question kind about each of ``n_charts`` train charts."""
    from trl.data_utils import prepare_multimodal_messages

    # A chart stream of its own, so RL on synthetic/train with the same random seed is not asked the warm-up's
    # very questions.
    charts = synthetic.synthetic_examples(n_charts, f"tiny-warm-{seed}", "train")
    rng = random.Random(f"chartrl-warm-questions:{seed}")
    tokenizer = processor.tokenizer
    examples = []
    for chart in charts:
        image = synthetic.render_chart(chart)
        for kind in synthetic.QUESTION_KINDS:
            spec = synthetic.draw_question(chart, kind, rng)
            # The prompt exactly as the sampler and GRPOTrainer build it.
            messages = prepare_multimodal_messages(make_prompt(spec["question"], PROMPT_PRESET), images=[image])
            text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            prompt = processor(text=[text], images=[image], return_tensors="pt")
            completion = tokenizer(warm_target(spec) + tokenizer.eos_token, add_special_tokens=False).input_ids
            ids = prompt["input_ids"][0].tolist()
            examples.append({
                "question": spec["question"],
                "input_ids": ids + completion,
                "n_prompt": len(ids),
                "mm_token_type_ids": prompt["mm_token_type_ids"][0].tolist() + [0] * len(completion),
                "pixel_values": prompt["pixel_values"],
                "image_grid_thw": prompt["image_grid_thw"],
            })
    return examples


def _shared_length(examples: list[dict], image_token_id: int) -> int:
    """How many leading tokens all examples share, stopping at the first image token (its embedding is the
    chart's, not the token's)."""
    prefix = os.path.commonprefix([e["input_ids"] for e in examples])  # element-wise: works on lists of ids too
    return prefix.index(image_token_id) if image_token_id in prefix else len(prefix)


def _collate(batch: list[dict], pad_id: int) -> dict:
    """Right-padded tensors of a batch; ``labels`` hold the completion tokens, -100 elsewhere."""
    from trl.trainer.utils import pad

    return {
        "input_ids": pad([torch.tensor(e["input_ids"]) for e in batch], padding_value=pad_id),
        "attention_mask": pad([torch.ones(len(e["input_ids"]), dtype=torch.long) for e in batch]),
        "mm_token_type_ids": pad([torch.tensor(e["mm_token_type_ids"]) for e in batch]),
        "pixel_values": torch.cat([e["pixel_values"] for e in batch]),
        "image_grid_thw": torch.cat([e["image_grid_thw"] for e in batch]),
        "labels": pad([torch.tensor([-100] * e["n_prompt"] + e["input_ids"][e["n_prompt"]:]) for e in batch],
                      padding_value=-100),
    }


def _completion_loss(model, inputs: dict, shared: int = 0) -> torch.Tensor:
    """Mean cross-entropy of the completion tokens given everything before them.

    ``shared``: the number of leading tokens every row has in common (the system prompt). They are run once and
    their keys and values repeated for the other rows: the same loss and gradients, at a fraction of the cost.
    """
    from transformers import DynamicCache

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    base = model.model
    if shared:
        ids, mask, mm = inputs["input_ids"], inputs["attention_mask"], inputs["mm_token_type_ids"]
        position_ids, _ = base.get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=inputs["image_grid_thw"],
                                              attention_mask=mask)
        cache = DynamicCache(config=model.config)
        prefix = base.get_input_embeddings()(ids[:1, :shared])
        base.language_model(inputs_embeds=prefix, attention_mask=mask[:1, :shared],
                            position_ids=position_ids[:, :1, :shared], cache=cache, use_cache=True)
        cache.batch_repeat_interleave(ids.shape[0])
        hidden = base(input_ids=ids[:, shared:], attention_mask=mask, position_ids=position_ids[:, :, shared:],
                      cache=cache, use_cache=True, mm_token_type_ids=mm[:, shared:],
                      pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"]).last_hidden_state
        labels = labels[:, shared:]
    else:
        hidden = base(**inputs).last_hidden_state
    keep = labels[:, 1:] != -100
    logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][keep])


def reading(model, processor, questions: int = 64, samples: int = 16, data_seed: int = 2025, batch: int = 8,
            max_new_tokens: int = 48) -> dict:
    """How much a model reads the chart: correct samples per held-out synthetic test question, with the chart and
    with a blank (white) image, the same questions and sampling seeds (temperature 1, as generate samples).

    Returns ``{"kind": [question kind], "real": [correct of samples], "blank": [...]}``, one entry per question,
    scored by relaxed correctness of the ``<answer>`` as evaluation does.
    """
    from types import SimpleNamespace

    import PIL.Image
    from trl.data_utils import prepare_multimodal_messages

    from chartrl_colab.evaluation.metrics import relaxed_accuracy
    from chartrl_colab.models.samplers import TransformersSampler
    from chartrl_colab.rewards.package import parse_answer

    specs = synthetic.synthetic_examples(questions, data_seed, "test")
    sampler = TransformersSampler(model, processor, SimpleNamespace(max_new_tokens=max_new_tokens, temperature=1.0))
    blank = PIL.Image.new("RGB", (synthetic.IMAGE_SIZE, synthetic.IMAGE_SIZE), "white")
    out: dict[str, list] = {"kind": [s["kind"] for s in specs], "real": [], "blank": []}
    for start in range(0, len(specs), batch):
        chunk = specs[start:start + batch]
        for which in ("real", "blank"):
            prompts = [prepare_multimodal_messages(make_prompt(s["question"], PROMPT_PRESET),
                                                   images=[synthetic.render_chart(s) if which == "real" else blank])
                       for s in chunk]
            for s, ids in zip(chunk, sampler.sample(prompts, samples, seed=start)):
                texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
                out[which].append(sum(relaxed_accuracy(parse_answer(t), s["answer"]) for t in texts))
    return out
