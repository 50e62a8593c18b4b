"""Model names -> (model, processor) pairs for chart-QA RL fine-tuning.

Names (``MODELS``):

* ``tiny`` -- an embedded, randomly initialised Qwen2.5-VL (a few hundred
  thousand parameters) with a byte-level BPE tokenizer trained in code on a
  small built-in corpus.  It needs no network and no download, builds in a
  couple of seconds, and is cached on disk
  (``~/.cache/chartrl_colab/tiny-<version>-<seed>``).  It exists so that the
  whole pipeline (data -> processor -> GRPO -> rewards -> eval) can be run and
  tested on a CPU; its answers are noise.
* ``qwen2-5-3b``, ``qwen2-5-7b``, ``qwen2-vl-2b`` -- the real Qwen
  vision-language models from the Hugging Face hub.

``init="pretrained"`` downloads / loads the hub weights.  ``init="random"``
builds the *real architecture* of a hub model (from the config.json copies
shipped in ``chartrl_colab/model_configs/``) with random weights and pairs it
with the embedded tiny tokenizer.  Its answers are noise too, but its memory
use and step time are those of the real model, so the GPU budget of a run
(batch size, LoRA rank, 4-bit or not, image resolution) can be measured
without downloadable weights.  The config's special-token ids are remapped to
the embedded tokenizer's ids; the vocabulary (embedding matrix) keeps its real
size, and the image processor keeps the hub's pixel bounds so an image costs
as many tokens as with the real model.

``load_in_4bit=True`` gives QLoRA-style NF4 weights through bitsandbytes and
needs CUDA.  bitsandbytes quantises while *loading* a checkpoint, so with
``init="random"`` the random weights are first streamed, tensor by tensor, into
a temporary bf16 safetensors checkpoint under the cache directory, which is
loaded with the NF4 config and deleted (the unquantised model is never held in
memory, only one tensor of it at a time).

``add_lora`` wraps any of these models with a LoRA adapter on the language
model's attention and MLP projections (the vision tower stays frozen and
adapter-free).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from chartrl_colab.errors import ConfigError

if TYPE_CHECKING:  # heavy imports stay lazy: importing this module must be cheap
    from peft import PeftModel
    from transformers import PretrainedConfig, PreTrainedModel, ProcessorMixin

__all__ = [
    "MODELS",
    "INITS",
    "LORA_TARGET_MODULES",
    "TINY_VERSION",
    "WeightsNotAvailableError",
    "add_lora",
    "build_tiny",
    "count_parameters",
    "load_model_and_processor",
    "load_shipped_config",
]

MODELS: dict[str, str | None] = {
    "tiny": None,  # embedded: built in code, never downloaded
    "qwen2-5-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen2-5-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
}
INITS: tuple[str, ...] = ("pretrained", "random")

# Bump when anything that shapes the tiny model or its tokenizer changes, so old caches are not reused.
TINY_VERSION = "v1"
DEFAULT_CACHE_ROOT = "~/.cache/chartrl_colab"
CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

# LoRA goes on the language model only. A plain name list ("q_proj", "gate_proj", ...) would also hit the
# Qwen2.5-VL vision blocks, whose MLPs are named gate_proj/up_proj/down_proj too; the regex is matched by peft
# with re.fullmatch against names like "model.language_model.layers.3.mlp.up_proj" (transformers 5.x layout).
LORA_TARGET_MODULES = (
    r"(?:.*\.)?language_model\.layers\.\d+\."
    r"(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)|mlp\.(?:gate_proj|up_proj|down_proj))"
)

# Qwen2/2.5-VL special tokens, in the hub tokenizer's order (there they are ids 151643..151656).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The chat template shipped with Qwen2-VL / Qwen2.5-VL (tokenizer_config.json / chat_template.json on the hub).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's pre-tokenizer split pattern (digits are split one by one, as in the real tokenizer).
_QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Tiny model sizes. The vocabulary is kept small so the embedding does not dominate the parameter count.
_TINY_VOCAB = 1024
_TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,  # head_dim 16 -> rotary half-dim 8 = sum(mrope_section)
    num_key_value_heads=2,
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    use_sliding_window=False,
    hidden_act="silu",
    # transformers 5.x stores RoPE settings as `rope_parameters`; the "mrope" type of old configs is mapped to
    # "default" plus an mrope_section (temporal, height, width) that must sum to head_dim // 2.
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
)
_TINY_VISION = dict(
    depth=2,
    hidden_size=64,
    intermediate_size=128,
    num_heads=4,  # vision head_dim 16
    out_hidden_size=64,  # = text hidden size
    fullatt_block_indexes=[1],  # real models: every 8th block is full attention, the rest windowed
    window_size=112,
    tokens_per_second=2,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    hidden_act="silu",
)
# An image becomes between 1 and 4x4 merged tokens (28x28 pixels each): enough to exercise the vision path.
_TINY_MIN_PIXELS = 28 * 28 * 4
_TINY_MAX_PIXELS = 28 * 28 * 16

# Built-in corpus for the tiny tokenizer: chart vocabulary, the answer-format tags, JSON, numbers, English.
_TINY_CORPUS = """
You are a helpful assistant. Look at the chart and answer the question.
Think step by step inside <think></think> and give the final answer inside <answer></answer>.
<think>The chart is a bar chart. The tallest bar is 2019 with a value of 42.5.</think><answer>2019</answer>
<think>Read the y-axis: the line rises from 10 to 35 between 2015 and 2020, by 25.</think><answer>25</answer>
<think>The pie chart shows four slices; the largest share is Asia at 45%.</think><answer>Asia</answer>
<type>bar</type><type>line</type><type>pie</type><type>scatter</type><type>area</type><type>histogram</type>
<table>Year | Sales | Profit
2018 | 120 | 15.5
2019 | 135 | 18.25
2020 | 98 | -3.0</table>
<table>Country | Population (millions) | GDP (billion USD)
China | 1412 | 17734
India | 1408 | 3176
United States | 332 | 23315</table>
{"chart_type": "bar", "title": "Annual revenue", "x_label": "Year", "y_label": "Revenue (USD)",
 "data": [{"label": "2019", "value": 42.5}, {"label": "2020", "value": 37.0}, {"label": "2021", "value": 51.25}]}
{"answer": "Yes", "reasoning": "the blue line is above the red line", "confidence": 0.9, "values": [1, 2, 3, 4, 5]}
{"question": "What is the highest value?", "answer": "87", "type": "line", "table": null, "ok": true, "n": 0}
[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 1000, 0.5, 1.5, 2.75, -1, -20, 3.14, 1e6, 50%, 12.5%, $300, 7k, 2.1M]
What is the value of the highest bar? Which year has the lowest value? How many categories are shown?
What is the difference between the maximum and the minimum? What is the average of the values?
Is the value in 2020 greater than in 2019? What percentage does the largest segment represent?
What is the sum of the two smallest values? Which color represents the highest share? What is the ratio?
Does the trend increase or decrease over time? What is the median? Which country has the most?
chart graph plot figure axis x-axis y-axis legend label title value values data series category categories
bar bars line lines pie slice slices segment share percent percentage point points marker color colors
blue red green orange yellow purple gray black white dark light highest lowest maximum minimum max min
total sum average mean median difference ratio increase decrease growth decline trend rate change compare
year years month months quarter day week January February March April May June July August September
October November December Q1 Q2 Q3 Q4 revenue sales profit cost price income expenses budget market
population country countries region city company companies product products users customers votes share
temperature rainfall energy emissions GDP inflation unemployment rate index score rating age group gender
male female men women children adults students survey respondents number count amount level million
billion thousand hundred percent dollars USD euro units per capita left right top bottom above below between
the a an of in on to for with from by at as is are was were be been has have had do does did not no yes
and or but if then than so because which what who whom whose where when why how many much more most less
least first second third last next previous each every all some any other another same different both
this that these those it its they their them there here we our you your he she his her one two three
four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred zero answer question
reasoning step steps think final therefore thus hence so approximately about around exactly roughly nearly
The quick brown fox jumps over the lazy dog. Numbers like 3,450 and 12.75 appear in charts and tables.
Accuracy, reward, format, correct, incorrect, true, false, null, none, unknown, not applicable.
"""


class WeightsNotAvailableError(ConfigError, OSError):
    """The hub weights of a model could not be loaded (offline, no cache, or the download failed)."""


# --------------------------------------------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------------------------------------------

_DTYPE_ALIASES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ConfigError(f"unknown model name {name!r}; valid names: {', '.join(MODELS)}")


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ConfigError(f"unknown init {init!r}; valid values: {', '.join(INITS)}")


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """None and "auto" pass through; strings like "bf16" become torch dtypes."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key == "auto":
            return "auto"
        if key in _DTYPE_ALIASES:
            return _DTYPE_ALIASES[key]
    valid = ", ".join(["auto", *_DTYPE_ALIASES])
    raise ConfigError(f"unknown dtype {dtype!r}; valid values: a torch.dtype or one of {valid}")


def _check_4bit() -> None:
    if not torch.cuda.is_available():
        raise ConfigError(
            "load_in_4bit=True needs CUDA (bitsandbytes NF4 kernels), but no CUDA device is available; "
            "drop 4-bit loading or run on a GPU"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("load_in_4bit=True needs the bitsandbytes package: pip install bitsandbytes")


def _bnb_config():
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_ROOT).expanduser()


def _gpu_device_map() -> dict[str, int] | None:
    # Put weights straight on the GPU: a 7B model in bf16 does not fit in a Colab VM's RAM.
    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else None


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def load_model_and_processor(
    name: str,
    *,
    init: str = "pretrained",
    load_in_4bit: bool = False,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Return ``(model, processor)`` for one of ``MODELS``.

    * ``tiny``: always built offline. ``init="pretrained"`` loads it from the disk cache under ``cache_dir``
      (default ``~/.cache/chartrl_colab``), building it there first if absent; ``init="random"`` builds it fresh
      without touching the disk. Default dtype float32.
    * hub names, ``init="pretrained"``: ``AutoModelForImageTextToText`` / ``AutoProcessor.from_pretrained``
      (``cache_dir`` is the Hugging Face cache); raises ``WeightsNotAvailableError`` if they cannot be loaded.
      Default dtype: the checkpoint's (bf16).
    * hub names, ``init="random"``: the real architecture with seeded random weights plus the embedded tokenizer
      (see the module docstring). Default dtype bf16 on CUDA, float32 on CPU.

    ``load_in_4bit`` quantises the weights to NF4 (needs CUDA and bitsandbytes). On CUDA, weights are placed on
    the current GPU. ``seed`` only affects randomly initialised weights.
    """
    _check_name(name)
    _check_init(init)
    torch_dtype = _resolve_dtype(dtype)
    if load_in_4bit:
        _check_4bit()

    if name == "tiny":
        if init == "random":
            model, processor = _build_tiny_fresh(seed)
            if load_in_4bit:
                # bitsandbytes quantises while loading, so go through a (temporary) saved copy.
                return _reload_quantized(model, cache_dir, torch_dtype), processor
        else:
            path = _ensure_tiny_cache(cache_dir, seed)
            if load_in_4bit:
                return _load_tiny(
                    path,
                    torch_dtype if torch_dtype not in (None, "auto") else torch.bfloat16,
                    quantization_config=_bnb_config(),
                    device_map=_gpu_device_map(),
                )
            model, processor = _load_tiny(path, None)
        if torch_dtype not in (None, "auto"):
            model = model.to(torch_dtype)
        return model, processor

    if init == "pretrained":
        return _load_pretrained(name, torch_dtype, load_in_4bit, cache_dir)

    config = load_shipped_config(name)
    if load_in_4bit:
        return _build_random_arch_4bit(config, name=name, dtype=torch_dtype, seed=seed, cache_dir=cache_dir)
    return _build_random_arch(config, name=name, dtype=torch_dtype, seed=seed)


def build_tiny(cache_dir: str | None = None, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The embedded tiny Qwen2.5-VL and its processor, cached under ``cache_dir/tiny-<version>-<seed>``.

    The first call builds (a few seconds) and saves; later calls load the saved copy. The returned model is the
    same either way: weights depend only on ``seed``.
    """
    path = _tiny_cache_path(cache_dir, seed)
    if _is_complete(path):
        try:
            return _load_tiny(path, None)
        except Exception as exc:  # noqa: BLE001 - an unreadable cache is rebuilt, not fatal
            warnings.warn(f"rebuilding unreadable tiny-model cache {path}: {exc}", stacklevel=2)
            shutil.rmtree(path, ignore_errors=True)
    model, processor = _build_tiny_fresh(seed)
    _save_atomically(model, processor, path)
    return model, processor


def add_lora(
    model: PreTrainedModel,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: list[str] | str | None = None,
    gradient_checkpointing: bool = True,
) -> PeftModel:
    """Wrap ``model`` with a LoRA adapter; only the adapter weights stay trainable.

    The default targets are the language model's attention and MLP projections (``LORA_TARGET_MODULES``), not the
    vision tower. 4-bit models go through ``peft.prepare_model_for_kbit_training`` first. Gradient checkpointing
    uses ``use_reentrant=False`` (the reentrant variant drops gradients when the checkpointed inputs do not
    require grad, which is the case with frozen embeddings).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    gc_kwargs = {"use_reentrant": False}
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules if target_modules is not None else LORA_TARGET_MODULES,
        bias="none",
    )
    with warnings.catch_warnings():
        # transformers 5.x renamed gradient checkpointing to activation checkpointing; peft still calls the old
        # names, which only emit FutureWarnings.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*gradient_checkpointing.*")
        quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        if quantized:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs=gc_kwargs
            )
        elif gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
            if not getattr(model, "_require_grads_hooks", None):
                # Frozen embeddings give activations without grad; this hook keeps the checkpointed graph connected.
                model.enable_input_require_grads()
        return get_peft_model(model, config)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; tied weights count once, 4-bit packed weights count unpacked."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":  # bitsandbytes packs two 4-bit values per byte
            n *= 2 * param.element_size()
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def load_shipped_config(name: str) -> PretrainedConfig:
    """The hub config.json of ``name`` as shipped in ``model_configs/`` (hub token ids, real sizes)."""
    _check_name(name)
    if MODELS[name] is None:
        raise ConfigError(f"model {name!r} is embedded and has no shipped config; valid names: {_hub_names()}")
    from transformers import AutoConfig

    raw = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    fields = {k: v for k, v in raw.items() if not k.startswith("_")}  # "_source", "_processor" are ours
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


# --------------------------------------------------------------------------------------------------------------
# Hub models
# --------------------------------------------------------------------------------------------------------------


def _hub_names() -> str:
    return ", ".join(n for n, hub in MODELS.items() if hub is not None)


def _load_pretrained(name, dtype, load_in_4bit, cache_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    hub_id = MODELS[name]
    kwargs = {"dtype": dtype if dtype is not None else "auto", "cache_dir": cache_dir}
    device_map = _gpu_device_map()
    if device_map is not None:
        kwargs["device_map"] = device_map
    if load_in_4bit:
        kwargs["quantization_config"] = _bnb_config()
        if dtype in (None, "auto"):
            kwargs["dtype"] = torch.bfloat16  # the non-quantised parts (norms, vision convs)
    try:
        try:  # cached copy first: no network round trips at all
            processor = AutoProcessor.from_pretrained(hub_id, cache_dir=cache_dir, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(hub_id, local_files_only=True, **kwargs)
        except OSError:
            # huggingface_hub retries a dead connection for minutes per file; fail fast when the hub is unreachable.
            if not _hub_reachable():
                raise OSError("the Hugging Face hub is not reachable") from None
            # The processor first: it is small, so a broken download fails before the weights.
            processor = AutoProcessor.from_pretrained(hub_id, cache_dir=cache_dir)
            model = AutoModelForImageTextToText.from_pretrained(hub_id, **kwargs)
    except OSError as exc:  # connection errors, missing cache entries and failed downloads are all OSErrors
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__  # one line, whatever the hub said
        raise WeightsNotAvailableError(
            f"pretrained weights for {name!r} ({hub_id}) are not available offline or in the cache ({reason}); "
            "use --init random to build the same architecture with random weights"
        ) from exc
    return model, processor


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Cheap check (TCP connect to the hub endpoint) before a download that would otherwise retry for minutes."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def _build_random_arch(config, *, name: str, dtype, seed: int):
    """Real architecture from ``config``, seeded random weights, embedded tokenizer (ids remapped)."""
    from transformers import AutoModelForImageTextToText, GenerationConfig

    tokenizer = _build_tokenizer()
    ids = _special_ids(tokenizer)
    if len(tokenizer) > config.get_text_config().vocab_size:
        raise ValueError(f"embedded tokenizer vocab {len(tokenizer)} exceeds the model vocab")
    _set_token_ids(config, ids)

    if dtype in (None, "auto"):
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    # Initialising billions of weights is much faster on the GPU, and skips a host-RAM copy that may not fit.
    with _seeded(seed, device), (device or contextlib.nullcontext()):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.eval()  # like from_pretrained; the trainer switches to train mode itself
    model.generation_config = GenerationConfig(**_generation_defaults(ids))

    return model, _random_arch_processor(tokenizer, config, name)


def _random_arch_processor(tokenizer, config, name: str):
    # The hub's pixel bounds, so an image costs as many tokens as it would with the real model.
    bounds = json.loads((CONFIG_DIR / f"{name}.json").read_text()).get("_processor", {})
    return _build_processor(
        tokenizer,
        min_pixels=bounds.get("min_pixels", 3136),
        max_pixels=bounds.get("max_pixels", 12845056),
        processor_class=_processor_class_for(config),
    )


def _build_random_arch_4bit(config, *, name: str, dtype, seed: int, cache_dir):
    """Random real architecture in NF4 without ever holding it unquantised in memory.

    bitsandbytes quantises while loading a checkpoint, and a 7B model in bf16 (16.6 GB) fits neither a T4 nor a
    Colab VM's RAM, so random tensors are streamed into a temporary safetensors checkpoint (one tensor in memory
    at a time) that is then loaded with the NF4 config and deleted.
    """
    from transformers import AutoModelForImageTextToText

    tokenizer = _build_tokenizer()
    _set_token_ids(config, _special_ids(tokenizer))
    root = _cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".random-{name}-") as tmp:
        _write_random_checkpoint(config, Path(tmp), seed=seed)
        model = AutoModelForImageTextToText.from_pretrained(
            tmp,
            quantization_config=_bnb_config(),
            dtype=dtype if dtype not in (None, "auto") else torch.bfloat16,
            device_map=_gpu_device_map(),
        )
    return model, _random_arch_processor(tokenizer, config, name)


def _write_random_checkpoint(config, path: Path, *, seed: int, shard_bytes: int = 2 << 30) -> None:
    """Save a randomly initialised checkpoint of ``config`` tensor by tensor (bf16, sharded safetensors).

    Init follows transformers' scheme for these models: matrices ~ N(0, initializer_range), norm weights 1,
    biases 0. Tied weights are stored once (named_parameters deduplicates them), as save_pretrained does.
    """
    from safetensors.torch import save_file
    from transformers import AutoModelForImageTextToText, GenerationConfig

    with torch.device("meta"):  # names and shapes only
        skeleton = AutoModelForImageTextToText.from_config(config)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    std = config.get_text_config().initializer_range
    path.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    total = shard_size = 0

    def flush():
        nonlocal shard_size
        if shard:
            filename = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
            save_file(shard, str(path / filename), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, filename))
            shard.clear()
            shard_size = 0

    for pname, param in skeleton.named_parameters():
        if param.ndim >= 2:
            tensor = torch.empty(param.shape, dtype=torch.bfloat16, device=device)
            tensor.normal_(0.0, std, generator=generator)
        elif pname.endswith(".weight"):
            tensor = torch.ones(param.shape, dtype=torch.bfloat16)  # RMSNorm / LayerNorm scales
        else:
            tensor = torch.zeros(param.shape, dtype=torch.bfloat16)  # biases
        shard[pname] = tensor.cpu().contiguous()
        shard_size += tensor.numel() * tensor.element_size()
        total += tensor.numel() * tensor.element_size()
        if shard_size >= shard_bytes:
            flush()
    flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(path)
    ids = {"endoftext": config.get_text_config().bos_token_id, "im_end": config.get_text_config().eos_token_id}
    GenerationConfig(**_generation_defaults(ids)).save_pretrained(path)


def _reload_quantized(model, cache_dir, dtype):
    """bitsandbytes quantises at load time only: save the model, reload it with the NF4 config, delete the copy."""
    root = _cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    cls = type(model)
    # On the cache disk rather than /tmp, which may be a small RAM-backed tmpfs.
    with tempfile.TemporaryDirectory(dir=root, prefix=".quantize-") as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return cls.from_pretrained(
            tmp,
            quantization_config=_bnb_config(),
            dtype=dtype if dtype not in (None, "auto") else torch.bfloat16,
            device_map=_gpu_device_map(),
        )


# --------------------------------------------------------------------------------------------------------------
# Tiny model
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device | None = None):
    """Seed torch for weight init without disturbing the caller's RNG streams."""
    devices = [device.index] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # Same pipeline as Qwen2's tokenizer: regex split, byte-level BPE, byte-level decoding.
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_VOCAB,
        special_tokens=list(QWEN_SPECIAL_TOKENS),  # ids 0..13, each a single token
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable
        min_frequency=1,
        show_progress=False,
    )
    lines = [line for line in _TINY_CORPUS.splitlines() if line.strip()]
    backend.train_from_iterator(lines * 2, trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def _special_ids(tokenizer) -> dict[str, int]:
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIAL_TOKENS}
    return {
        "endoftext": ids["<|endoftext|>"],
        "im_end": ids["<|im_end|>"],
        "image": ids["<|image_pad|>"],
        "video": ids["<|video_pad|>"],
        "vision_start": ids["<|vision_start|>"],
        "vision_end": ids["<|vision_end|>"],
    }


def _set_token_ids(config, ids: dict[str, int]) -> None:
    # The model finds image/video placeholders and the end of turn by these ids, so they must be the tokenizer's.
    config.image_token_id = ids["image"]
    config.video_token_id = ids["video"]
    config.vision_start_token_id = ids["vision_start"]
    config.vision_end_token_id = ids["vision_end"]
    if hasattr(config, "vision_token_id"):
        config.vision_token_id = ids["vision_start"]  # legacy key of the hub configs; unused by transformers 5
    for cfg in {id(c): c for c in (config, config.get_text_config())}.values():
        cfg.bos_token_id = ids["endoftext"]
        cfg.eos_token_id = ids["im_end"]
        cfg.pad_token_id = ids["endoftext"]


def _generation_defaults(ids: dict[str, int]) -> dict:
    return {
        "do_sample": True,
        "bos_token_id": ids["endoftext"],
        "eos_token_id": [ids["im_end"], ids["endoftext"]],
        "pad_token_id": ids["endoftext"],
    }


def _processor_class_for(config):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor

    return Qwen2VLProcessor if config.model_type == "qwen2_vl" else Qwen2_5_VLProcessor


def _build_processor(tokenizer, *, min_pixels: int, max_pixels: int, processor_class=None):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    processor_class = processor_class or Qwen2_5_VLProcessor
    return processor_class(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        chat_template=QWEN_VL_CHAT_TEMPLATE,
    )


def _tiny_config(ids: dict[str, int]):
    from transformers import Qwen2_5_VLConfig

    text = dict(
        _TINY_TEXT,
        vocab_size=_TINY_VOCAB,
        tie_word_embeddings=True,
        bos_token_id=ids["endoftext"],
        eos_token_id=ids["im_end"],
        pad_token_id=ids["endoftext"],
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(_TINY_VISION),
        tie_word_embeddings=True,  # lm_head shares the embedding: fewer parameters
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
    )
    _set_token_ids(config, ids)
    return config


def _build_tiny_fresh(seed: int):
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = _build_tokenizer()
    ids = _special_ids(tokenizer)
    if len(tokenizer) > _TINY_VOCAB:
        raise RuntimeError(f"tiny tokenizer has {len(tokenizer)} tokens, more than the model's {_TINY_VOCAB}")
    config = _tiny_config(ids)
    with _seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(**_generation_defaults(ids))
    model.eval()  # like from_pretrained; the trainer switches to train mode itself
    processor = _build_processor(tokenizer, min_pixels=_TINY_MIN_PIXELS, max_pixels=_TINY_MAX_PIXELS)
    return model, processor


def _tiny_cache_path(cache_dir, seed: int) -> Path:
    return _cache_root(cache_dir) / f"tiny-{TINY_VERSION}-{int(seed)}"


def _is_complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


def _ensure_tiny_cache(cache_dir, seed: int) -> Path:
    path = _tiny_cache_path(cache_dir, seed)
    if not _is_complete(path):
        build_tiny(cache_dir, seed)
    return path


def _load_tiny(path: Path, dtype, **kwargs):
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    processor = Qwen2_5_VLProcessor.from_pretrained(path)
    if not processor.tokenizer.chat_template:  # keep text-only apply_chat_template working on the tokenizer
        processor.tokenizer.chat_template = processor.chat_template
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, dtype=dtype if dtype is not None else torch.float32, **kwargs
    )
    return model, processor


def _save_atomically(model, processor, path: Path) -> None:
    """Save into a temp dir next to ``path`` and rename it: a killed build never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not _is_complete(path):  # not a concurrent build that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
