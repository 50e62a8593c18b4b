"""Model names (``MODELS``) -> ``(model, processor)`` pairs, and :func:`add_lora`.

``tiny`` (:mod:`.tiny`) and ``tiny-warm`` (:mod:`.warm`) are built in code and cached on disk; the others are
Qwen vision-language models from the hub. ``init="random"`` builds a hub model's architecture (``model_configs/``)
with random weights and the embedded tokenizer: noise answers, but the real model's memory and step time, so a
run's GPU budget can be measured without the weights.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from chartrl_colab.config import INITS
from chartrl_colab.errors import ConfigError
from chartrl_colab.models import device, tiny
from chartrl_colab.rewards.similarity import hub_reachable

if TYPE_CHECKING:  # heavy imports stay lazy: importing this module must be cheap
    from peft import PeftModel
    from transformers import PretrainedConfig, PreTrainedModel, ProcessorMixin

MODELS: dict[str, str | None] = {
    "tiny": None,  # embedded: built in code, never downloaded
    "tiny-warm": None,  # embedded: the tiny model after a short warm-up, built in code
    "qwen2-5-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen2-5-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
}
EMBEDDED_MODELS = frozenset(name for name, hub_id in MODELS.items() if hub_id is None)

# LoRA goes on the language model only: a name list ("q_proj", "gate_proj", ...) would also hit the vision blocks'
# MLPs. peft matches the regex with re.fullmatch against names like "model.language_model.layers.3.mlp.up_proj".
LORA_TARGET_MODULES = (
    r"(?:.*\.)?language_model\.layers\.\d+\."
    r"(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)|mlp\.(?:gate_proj|up_proj|down_proj))"
)


class WeightsNotAvailableError(ConfigError, OSError):
    """The hub weights of a model could not be loaded (offline, no cache, or the download failed)."""


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ConfigError(f"unknown model name {name!r}; valid names: {', '.join(MODELS)}")


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype, or None for the default (None or "auto"); strings like "bf16" become torch dtypes."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key != "auto" and key not in device.DTYPE_NAMES:
        valid = ", ".join(["auto", *device.DTYPE_NAMES])
        raise ConfigError(f"unknown dtype {dtype!r}; valid values: a torch.dtype or one of {valid}")
    return device.torch_dtype(key) if key != "auto" else None


def machine_dtype() -> torch.dtype:
    """This machine's precision (bf16 from compute capability 8.0, fp16 below, fp32 on a CPU): see device.py."""
    return device.torch_dtype(device.precision_for(device.detect()))


def _gpu_device_map() -> dict[str, int] | None:
    # Put weights straight on the GPU: a 7B model in bf16 does not fit in a Colab VM's RAM.
    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else None


def _nf4(dtype=None) -> dict:
    """``from_pretrained``'s arguments for NF4 weights on the GPU. ``dtype`` (None: this GPU's precision, as bf16
    would be emulated on a T4) is the compute dtype of the 4-bit layers and the dtype of the unquantised parts."""
    from transformers import BitsAndBytesConfig

    dtype = dtype if dtype is not None else machine_dtype()
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                                bnb_4bit_use_double_quant=True)
    return {"quantization_config": config, "device_map": _gpu_device_map(), "dtype": dtype}


def load_model_and_processor(
    name: str,
    *,
    init: str = "pretrained",
    load_in_4bit: bool = False,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
    max_pixels: int | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """``(model, processor)`` for one of ``MODELS``, on the current GPU when there is one.

    * ``tiny``, ``tiny-warm``: ``init="pretrained"`` loads the cache entry under ``cache_dir`` (default
      ``~/.cache/chartrl_colab``), built first if absent; ``tiny`` with ``init="random"`` is built in memory. float32.
    * hub names, ``init="pretrained"``: ``from_pretrained`` (``cache_dir``: the HF cache), the checkpoint's dtype;
      ``WeightsNotAvailableError`` when they cannot be loaded. ``init="random"``: this GPU's precision, else float32.

    ``load_in_4bit``: NF4 weights (CUDA and bitsandbytes), compute dtype ``dtype`` or this GPU's precision.
    ``seed`` shapes random weights and the embedded models; ``max_pixels``: :func:`.tiny.cap_image_pixels`.
    Unknown values and impossible combinations raise ConfigError.
    """
    _check_name(name)
    if init not in INITS:
        raise ConfigError(f"unknown init {init!r}; valid values: {', '.join(INITS)}")
    dtype = _resolve_dtype(dtype)
    if load_in_4bit and not torch.cuda.is_available():
        raise ConfigError("load_in_4bit=True needs CUDA (bitsandbytes NF4 kernels), but no CUDA device is available; "
                          "drop 4-bit loading or run on a GPU")
    if load_in_4bit and not device.bitsandbytes_importable():
        raise ConfigError("load_in_4bit=True needs the bitsandbytes package: pip install bitsandbytes")
    if name == "tiny-warm" and init == "random":
        raise ConfigError("model 'tiny-warm' has no random init (it is the tiny model after a warm-up); "
                          "use init='pretrained', or vlm_name='tiny' for random weights")
    if name in EMBEDDED_MODELS and init == "pretrained":
        from chartrl_colab.models import warm

        cache_path, build = {"tiny": (tiny.tiny_cache_path, tiny.build_tiny),
                             "tiny-warm": (warm.warm_cache_path, warm.build_warm)}[name]
        path = cache_path(cache_dir, seed)
        if not tiny.is_complete(path):  # built and saved (float32) on first use
            build(cache_dir, seed)
        model, processor = tiny.load_tiny(path, **_nf4(dtype)) if load_in_4bit else tiny.load_tiny(path, None)
    elif name == "tiny":  # random weights, in memory
        model, processor = tiny.build_tiny_fresh(seed)
        if load_in_4bit:
            model = _load_quantized(type(model), model.to(torch.bfloat16).save_pretrained, cache_dir, dtype)
    elif init == "pretrained":
        model, processor = _load_pretrained(name, dtype, load_in_4bit, cache_dir)
    else:
        model, processor = _build_random_arch(load_shipped_config(name), name=name, dtype=dtype, seed=seed,
                                              load_in_4bit=load_in_4bit, cache_dir=cache_dir)
    if name in EMBEDDED_MODELS and dtype is not None and not load_in_4bit:
        model = model.to(dtype)
    return model, tiny.cap_image_pixels(processor, max_pixels)


def add_lora(
    model: PreTrainedModel,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: list[str] | str | None = None,
    modules_to_save: list[str] | None = None,
    use_rslora: bool = False,
    use_dora: bool = False,
    gradient_checkpointing: bool = True,
) -> PeftModel:
    """Wrap ``model`` with a LoRA adapter; only the adapter weights (and ``modules_to_save``) stay trainable.

    The arguments are TRL ModelConfig's LoRA fields under peft's names; the default targets are
    ``LORA_TARGET_MODULES``. 4-bit models go through ``peft.prepare_model_for_kbit_training`` first. Gradient
    checkpointing is non-reentrant: the reentrant variant drops gradients behind frozen embeddings.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    gc_kwargs = {"use_reentrant": False}
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or LORA_TARGET_MODULES,
        modules_to_save=modules_to_save,
        use_rslora=use_rslora,
        use_dora=use_dora,
        bias="none",
    )
    with warnings.catch_warnings():
        # transformers 5.x renamed gradient checkpointing; peft's calls of the old names only emit FutureWarnings.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*gradient_checkpointing.*")
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs=gc_kwargs
            )
        elif gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)
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
    if name in EMBEDDED_MODELS:
        hub_names = ", ".join(n for n in MODELS if n not in EMBEDDED_MODELS)
        raise ConfigError(f"model {name!r} is embedded and has no shipped config; valid names: {hub_names}")
    from transformers import AutoConfig

    fields = {k: v for k, v in _shipped(name).items() if not k.startswith("_")}  # "_source", "_processor" are ours
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def _shipped(name: str) -> dict:
    """``model_configs/<name>.json``: the hub's config.json, plus our ``_source`` and ``_processor`` (pixel bounds)."""
    return json.loads((Path(__file__).resolve().parent / "model_configs" / f"{name}.json").read_text())


def _load_pretrained(name, dtype, load_in_4bit, cache_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    hub_id = MODELS[name]
    kwargs = {"cache_dir": cache_dir, "dtype": dtype if dtype is not None else "auto", "device_map": _gpu_device_map()}
    if load_in_4bit:
        kwargs.update(_nf4(dtype))
    try:
        try:  # the cached copy first: no network round trips
            processor = AutoProcessor.from_pretrained(hub_id, cache_dir=cache_dir, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(hub_id, local_files_only=True, **kwargs)
        except OSError:
            # huggingface_hub retries a dead connection for minutes per file; fail fast when the hub is unreachable.
            if not hub_reachable():
                raise OSError("the Hugging Face hub is not reachable") from None
            # The small processor first, so a broken download fails before the weights.
            processor = AutoProcessor.from_pretrained(hub_id, cache_dir=cache_dir)
            model = AutoModelForImageTextToText.from_pretrained(hub_id, **kwargs)
    except OSError as exc:  # connection errors, missing cache entries and failed downloads are all OSErrors
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__  # one line, whatever the hub said
        raise WeightsNotAvailableError(
            f"pretrained weights for {name!r} ({hub_id}) are not available offline or in the cache ({reason}); "
            "use --init random to build the same architecture with random weights"
        ) from exc
    return model, processor


def _build_random_arch(config, *, name: str, dtype, seed: int, load_in_4bit: bool = False, cache_dir=None):
    """The ``init="random"`` model of ``config``: seeded weights, the embedded tokenizer and the hub's pixel bounds
    (an image costs as many tokens as with the real model). In NF4 it is never held unquantised in memory."""
    from transformers import AutoModelForImageTextToText, GenerationConfig, Qwen2_5_VLProcessor, Qwen2VLProcessor

    tokenizer = tiny.tokenizer_for(config)
    if load_in_4bit:
        model = _load_quantized(AutoModelForImageTextToText,
                                lambda path: _write_random_checkpoint(config, path, seed=seed), cache_dir, dtype)
    else:
        dtype = dtype if dtype is not None else machine_dtype()
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        # Initialising billions of weights is much faster on the GPU, and skips a host-RAM copy that may not fit.
        with tiny.seeded(seed, device), (device or contextlib.nullcontext()):
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
        model.eval()  # like from_pretrained; the trainer switches to train mode itself
        model.generation_config = GenerationConfig(**tiny.generation_defaults(config))
    bounds = _shipped(name)["_processor"]
    processor = tiny.build_processor(
        tokenizer,
        min_pixels=bounds["min_pixels"],
        max_pixels=bounds["max_pixels"],
        processor_class=Qwen2VLProcessor if config.model_type == "qwen2_vl" else Qwen2_5_VLProcessor,
    )
    return model, processor


def _load_quantized(model_class, write, cache_dir, dtype):
    """bitsandbytes quantises while loading only: ``write(folder)`` saves a checkpoint into a temporary folder on
    the cache disk (not /tmp, often a small tmpfs), loaded from there in NF4, then deleted."""
    root = tiny.cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".quantize-") as tmp:
        write(Path(tmp))
        return model_class.from_pretrained(tmp, **_nf4(dtype))


def _write_random_checkpoint(config, path: Path, *, seed: int, shard_bytes: int = 2 << 30) -> None:
    """Save a randomly initialised checkpoint of ``config`` tensor by tensor (bf16, sharded safetensors), as
    transformers initialises these models: matrices ~ N(0, initializer_range), norm weights 1, biases 0."""
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
        else:  # norm scales 1, biases 0
            tensor = torch.full(param.shape, 1.0 if pname.endswith(".weight") else 0.0, dtype=torch.bfloat16)
        shard[pname] = tensor.cpu().contiguous()
        shard_size += tensor.nbytes
        total += tensor.nbytes
        if shard_size >= shard_bytes:
            flush()
    flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(path)
    GenerationConfig(**tiny.generation_defaults(config)).save_pretrained(path)
