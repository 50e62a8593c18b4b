"""Tests for chartrl_colab.models: the embedded tiny model, LoRA, the shipped real configs, error messages."""

from __future__ import annotations

import re
import socket

import pytest
import torch
from PIL import Image, ImageDraw

from chartrl_colab import models as M


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def tiny(cache_root):
    return M.build_tiny(cache_dir=str(cache_root), seed=0)


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


def _state_dicts_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------------------------
# tiny model
# --------------------------------------------------------------------------------------------------------------


def test_models_table():
    assert M.MODELS == {
        "tiny": None,
        "qwen2-5-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
        "qwen2-5-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
        "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
    }


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
    again, _ = M.build_tiny(cache_dir=str(tmp_path / "a"), seed=0)
    other, _ = M.build_tiny(cache_dir=str(tmp_path / "b"), seed=1)
    assert _state_dicts_equal(model0, again)
    assert not _state_dicts_equal(model0, other)


def test_tiny_cache_round_trip(cache_root, tiny):
    model, processor = tiny
    path = cache_root / f"tiny-{M.TINY_VERSION}-0"
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
    for special in M.QWEN_SPECIAL_TOKENS:
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


def test_processor_and_generate_with_image(tiny):
    model, processor = tiny
    batch = _image_batch(processor)
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


# --------------------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------------------


def test_add_lora_targets_language_model_only(cache_root, capsys):
    model, processor = M.load_model_and_processor("tiny", cache_dir=str(cache_root))
    peft_model = M.add_lora(model, r=4, alpha=8)
    assert capsys.readouterr().out == ""
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)
    targeted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert targeted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    n_trainable, n_total = M.count_parameters(peft_model)
    assert n_trainable == sum(p.numel() for p in trainable.values()) and n_trainable < n_total

    peft_model.train()
    batch = _image_batch(processor)
    out = peft_model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    grads = {n: p.grad for n, p in trainable.items()}
    assert all(g is not None for g in grads.values())
    # lora_B starts at zero, so only lora_B receives a nonzero gradient on the first step
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


def test_lora_regex_excludes_vision_mlp():
    pattern = re.compile(M.LORA_TARGET_MODULES)
    assert pattern.fullmatch("model.language_model.layers.3.mlp.up_proj")
    assert pattern.fullmatch("model.language_model.layers.0.self_attn.q_proj")
    assert not pattern.fullmatch("model.visual.blocks.0.mlp.up_proj")
    assert not pattern.fullmatch("model.visual.blocks.0.attn.qkv")
    assert not pattern.fullmatch("model.language_model.layers.0.self_attn.q_proj.lora_A")


# --------------------------------------------------------------------------------------------------------------
# real architectures (never materialised at full size here)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, cls, hidden, layers, vocab, total",
    [
        ("qwen2-5-3b", "Qwen2_5_VLConfig", 2048, 36, 151936, 3_754_622_976),
        ("qwen2-5-7b", "Qwen2_5_VLConfig", 3584, 28, 152064, 8_292_166_656),
        ("qwen2-vl-2b", "Qwen2VLConfig", 1536, 28, 151936, 2_208_985_600),
    ],
)
def test_shipped_config_has_real_sizes(name, cls, hidden, layers, vocab, total):
    from transformers import AutoModelForImageTextToText

    config = M.load_shipped_config(name)
    text = config.get_text_config()
    assert type(config).__name__ == cls
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (hidden, layers, vocab)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert config.vision_config.depth == 32
    with torch.device("meta"):  # counts parameters without allocating them
        model = AutoModelForImageTextToText.from_config(config)
    assert M.count_parameters(model)[1] == total


def _shrunk_config(name):
    """The shipped config with real vocab/token ids/vision geometry but toy widths and depths (test-only)."""
    config = M.load_shipped_config(name)
    text, vision = config.get_text_config(), config.vision_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = 64, 128, 1
    text.num_attention_heads, text.num_key_value_heads = 4, 2
    text.rope_parameters["mrope_section"] = [2, 3, 3]  # sums to head_dim // 2 = 8
    text.layer_types = text.layer_types[:1]
    vision.depth, vision.num_heads = 2, 4
    if config.model_type == "qwen2_vl":
        vision.embed_dim, vision.hidden_size = 64, 64  # Qwen2-VL: embed_dim inside, hidden_size = text width
    else:
        vision.hidden_size, vision.intermediate_size, vision.out_hidden_size = 64, 128, 64
        vision.fullatt_block_indexes = [1]
    return config


@pytest.mark.parametrize("name", ["qwen2-5-3b", "qwen2-5-7b", "qwen2-vl-2b"])
def test_random_init_path_with_shrunk_real_config(name):
    """The init="random" path (remapped token ids, real pixel bounds) on a real config with toy layer sizes."""
    config = _shrunk_config(name)
    vocab = config.get_text_config().vocab_size
    model, processor = M._build_random_arch(config, name=name, dtype=torch.float32, seed=0)

    assert model.config.get_text_config().vocab_size == vocab  # real embedding size kept
    tok = processor.tokenizer
    assert len(tok) <= vocab
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.get_text_config().eos_token_id == tok.eos_token_id
    assert processor.image_processor.size["longest_edge"] == 12845056  # the hub's pixel bounds
    batch = _image_batch(processor)
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 64  # 224x224 -> 16x16 patches / 4
    generated = model.generate(**batch, max_new_tokens=3, do_sample=True)
    assert generated.shape[1] <= batch["input_ids"].shape[1] + 3


@pytest.mark.parametrize("name", ["qwen2-5-3b", "qwen2-5-7b", "qwen2-vl-2b"])
def test_streamed_random_checkpoint_loads_completely(name, tmp_path):
    """The checkpoint written for init="random" + 4-bit loads without missing or unexpected weights."""
    from transformers import AutoModelForImageTextToText

    config = _shrunk_config(name)
    M._write_random_checkpoint(config, tmp_path, seed=0, shard_bytes=1 << 20)
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1  # sharded
    model, info = AutoModelForImageTextToText.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    weights = dict(model.named_parameters())
    assert torch.all(weights["model.language_model.norm.weight"] == 1)
    assert 0.01 < weights["model.language_model.embed_tokens.weight"].float().std() < 0.03
    assert model.config.tie_word_embeddings == config.tie_word_embeddings


# --------------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------------


def _one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as excinfo:
        M.load_model_and_processor("llava")
    message = _one_line(excinfo)
    assert "'llava'" in message and all(name in message for name in M.MODELS)


def test_unknown_init_lists_valid_values():
    with pytest.raises(ValueError) as excinfo:
        M.load_model_and_processor("tiny", init="zeros")
    message = _one_line(excinfo)
    assert "'zeros'" in message and "pretrained" in message and "random" in message


def test_unknown_dtype_is_rejected():
    with pytest.raises(ValueError) as excinfo:
        M.load_model_and_processor("tiny", dtype="int3")
    assert "'int3'" in _one_line(excinfo)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_4bit_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError) as excinfo:
        M.load_model_and_processor("qwen2-5-3b", init="random", load_in_4bit=True)
    message = _one_line(excinfo)
    assert "4-bit" in message or "4bit" in message
    assert "CUDA" in message


def test_pretrained_offline_suggests_random_init(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(M.WeightsNotAvailableError) as excinfo:
        M.load_model_and_processor("qwen2-vl-2b", cache_dir=str(tmp_path))
    message = _one_line(excinfo)
    assert "offline" in message and "--init random" in message and "Qwen/Qwen2-VL-2B-Instruct" in message


# --------------------------------------------------------------------------------------------------------------
# TRL smoke test
# --------------------------------------------------------------------------------------------------------------


def test_grpo_trains_two_steps_on_tiny(cache_root, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, processor = M.load_model_and_processor("tiny", cache_dir=str(cache_root))
    model = M.add_lora(model, r=4, alpha=8)
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is the value of bar {i}?"}],
            "image": _chart_image((200 + 8 * i, 160)),
        }
        for i in range(8)
    ]
    args = GRPOConfig(
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        max_steps=2,
        report_to=[],
        output_dir=str(tmp_path),
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model,
        processing_class=processor,
        reward_funcs=[lambda completions, **kw: [float(i % 2) for i in range(len(completions))]],
        args=args,
        train_dataset=Dataset.from_list(rows),
    )
    result = trainer.train()
    assert result.global_step == 2
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logged) == 2 and all(entry["completions/mean_length"] > 0 for entry in logged)
