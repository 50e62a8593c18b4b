"""The warm base ``tiny-warm`` (chartrl_colab.models.warm): what it is taught, that it builds deterministically and
is cached, that the package loads and samples it like any model, and that sampled at temperature 1 on held-out
test charts it is sometimes right and sometimes wrong."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from chartrl_colab import generate as gen
from chartrl_colab.data import synthetic as S
from chartrl_colab.data.loading import make_prompt
from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation.passk import pass_at_k
from chartrl_colab.evaluation.samples import read_rows
from chartrl_colab.models import loading as M
from chartrl_colab.models import samplers
from chartrl_colab.models import tiny as T
from chartrl_colab.models import warm as W
from chartrl_colab.models.source import resolve_source
from chartrl_colab.rewards.package import accuracy_reward, format_reward

QUESTIONS = 48  # held-out test questions of the window
N = 16  # samples per question


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def default_cache(monkeypatch, warm_cache):
    """Point the default cache root (used by generate and train, which take no cache folder) at the session's."""
    monkeypatch.setattr(T, "DEFAULT_CACHE_ROOT", warm_cache)
    return warm_cache


def test_the_targets_are_correct_completions_in_the_answer_format():
    specs = [S.draw_question(chart, kind, random.Random(i))
             for i, chart in enumerate(S.synthetic_examples(6, 0, "train")) for kind in S.QUESTION_KINDS]
    targets = [W.warm_target(s) for s in specs]
    assert format_reward(targets) == [2.0] * len(specs)
    assert accuracy_reward(targets, answer=[s["answer"] for s in specs]) == [1.0] * len(specs)
    assert len(T.build_tokenizer()(max(targets, key=len)).input_ids) <= 48  # short: cheap to learn and to sample


def test_the_warm_up_prompts_are_the_sampler_prompts():
    """The warm-up is taught on exactly the token ids the sampler (and GRPOTrainer) feed the model."""
    model, processor = T.build_tiny_fresh(0)
    examples = W._examples(processor, 0, n_charts=1)
    assert len(examples) == len(S.QUESTION_KINDS)
    image = S.render_chart(S.synthetic_examples(1, "tiny-warm-0", "train")[0])  # the warm-up's own chart stream
    sampler = samplers.TransformersSampler(model, processor, gen.GenerateConfig(output="unused.jsonl"))
    for example in examples:
        (prompt_ids,), _ = sampler.tokenize(gen.build_prompts([{"prompt": make_prompt(example["question"], W.PROMPT_PRESET),
                                                                 "image": image}]))
        assert example["input_ids"][:example["n_prompt"]] == prompt_ids
        completion = processor.tokenizer.decode(example["input_ids"][example["n_prompt"]:])
        assert completion.startswith("<think><type>") and completion.endswith("</answer><|im_end|>")
    shared = W._shared_length(examples, model.config.image_token_id)
    assert 0 < shared < min(e["n_prompt"] for e in examples)
    assert model.config.image_token_id not in examples[0]["input_ids"][:shared]


def test_shared_prefix_gives_the_full_batch_loss_and_gradients():
    model, processor = T.build_tiny_fresh(0)
    examples = W._examples(processor, 0, n_charts=1)
    batch = W._collate(examples[:4], processor.tokenizer.pad_token_id)
    shared = W._shared_length(examples, model.config.image_token_id)
    model.train()
    grads, losses = [], []
    for n in (0, shared):
        model.zero_grad()
        loss = W._completion_loss(model, batch, n)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_the_build_is_deterministic_per_seed_whatever_the_thread_count(monkeypatch):
    # The build's own code on 4 charts and 5 steps: float sums done in another order differ from the first step.
    examples = W._examples
    monkeypatch.setattr(W, "_examples", lambda processor, seed, n_charts: examples(processor, seed, n_charts=4))
    before = torch.get_num_threads()
    a, _ = W.build_warm_fresh(0, steps=5, progress=False)
    torch.set_num_threads(2)
    try:
        b, _ = W.build_warm_fresh(0, steps=5, progress=False)
        assert torch.get_num_threads() == 2  # the build's own thread setting is undone
    finally:
        torch.set_num_threads(before)
    c, _ = W.build_warm_fresh(1, steps=5, progress=False)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
    tiny, _ = T.build_tiny_fresh(0)
    assert not _same_weights(a, tiny)  # the warm-up moved the weights


def test_cache_round_trip_and_loading_by_name(warm_cache, capsys):
    path = W.warm_cache_path(warm_cache, 0)
    assert path.name == f"tiny-warm-{W.WARM_VERSION}-0" and T.is_complete(path)
    assert W.WARM_VERSION.startswith(T.TINY_VERSION)  # a new tiny model is a new warm base
    assert not [p for p in Path(warm_cache).iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    model, processor = M.load_model_and_processor("tiny-warm", cache_dir=warm_cache)
    again, _ = W.build_warm(warm_cache, 0)
    assert _same_weights(model, again)
    assert "Building" not in capsys.readouterr().out  # loaded, not rebuilt
    tiny, tiny_processor = M.load_model_and_processor("tiny", init="random", seed=0)
    assert model.config.image_token_id == tiny.config.image_token_id
    text = "<think><type>bar</type><table>{}</table> ok</think><answer>3</answer>"
    assert processor.tokenizer(text).input_ids == tiny_processor.tokenizer(text).input_ids
    assert model.generation_config.eos_token_id == tiny.generation_config.eos_token_id
    # White, the charts' background, is the zero input, in the processor saved with the base.
    white = processor.image_processor(images=[PIL.Image.new("RGB", (112, 112), "white")], return_tensors="pt")
    assert float(white["pixel_values"].abs().max()) == 0.0
    bf16, _ = M.load_model_and_processor("tiny-warm", cache_dir=warm_cache, dtype="bf16")
    assert bf16.dtype == torch.bfloat16


def test_tiny_warm_has_no_random_init():
    with pytest.raises(ConfigError, match="tiny-warm.*random"):
        M.load_model_and_processor("tiny-warm", init="random")


def test_the_warm_base_reads_the_chart_and_is_in_the_window(warm_cache):
    """On held-out test charts at temperature 1 the warm base is sometimes right (pass@1 in [0.15, 0.5], pass@16
    well above it), and more often with the chart than with a blank image (pass@1 at least 0.10 higher, same
    questions, same sampling seeds): its accuracy depends on the image.

    This is the base of seed 0 (the session's cache); it measured pass@1 0.258, pass@16 0.500, blank 0.065 on
    this sample. The demo's base (seed 2025) measured 0.274 / 0.625 / 0.053 on 64 questions
    (benchmarks/README.md): the margin of 0.25 the demo needs holds there, 0.2 is asserted here."""
    model, processor = W.build_warm(warm_cache, 0)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide model: thread hand-offs cost more than they save
    try:
        got = W.reading(model, processor, questions=QUESTIONS, samples=N, data_seed=2025)
    finally:
        torch.set_num_threads(torch_threads)
    real, blank = np.array(got["real"]), np.array(got["blank"])
    pass1, pass16 = pass_at_k(N, real, 1).mean(), pass_at_k(N, real, N).mean()
    print(f"tiny-warm on {QUESTIONS} test questions x {N}: pass@1 {pass1:.3f}, pass@{N} {pass16:.3f}, "
          f"blank image pass@1 {pass_at_k(N, blank, 1).mean():.3f}")
    assert 0.15 <= pass1 <= 0.5
    assert pass16 >= pass1 + 0.2
    assert pass1 >= pass_at_k(N, blank, 1).mean() + 0.10


def test_generate_samples_tiny_warm_in_the_answer_format(default_cache, tmp_path):
    """``python -m chartrl_colab.generate --vlm-name tiny-warm`` samples the cached base: most samples score the
    full format reward."""
    out = tmp_path / "warm.jsonl"
    assert gen.main(["--vlm-name", "tiny-warm", "--seed", "0", "--split", "test", "--subset-size", "8",
                     "--num-samples", "8", "--max-new-tokens", "64", "--batch-size", "64",
                     "--rewards", "format", "accuracy", "--output", str(out)]) == 0
    rows = read_rows(out)
    assert len(rows) == 8 and rows[0]["generation"]["vlm_name"] == "tiny-warm"
    assert np.mean([r["rewards"]["format"].count(2.0) / 8 for r in rows]) > 0.5  # it has learned the format


@pytest.mark.slow
def test_a_run_trained_from_tiny_warm_samples_its_own_weights(default_cache, tmp_path):
    from chartrl_colab.config import RunConfig
    from chartrl_colab.train import train

    cfg = RunConfig(mode="w-reinforce", vlm_name="tiny-warm", subset_size=2, num_generations=2, batch_size=2,
                    max_steps=2, max_completion_length=8, logging_steps=1, save_steps=2, learning_rate=1e-2,
                    output_root=str(tmp_path / "runs"), seed=0, report_to=("none",))
    train(cfg)
    run_dir = tmp_path / "runs" / cfg.run_name

    def source():
        return resolve_source(gen.GenerateConfig(checkpoint=str(run_dir), output=str(tmp_path / "x.jsonl")))

    got = source()
    assert (got.vlm_name, got.init, got.seed) == ("tiny-warm", "pretrained", 0)
    assert got.cache_dir == str(W.warm_cache_path(default_cache, 0).parent)
    (run_dir / "run.json").unlink()  # without run.json the adapter's base path names the warm base
    fallback = source()
    assert (fallback.vlm_name, fallback.seed, fallback.cache_dir) == ("tiny-warm", 0, got.cache_dir)
    adapter = json.loads((got.checkpoint / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(W.warm_cache_path(default_cache, 0))

    trained, _ = samplers.load_for_generation(got)
    base, _ = M.load_model_and_processor("tiny-warm", seed=0)
    weights = dict(base.named_parameters())
    assert any(not torch.equal(p, weights[name]) for name, p in trained.named_parameters())
    path = gen.generate_samples(gen.GenerateConfig(checkpoint=str(run_dir), subset_size=2, num_samples=2,
                                                   max_new_tokens=8, output=str(tmp_path / "trained.jsonl")))
    assert [r["generation"]["vlm_name"] for r in read_rows(path)] == ["tiny-warm"] * 2
