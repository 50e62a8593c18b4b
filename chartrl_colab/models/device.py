"""The GPU a run gets, and every setting that follows from it: precision, 4-bit loading, vLLM, the OOM advice.

Each decision is a pure function of a :class:`Gpu`, so it is tested with a made-up card; :func:`detect` asks torch.
Training, generation and the setup notebook all decide here, so they never disagree.

>>> T4, A100 = Gpu("Tesla T4", (7, 5), 15.0), Gpu("NVIDIA A100-SXM4-40GB", (8, 0), 40.0)
>>> precision_for(T4), precision_for(A100), precision_for(None)
('fp16', 'bf16', 'fp32')
>>> auto_load_in_4bit(T4, "qwen2-5-3b"), auto_load_in_4bit(A100, "qwen2-5-3b"), auto_load_in_4bit(None, "qwen2-5-3b")
(True, False, False)
>>> auto_use_vllm(A100, vllm_importable=True, load_in_4bit=False, hub_model=True)
True
>>> auto_use_vllm(T4, vllm_importable=True, load_in_4bit=False, hub_model=True)  # compute capability 7.5
False
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from dataclasses import dataclass

from chartrl_colab.config import PRECISIONS
from chartrl_colab.errors import ConfigError, one_of

log = logging.getLogger(__name__)

AUTO = "auto"
RESOLVED = ("precision", "load_in_4bit", "use_vllm")  # the RunConfig fields resolve_run decides; run.json keeps them
# Ampere (compute capability 8.0) brings bf16 tensor cores and is what vLLM's kernels want. The capability decides,
# not torch.cuda.is_bf16_supported(): that says True on a T4 (7.5), where bf16 is emulated (slow, or failing).
AMPERE = (8, 0)
# Under this much GPU memory (a T4's 15 GB, an L4's 22 GB) a 3B model with 8 rollouts of 512 tokens does not fit
# in 16 bits, so "auto" loads it in 4 bits (QLoRA). An A100 40 GB trains it in bf16 with LoRA.
SMALL_GPU_GB = 24.0
# Every dtype spelling the package accepts (the precisions first) -> torch's name.
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "bfloat16": "bfloat16", "float16": "float16",
               "half": "float16", "float32": "float32", "float": "float32"}


@dataclass(frozen=True)
class Gpu:
    """What the decisions need to know about a card: its name, compute capability and memory (GiB)."""

    name: str
    capability: tuple[int, int]
    memory_gb: float

    def describe(self) -> str:
        return f"{self.name} ({self.memory_gb:g} GiB, compute capability {self.capability[0]}.{self.capability[1]})"


def detect() -> Gpu | None:
    """The first visible CUDA GPU, or None on a CPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return Gpu(props.name, tuple(torch.cuda.get_device_capability(0)), round(props.total_memory / 2**30, 1))


def precision_for(gpu: Gpu | None, requested: str = AUTO) -> str:
    """``"bf16"`` at compute capability >= 8.0, ``"fp16"`` below, ``"fp32"`` on a CPU; a requested one is checked.

    >>> precision_for(Gpu("T4", (7, 5), 15.0), "bf16")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    chartrl_colab.errors.ConfigError: precision='bf16' needs a GPU of compute capability >= 8.0 (this one: T4 ...)...
    """
    one_of("precision", requested, PRECISIONS)
    if requested == AUTO:
        return "fp32" if gpu is None else "bf16" if gpu.capability >= AMPERE else "fp16"
    if requested != "fp32" and gpu is None:
        raise ConfigError(f"precision={requested!r} needs a CUDA GPU and there is none; use precision='fp32' or 'auto'")
    if requested == "bf16" and gpu.capability < AMPERE:
        raise ConfigError(f"precision='bf16' needs a GPU of compute capability >= 8.0 (this one: {gpu.describe()}); "
                          "use precision='fp16' or 'auto'")
    return requested


def torch_dtype(name: str):
    """The torch dtype of a precision or dtype name (:data:`DTYPE_NAMES`): ``"bf16"`` -> ``torch.bfloat16``."""
    import torch

    return getattr(torch, DTYPE_NAMES[name])


def trainer_flags(precision: str) -> dict:
    """The Trainer's mixed-precision flags: ``bf16``/``fp16`` autocast, neither in fp32."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def model_precision(precision: str, use_lora: bool, load_in_4bit: bool) -> str:
    """The dtype the weights are loaded in: fp16 training's GradScaler refuses fp16 *trainable* weights, so a full
    fine-tune keeps fp32 weights under fp16 autocast (LoRA adapters and 4-bit training's trainable parts are fp32).

    >>> model_precision("fp16", use_lora=True, load_in_4bit=False), model_precision("fp16", False, False)
    ('fp16', 'fp32')
    """
    return "fp32" if precision == "fp16" and not (use_lora or load_in_4bit) else precision


def embedded(vlm_name: str) -> bool:
    """True for the models built in code (``models.loading.EMBEDDED_MODELS``): never 4-bit, never vLLM."""
    from chartrl_colab.models.loading import EMBEDDED_MODELS  # here: loading imports this module

    return vlm_name in EMBEDDED_MODELS


def auto_load_in_4bit(gpu: Gpu | None, vlm_name: str) -> bool:
    """4-bit (QLoRA) on a GPU under :data:`SMALL_GPU_GB`, for the hub models; never on a CPU or for embedded ones."""
    return gpu is not None and gpu.memory_gb < SMALL_GPU_GB and not embedded(vlm_name)


def auto_use_vllm(gpu: Gpu | None, vllm_importable: bool, load_in_4bit: bool, hub_model: bool) -> bool:
    """vLLM sampling when it is installed, the GPU is Ampere or newer, the weights are not 4-bit (vLLM would
    re-quantise them each step) and vLLM can load the model by its hub name (``hub_model``)."""
    return bool(gpu is not None and vllm_importable and gpu.capability >= AMPERE and not load_in_4bit and hub_model)


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def bitsandbytes_importable() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def resolve_run(cfg, gpu: Gpu | None, quiet: bool = False):
    """The validated RunConfig ``cfg`` with each machine-dependent ``"auto"`` (:data:`RESOLVED`) decided for
    ``gpu``, as run.json records them. An explicit True this machine cannot honour is a ConfigError naming why;
    what "auto" chose is logged unless ``quiet``.
    """
    load_in_4bit, use_vllm = cfg.load_in_4bit, cfg.use_vllm
    precision = precision_for(gpu, cfg.precision)
    notes = []
    if load_in_4bit == AUTO:
        load_in_4bit = auto_load_in_4bit(gpu, cfg.vlm_name)
        if load_in_4bit and not bitsandbytes_importable():
            load_in_4bit = False
            notes.append(f"bitsandbytes is not installed, so the model loads in {precision} (4-bit on this "
                         f"{gpu.memory_gb:g} GiB GPU needs: pip install bitsandbytes)")
        elif load_in_4bit:
            notes.append(f"load_in_4bit=auto: 4-bit QLoRA on this {gpu.memory_gb:g} GiB GPU "
                         f"(under {SMALL_GPU_GB:g} GiB)")
    if load_in_4bit is True and gpu is None:  # said before the data set and model load, not after
        raise ConfigError("load_in_4bit=True needs CUDA (bitsandbytes NF4 kernels), but no CUDA device is available; "
                          "use load_in_4bit='auto' or False, or run on a GPU")
    hub_model = not embedded(cfg.vlm_name) and cfg.init == "pretrained"
    if use_vllm == AUTO:
        use_vllm = auto_use_vllm(gpu, vllm_importable(), load_in_4bit, hub_model)
    elif use_vllm:
        problem = ("no CUDA GPU" if gpu is None else "the GPU's compute capability is below 8.0"
                   if gpu.capability < AMPERE else "the vllm package is not installed"
                   if not vllm_importable() else "the model is loaded in 4 bits" if load_in_4bit
                   else "vLLM loads the model by its hub name (not an embedded model or init='random')"
                   if not hub_model else None)
        if problem:
            raise ConfigError(f"use_vllm=True cannot run here: {problem}; use use_vllm='auto' or False")
    for note in [] if quiet else notes:
        log.info(note)
    return dataclasses.replace(cfg, precision=precision, load_in_4bit=load_in_4bit, use_vllm=use_vllm)


def describe(gpu: Gpu | None) -> dict:
    """What ``"auto"`` picks on this machine for a hub model, for the setup notebook's check: precision, 4-bit, vLLM."""
    load_in_4bit = auto_load_in_4bit(gpu, "qwen2-5-3b")
    return {"precision": precision_for(gpu), "load_in_4bit": load_in_4bit,
            "use_vllm": auto_use_vllm(gpu, vllm_importable(), load_in_4bit, hub_model=True)}


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict:
    """run.json's figures since :func:`reset_peak_memory` (GiB; None on a CPU): ``peak_gpu_memory_gb``, the most
    torch held for tensors, and ``peak_gpu_reserved_gb``, the most its allocator reserved (nearer nvidia-smi)."""
    import torch

    cuda = torch.cuda.is_available()
    return {"peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "peak_gpu_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None}


def release_memory() -> None:
    """Collect unreachable objects, then hand the CUDA cache back (the next run or another process can use it)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_message(cfg, gpu: Gpu | None) -> str:
    """One line after a CUDA out-of-memory error: the card and each knob to lower, with its current value."""
    fixes = [f"lower batch_size ({cfg.batch_size}), num_generations ({cfg.num_generations}), max_completion_length "
             f"({cfg.max_completion_length}) or max_pixels ({cfg.max_pixels})"]
    already = []
    if cfg.load_in_4bit is True:
        already.append("load_in_4bit")
    else:
        fixes.append("set load_in_4bit=True (QLoRA)")
    if not cfg.gradient_checkpointing:
        fixes.append("turn gradient checkpointing on (disable_gradient_checkpointing=False)")
    else:
        already.append("gradient checkpointing")
    return (f"CUDA out of memory on {gpu.describe() if gpu else 'the GPU'}; " + ", or ".join(fixes)
            + (f" ({' and '.join(already)} already on)" if already else ""))


class OutOfMemory(ConfigError):
    """A CUDA out-of-memory error, said as the settings to change (the CLI prints one ``error:`` line)."""
