"""Tests for chartrl_colab.models.loading: the model table, LoRA, the shipped real configs, error messages
(the tiny model itself: test_tiny.py; training it: test_trainer.py)."""

from __future__ import annotations

import re
import socket

import pytest
import torch

from chartrl_colab.models import loading as M


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


def test_models_table():
    assert M.MODELS == {
        "tiny": None,
        "tiny-warm": None,
        "qwen2-5-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
        "qwen2-5-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
        "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
    }


# --------------------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------------------


def test_trls_lora_fields_reach_the_adapter(capsys):
    """--lora-target-modules, --use-dora... (TRL's ModelConfig) shape the adapter a run trains."""
    from chartrl_colab.config import RunConfig
    from chartrl_colab.models.device import resolve_run
    from chartrl_colab.train import load_model

    cfg = RunConfig(vlm_name="tiny", lora_r=4, lora_target_modules=["q_proj", "v_proj"], use_dora=True,
                    use_rslora=True)
    model, _ = load_model(resolve_run(cfg, None, quiet=True))  # as train() loads it, on a CPU
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "v_proj"}
    assert any("lora_magnitude_vector" in n for n in trainable)  # DoRA's magnitudes
    peft_config = model.peft_config["default"]
    assert peft_config.use_dora and peft_config.use_rslora and peft_config.r == 4


def test_add_lora_targets_language_model_only(cache_root, capsys, image_batch):
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
    batch = image_batch(processor)
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
def test_random_init_path_with_shrunk_real_config(name, image_batch):
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
    batch = image_batch(processor)
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
