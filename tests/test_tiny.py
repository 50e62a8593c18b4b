"""Tests for chartrl_colab.models.tiny: the embedded tiny model, its tokenizer, chat template and disk cache."""

from __future__ import annotations

import pytest
import torch

from chartrl_colab.models import loading as M
from chartrl_colab.models import tiny as T


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def tiny(cache_root):
    return T.build_tiny(cache_dir=str(cache_root), seed=0)


def _state_dicts_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_builds_offline_with_small_parameter_count(tiny):
    model, processor = tiny
    trainable, total = M.count_parameters(model)
    assert 100_000 <= total <= 2_000_000
    assert trainable == total
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    text = model.config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers) == (64, 2)
    assert text.rope_parameters["mrope_section"] == [2, 3, 3]


def test_tiny_token_ids_match_tokenizer(tiny):
    model, processor = tiny
    tok, cfg = processor.tokenizer, model.config
    assert len(tok) <= cfg.get_text_config().vocab_size
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert cfg.get_text_config().eos_token_id == tok.eos_token_id
    assert cfg.get_text_config().pad_token_id == tok.pad_token_id
    gen = model.generation_config
    assert gen.do_sample is True
    assert set(gen.eos_token_id) == {tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    assert gen.pad_token_id == tok.pad_token_id


def test_tiny_is_deterministic_per_seed(tmp_path, tiny):
    model0, _ = tiny
    again, _ = T.build_tiny(cache_dir=str(tmp_path / "a"), seed=0)
    other, _ = T.build_tiny(cache_dir=str(tmp_path / "b"), seed=1)
    assert _state_dicts_equal(model0, again)
    assert not _state_dicts_equal(model0, other)


def test_tiny_cache_round_trip(cache_root, tiny):
    model, processor = tiny
    path = cache_root / f"tiny-{T.TINY_VERSION}-0"
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert not [p for p in cache_root.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    loaded, loaded_proc = M.load_model_and_processor("tiny", cache_dir=str(cache_root))
    assert _state_dicts_equal(model, loaded)
    text = '<think>bar 2019 is 42.5</think><answer>{"value": 42.5}</answer>'
    assert loaded_proc.tokenizer(text).input_ids == processor.tokenizer(text).input_ids
    assert loaded_proc.chat_template == processor.chat_template
    assert loaded_proc.image_processor.size == processor.image_processor.size
    assert loaded.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_tiny_random_init_skips_the_cache(tmp_path, tiny):
    model, _ = M.load_model_and_processor("tiny", init="random", cache_dir=str(tmp_path), dtype="bf16")
    assert not any(tmp_path.iterdir())
    assert model.dtype == torch.bfloat16
    reference = tiny[0].state_dict()
    assert all(torch.equal(v, reference[k].to(torch.bfloat16)) for k, v in model.state_dict().items())


def test_tokenizer_round_trips_tags_and_json(tiny):
    tok = tiny[1].tokenizer
    text = (
        '<think>The tallest bar is 2019 (42.5%).</think><answer>{"answer": "2019", "values": [1, 2.5, -3]}</answer>'
        "<type>bar</type><table>Year | Sales\n2019 | 120</table> ünïcödé ✓"
    )
    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    for special in T.QWEN_SPECIAL_TOKENS:
        assert len(tok(special).input_ids) == 1, special
        assert tok.decode(tok(special).input_ids) == special
    assert tok.decode(tok("<|im_start|>user\nhi<|im_end|>").input_ids, skip_special_tokens=True) == "user\nhi"


def test_chat_template_renders_qwen_format(tiny):
    processor = tiny[1]
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Max?"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Max?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # string content works on the tokenizer alone too (text-only prompts)
    plain = processor.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert plain.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi")


def test_processor_and_generate_with_image(tiny, image_batch):
    model, processor = tiny
    batch = image_batch(processor)
    n_image_tokens = int((batch["input_ids"] == model.config.image_token_id).sum())
    grid = batch["image_grid_thw"]
    assert grid.shape == (1, 3)
    assert n_image_tokens == int(grid.prod()) // 4 and 1 <= n_image_tokens <= 16  # 2x2 merge, small max_pixels
    assert batch["pixel_values"].shape[0] == int(grid.prod())
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(out.logits).all()
    generated = model.generate(**batch, max_new_tokens=5, do_sample=True)
    assert generated.shape[1] <= batch["input_ids"].shape[1] + 5
    assert isinstance(processor.batch_decode(generated[:, batch["input_ids"].shape[1] :])[0], str)
