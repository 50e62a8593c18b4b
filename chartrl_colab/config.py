"""Run settings on TRL's own config stack: ``RunConfig`` is TRL's ``GRPOConfig`` and ``ModelConfig`` plus what
TRL lacks (the objective, the chart model and data, the rewards, where runs live), as open-r1's ``GRPOConfig`` is.

Every field is a flag, a YAML recipe key and a notebook parameter (:func:`chartrl_colab.cli.parser_for`; the
original scripts' flags are :data:`ALIASES`, the README's settings list explains them). A ``RunConfig`` is the
user's request (``run.json`` records it, a resume compares it); TRL's own ``__post_init__`` runs on the
``GRPOConfig`` the trainer gets (:func:`chartrl_colab.train.grpo_args`), once the machine has decided the
``"auto"`` settings.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Literal, get_args

from chartrl_colab.errors import ConfigError, at_least, one_of
from chartrl_colab.rewards.package import REWARD_FUNCS
from chartrl_colab.rewards.presets import AUTO, PRESET_NAMES, get_preset, resolve_preset

# Closed sets: the Literal is the field's type (the choices in --help), its values the one list.
Mode = Literal["grpo", "psr", "nsr", "w-reinforce"]
ModelName = Literal["tiny", "tiny-warm", "qwen2-5-3b", "qwen2-5-7b", "qwen2-vl-2b"]
DatasetName = Literal["synthetic", "chart-rvr", "chartqa", "evochart"]
Init = Literal["pretrained", "random"]
GrpoRewards = Literal["verifier", "all"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
MODES = get_args(Mode)
# One line per mode, for banners and the notebook form.
MODE_DESCRIPTIONS = {
    "grpo": "GRPO: group-normalised advantages of the verifier reward (grpo_rewards='all': the summed rewards)",
    "psr": "PSR: learn only from correct samples (advantage +1, the rest dropped); sharpens pass@1",
    "nsr": "NSR: learn only from incorrect samples (advantage -1, the rest dropped); keeps pass@k high",
    "w-reinforce": "W-REINFORCE: correct samples +lambda_psr, incorrect -1; NSR with a little PSR",
}
MODEL_NAMES = get_args(ModelName)
DATASET_NAMES = get_args(DatasetName)
REWARD_NAMES = tuple(REWARD_FUNCS)
INITS = get_args(Init)
LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")  # the normalisations the objectives' masking is written for
# The paper's 1e-6 is for full fine-tuning; TRL's Qwen2.5-VL GRPO LoRA example uses 1e-5.
LEARNING_RATE_LORA, LEARNING_RATE_FULL = 1e-5, 1e-6
PRECISIONS = get_args(Precision)
# 512 image tokens per chart (Qwen-VL: one token per 28x28 pixels): a chart's labels stay legible, and a T4 fits
# 8 rollouts. The hub processor's own bound is 12.8 M pixels, which turns a large chart into thousands of tokens.
DEFAULT_MAX_PIXELS = 512 * 28 * 28
MIN_PIXELS = 56 * 56  # the processors' own lower bound
DEFAULT_BATCH_SIZE = 2  # prompts per device per step
# The original scripts' flags whose TRL name differs: flag -> (TRL field, the value the flag stores is inverted).
ALIASES = {"num_epochs": ("num_train_epochs", False), "use_lora": ("use_peft", False),
           "disable_gradient_checkpointing": ("gradient_checkpointing", True)}
# A setting and the one it is derived from: given together, one error (cli.parser_for).
CONFLICTS = (("batch_size", "per_device_train_batch_size"),)


def setting(text: str, **kwargs):
    """A dataclass field with ``--help`` text ``text`` (HfArgumentParser reads ``metadata["help"]``)."""
    return field(metadata={"help": text}, **kwargs)


def with_default(name: str, value, owner):
    """The dataclass ``owner``'s field ``name`` (its help) with the package's default ``value``."""
    meta = owner.__dataclass_fields__[name].metadata
    return field(default_factory=lambda: list(value), metadata=meta) if isinstance(value, list) else \
        field(default=value, metadata=meta)


# ------------------------------------------------------------------------ what TRL lacks, shared with generate
@dataclass
class SourceArguments:
    """The model and the questions: shared by training and :class:`chartrl_colab.generate.GenerateConfig`."""

    vlm_name: ModelName = setting(f"Model: one of {', '.join(MODEL_NAMES)} ('tiny' is the embedded default); with "
                          "generate --checkpoint, the run's own base model.", default="tiny")
    init: Init = setting(
        "'pretrained' weights, or 'random' to build the architecture from its config.", default="pretrained")
    dataset_name: DatasetName = setting(f"Data set: one of {', '.join(DATASET_NAMES)}.", default="synthetic")
    data_dir: str | None = setting("Local files of a hub data set (see chartrl_colab.data.loading).", default=None)
    seed: int = setting("Seed for data order, sampling and the embedded model.", default=2025)
    subset_size: int | None = setting("Number of prompts taken from the split (none/full/all: the whole split).",
                                    default=100)
    max_pixels: int | None = setting(f"Largest image, in pixels, before it is scaled down (28x28 pixels per image "
                                   f"token; default {DEFAULT_MAX_PIXELS} = 512 tokens; none: the model's own bound; "
                                   "generate: a run's own setting wins).", default=DEFAULT_MAX_PIXELS)


@dataclass
class RewardArguments:
    """The rewards and the verdict: shared by training and generation."""

    rewards: list[str] = setting(f"Reward functions, of {', '.join(REWARD_NAMES)}.",
                               default_factory=lambda: list(REWARD_NAMES))
    verifier: str = setting("The reward that judges correctness.", default="accuracy")
    reward_threshold: float = setting("A sample is correct when its verifier reward >= this.", default=0.5)
    reward_preset: str = setting(f"Reward functions and system prompt: one of {', '.join(PRESET_NAMES)} ('chart-rvr': "
                               "the original Chart-RVR scales, layout and prompt; 'package': bounded rewards, a short "
                               "prompt), or 'auto': package on the embedded synthetic charts, chart-rvr otherwise "
                               "(generate: a checkpoint's own).", default=AUTO)


@dataclass
class ChartArguments(SourceArguments, RewardArguments):
    """The package's own training settings: what TRL's GRPOConfig and ModelConfig lack."""

    mode: Mode = setting(
        f"Training objective: one of {', '.join(MODES)}.", default="grpo")
    lambda_psr: float = setting("W-REINFORCE weight of correct samples (incorrect ones weigh 1).", default=0.1)
    grpo_rewards: GrpoRewards = setting(
        "What grpo's advantage is built from: 'verifier' (default) the verifier reward alone, like the paper's GRPO "
        "baseline and like psr/nsr/w-reinforce, which always learn from it; 'all' the sum of every reward "
        "(Chart-RVR's setting). Sets TRL's reward_weights (1 for the verifier, 0 for the rest) unless they are "
        "given, so it is also what the logged `reward` means in every mode.", default="verifier")
    batch_size: int | None = setting(
        f"Prompts per device per step (default {DEFAULT_BATCH_SIZE}); each step trains on batch_size * "
        "num_generations completions, TRL's per_device_train_batch_size (give one of the two).", default=None)
    precision: Precision = setting(
        "Weights and autocast: 'auto' (bf16 at compute capability >= 8.0, fp16 below, fp32 on a CPU), bf16, fp16 "
        "or fp32; sets TRL's bf16/fp16.", default="auto")
    load_in_4bit: bool | str = setting("QLoRA: load the base model in 4 bits (needs CUDA and bitsandbytes); 'auto': "
                                     "on a GPU under 24 GiB (a T4), for the hub models.", default="auto")
    use_vllm: bool | str = setting("Sample rollouts with vLLM (TRL's colocate mode); 'auto': when vllm is installed, "
                                 "the GPU has compute capability >= 8.0 and the model is not 4-bit.", default="auto")
    output_root: str = setting("Folder holding run directories (default: $CHARTRL_ROOT; in Colab with Drive mounted "
                             "/content/drive/MyDrive/chartrl/runs; else ./runs).", default="")
    resume: str = setting("'auto': continue from the run directory's newest complete checkpoint; 'never'; or a "
                        "checkpoint folder.", default="auto")
    staging_dir: str = setting("Local folder the Trainer writes checkpoints to, each complete one then copied to the "
                             "run dir in the background. Used when set, and always when output_root is on Google "
                             "Drive (default there: a folder under the system temp dir).", default="")


# ---------------------------------------------------------------------------------------------- the run
def __getattr__(name: str):
    """``RunConfig``, built on first use: TRL's GRPOConfig imports torch, the names above need not."""
    if name != "RunConfig":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["RunConfig"] = _run_config_class()
    return globals()["RunConfig"]


def _run_config_class():
    import trl

    @dataclass
    class RunConfig(ChartArguments, trl.GRPOConfig, trl.ModelConfig):
        """One training run: TRL's GRPOConfig and ModelConfig fields plus :class:`ChartArguments`; the request as
        given (validated, ``"auto"``s kept)."""

        # TRL's fields with the paper's or the original scripts' defaults (TRL's help text).
        learning_rate: float | None = setting(
            f"AdamW learning rate (none: {LEARNING_RATE_LORA:g} with LoRA, {LEARNING_RATE_FULL:g} without; the paper's "
            f"{LEARNING_RATE_FULL:g} is for full fine-tuning).", default=None)
        num_train_epochs: float = with_default("num_train_epochs", 1.0, trl.GRPOConfig)
        per_device_train_batch_size: int | None = setting(
            "Completions per device per step (TRL's count); default batch_size * num_generations.", default=None)
        save_steps: float = with_default("save_steps", 50, trl.GRPOConfig)
        save_total_limit: int | None = with_default("save_total_limit", 3, trl.GRPOConfig)
        logging_first_step: bool = with_default("logging_first_step", True, trl.GRPOConfig)
        report_to: list[str] = setting("Loggers: tensorboard, wandb (offline unless logged in), or none.",
                                     default_factory=lambda: ["tensorboard", "wandb"])
        # The rewards read the gold columns.
        remove_unused_columns: bool | None = with_default("remove_unused_columns", False, trl.GRPOConfig)
        use_peft: bool = with_default("use_peft", True, trl.ModelConfig)

        def __post_init__(self) -> None:
            # TRL's own __post_init__ runs on the trainer's GRPOConfig (train.grpo_args), not on the request.
            self.reward_preset = resolve_preset(self.reward_preset, self.dataset_name)  # run.json records the real one
            self.rewards = list(self.rewards) if isinstance(self.rewards, (list, tuple)) else self.rewards
            self.report_to = [r for r in ([self.report_to] if isinstance(self.report_to, str) else self.report_to or [])
                              if r != "none"]
            if self.learning_rate is None:
                self.learning_rate = LEARNING_RATE_LORA if self.use_peft else LEARNING_RATE_FULL
            self.batch_size = prompts_per_device(self.batch_size, self.per_device_train_batch_size,
                                                 self.num_generations)
            self.per_device_train_batch_size = None  # derived on the trainer's args, so a copy may change either
            validate(self)

        # The original scripts' names of TRL's fields, read-only (the flags are aliases: cli.parser_for).
        num_epochs = property(lambda self: self.num_train_epochs)
        use_lora = property(lambda self: self.use_peft)
        disable_gradient_checkpointing = property(lambda self: not self.gradient_checkpointing)

        @property
        def run_name(self) -> str:
            """``{mode}-{model}-{dataset}-{size}-{seed}``: names the run directory, TensorBoard and wandb runs."""
            size = self.subset_size if self.subset_size is not None else "full"
            return f"{self.mode}-{self.vlm_name}-{self.dataset_name}-{size}-{self.seed}"

        @run_name.setter
        def run_name(self, value) -> None:
            """TrainingArguments' ``run_name`` field: derived, so a given one is dropped (the parser refuses it)."""

        @property
        def run_dir(self) -> str:
            """``{output_root}/{run_name}`` (an empty root: :func:`chartrl_colab.runs.storage.with_output_root`)."""
            return os.path.join(self.output_root, self.run_name)

        def to_dict(self) -> dict:
            """TrainingArguments' JSON form, but a token not given stays None: ``RunConfig(**cfg.to_dict()) == cfg``."""
            return {k: None if k.endswith("_token") and getattr(self, k) is None else v
                    for k, v in super().to_dict().items()}

    RunConfig.__qualname__ = "RunConfig"  # pickled and printed as chartrl_colab.config.RunConfig
    RunConfig.aliases, RunConfig.conflicts = ALIASES, CONFLICTS  # read by cli.parser_for
    return RunConfig


def prompts_per_device(batch_size, per_device_train_batch_size, num_generations) -> int:
    """Prompts per device per step from either count (completions = prompts * num_generations).

    >>> prompts_per_device(None, None, 8), prompts_per_device(None, 16, 8), prompts_per_device(2, 16, 8)
    (2, 2, 2)
    """
    if per_device_train_batch_size is None:
        return DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if not isinstance(num_generations, int) or num_generations < 1:
        return batch_size if batch_size is not None else per_device_train_batch_size
    prompts, rest = divmod(per_device_train_batch_size, num_generations)
    if rest or prompts < 1 or batch_size not in (None, prompts):
        raise ConfigError(f"per_device_train_batch_size={per_device_train_batch_size!r} is not valid with "
                          f"num_generations={num_generations} and batch_size={batch_size!r}; give batch_size "
                          "(prompts per device) alone, or a multiple of num_generations")
    return prompts


def check_rewards(rewards, verifier: str, reward_threshold, preset: str = "package") -> None:
    """The reward names, the verifier among them, a threshold inside the verifier's range under ``preset``."""
    if isinstance(rewards, str):
        raise ConfigError(f"rewards={rewards!r} is not valid; give a list of reward names (e.g. ['accuracy'])")
    for name in rewards:
        one_of("reward", name, REWARD_NAMES)
    if not rewards:
        raise ConfigError(f"rewards is empty; choose at least one of: {', '.join(REWARD_NAMES)}")
    if len(set(rewards)) != len(rewards):
        twice = sorted({r for r in rewards if list(rewards).count(r) > 1})
        raise ConfigError(f"rewards={' '.join(rewards)!r} names {', '.join(twice)} twice; give each reward once")
    if verifier not in rewards:
        raise ConfigError(f"verifier={verifier!r} is not among the rewards; choose one of: {', '.join(rewards)}")
    if not isinstance(reward_threshold, (int, float)) or not math.isfinite(reward_threshold):
        raise ConfigError(f"reward_threshold={reward_threshold!r} is not valid; it must be a finite number (e.g. 0.5)")
    low, high = get_preset(preset).ranges.get(verifier, (-math.inf, math.inf))
    if not low < reward_threshold <= high:
        raise ConfigError(f"reward_threshold={reward_threshold!r} is not valid for verifier {verifier!r}, whose "
                          f"rewards lie in [{low:g}, {high:g}]; choose a threshold > {low:g} and <= {high:g} "
                          "(e.g. 0.5), else every sample (or none) counts as correct")


def check_whole_numbers(cfg, names) -> None:
    """Each named field is a whole number >= 1."""
    for name in names:
        at_least(name, getattr(cfg, name), 1)
        if int(getattr(cfg, name)) != getattr(cfg, name):
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not valid; it must be a whole number >= 1")


def check_source(cfg) -> None:
    """:class:`SourceArguments`' values."""
    one_of("vlm_name", cfg.vlm_name, MODEL_NAMES)
    one_of("dataset_name", cfg.dataset_name, DATASET_NAMES)
    one_of("init", cfg.init, INITS)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} is not valid; it must be a whole number (e.g. 2025)")
    if cfg.subset_size is not None:
        at_least("subset_size", cfg.subset_size, 1, " (or None for the whole set)")
    if cfg.max_pixels is not None:
        check_whole_numbers(cfg, ("max_pixels",))
        at_least("max_pixels", cfg.max_pixels, MIN_PIXELS, " (or None for the model's own bound)")


def check_gpu_share(cfg) -> None:
    """``vllm_gpu_memory_utilization`` is a share of the card."""
    share = cfg.vllm_gpu_memory_utilization
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.05 <= share <= 1:
        raise ConfigError(f"vllm_gpu_memory_utilization={share!r} is not valid; it is a share of GPU memory, "
                          "between 0.05 and 1 (e.g. 0.3)")


# TRL ModelConfig fields the package reads under another name, or does not apply: refused when set, not ignored.
MODEL_CONFIG_ELSEWHERE = {
    "model_name_or_path": "give the model as vlm_name (a hub id, a local folder or an embedded name)",
    "dtype": "the dtype follows precision ('auto', 'bf16', 'fp16', 'fp32')",
    "load_in_8bit": "8-bit loading is not supported; load_in_4bit loads 4-bit NF4",
    "bnb_4bit_quant_type": "4-bit loading is NF4 (load_in_4bit)",
    "use_bnb_nested_quant": "4-bit loading uses nested quantization as the package sets it (load_in_4bit)",
    "bnb_4bit_quant_storage": "4-bit loading stores as the package sets it (load_in_4bit)",
    "model_revision": "the model loads at the hub's default revision",
    "attn_implementation": "the model loads with transformers' default attention",
    "lora_target_parameters": "LoRA targets modules (lora_target_modules)",
    "lora_task_type": "the LoRA adapter is a CAUSAL_LM one",
}


def check_model_config(cfg) -> None:
    """Refuse a field of :data:`MODEL_CONFIG_ELSEWHERE` set away from TRL's default."""
    import trl

    defaults = {f.name: f.default for f in dataclasses.fields(trl.ModelConfig)}
    for name, instead in MODEL_CONFIG_ELSEWHERE.items():
        if getattr(cfg, name) != defaults[name]:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not used by this package; {instead}")


def validate(cfg) -> None:
    """Raise ConfigError for the first bad setting (TRL checks its own again on the trainer's args)."""
    one_of("mode", cfg.mode, MODES)
    check_model_config(cfg)
    check_source(cfg)
    one_of("loss_type", cfg.loss_type, LOSS_TYPES)
    one_of("grpo_rewards", cfg.grpo_rewards, get_args(GrpoRewards))
    one_of("reward_preset", cfg.reward_preset, PRESET_NAMES)
    check_rewards(cfg.rewards, cfg.verifier, cfg.reward_threshold, cfg.reward_preset)
    at_least("lambda_psr", cfg.lambda_psr, 0)
    # TRL groups each prompt's completions, so a group needs two samples to have a baseline at all.
    at_least("num_generations", cfg.num_generations, 2, " (GRPO compares completions within a group; try 4 or 8)")
    check_whole_numbers(cfg, ("batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps",
                              "max_completion_length", "lora_r", "lora_alpha", "num_iterations"))
    optional = ("steps_per_generation", "save_total_limit")
    check_whole_numbers(cfg, [name for name in optional if getattr(cfg, name) is not None])
    at_least("num_epochs", cfg.num_train_epochs, 0)
    if cfg.num_train_epochs == 0:
        raise ConfigError("num_epochs=0 is not valid; it must be > 0 (e.g. 1), or train a fixed number of steps "
                          "with max_steps")
    if cfg.max_steps != -1:
        at_least("max_steps", cfg.max_steps, 1, " (or -1 to run the epochs)")
    for name in ("learning_rate", "temperature", "epsilon", "beta", "lora_dropout"):
        at_least(name, getattr(cfg, name), 0)
    if cfg.lora_dropout >= 1:
        raise ConfigError(f"lora_dropout={cfg.lora_dropout!r} is not valid; it is a probability: >= 0 and < 1 "
                          "(e.g. 0.05)")
    if cfg.temperature == 0:
        raise ConfigError("temperature=0 is not valid; sampling needs a temperature > 0 (the paper uses 1.0)")
    for logger in cfg.report_to:
        one_of("report_to", logger, ("tensorboard", "wandb", "none"))
    one_of("precision", cfg.precision, PRECISIONS)
    if cfg.bf16 or cfg.fp16:
        raise ConfigError("bf16/fp16 are set from precision; give precision='bf16' or 'fp16' instead")
    for name in ("load_in_4bit", "use_vllm"):
        if getattr(cfg, name) not in ("auto", True, False) or not isinstance(getattr(cfg, name), (bool, str)):
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not valid; choose 'auto', True or False")
    check_gpu_share(cfg)
    if cfg.resume not in ("auto", "never") and not os.path.isdir(cfg.resume):
        raise ConfigError(f"resume={cfg.resume!r} is not valid; choose 'auto', 'never' or an existing checkpoint "
                          "folder")

