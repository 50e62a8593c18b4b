"""Run settings: one dataclass, its defaults, validation and the run name.

Field names are the CLI flags with ``-`` for ``_`` (``--reward-threshold`` <-> ``reward_threshold``).
Defaults follow the paper's recipe (lr 1e-6, 8 rollouts, temperature 1.0, PPO clip 0.2, no KL, token-mean
loss) and the seed project's logging/checkpoint cadence (log every 10 steps and the first, checkpoint
every 50, keep 3, safetensors). Pure: no I/O and nothing heavy, so the notebook form and the CLI can validate
before loading torch.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from chartrl_colab.errors import ConfigError, at_least, one_of

MODES = ("grpo", "psr", "nsr", "w-reinforce")
# One line per mode, for banners and the notebook form.
MODE_DESCRIPTIONS = {
    "grpo": "GRPO: group-normalised advantages over the summed rewards (TRL's objective)",
    "psr": "PSR: learn only from correct samples (advantage +1, the rest dropped); sharpens pass@1",
    "nsr": "NSR: learn only from incorrect samples (advantage -1, the rest dropped); keeps pass@k high",
    "w-reinforce": "W-REINFORCE: correct samples +lambda_psr, incorrect -1; NSR with a little PSR",
}
MODEL_NAMES = ("tiny", "tiny-warm", "qwen2-5-3b", "qwen2-5-7b", "qwen2-vl-2b")
DATASET_NAMES = ("synthetic", "chart-rvr", "chartqa", "evochart")
REWARD_NAMES = ("format", "accuracy", "length", "tags", "chart_type", "table", "reasoning")
INITS = ("pretrained", "random")
LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class RunConfig:
    # What to train
    mode: str = _help(f"Training objective: one of {', '.join(MODES)}.", default="grpo")
    vlm_name: str = _help(f"Model: one of {', '.join(MODEL_NAMES)} ('tiny' is the embedded default).", default="tiny")
    dataset_name: str = _help(f"Data set: one of {', '.join(DATASET_NAMES)}.", default="synthetic")
    init: str = _help("'pretrained' weights, or 'random' to build the architecture from its config.", default="pretrained")
    data_dir: str | None = _help("Local files of a hub data set (see chartrl_colab.data).", default=None)
    seed: int = _help("Seed for data order, sampling and the embedded model.", default=2025)
    subset_size: int | None = _help("Number of training prompts (None: the whole set).", default=100)

    # The objective
    reward_threshold: float = _help("A sample is correct when its verifier reward >= this.", default=0.5)
    lambda_psr: float = _help("W-REINFORCE weight of correct samples (incorrect ones weigh 1).", default=0.1)
    rewards: tuple[str, ...] = _help(f"Reward functions, of {', '.join(REWARD_NAMES)}.", default=REWARD_NAMES)
    verifier: str = _help("The reward that judges correctness.", default="accuracy")

    # Optimisation (the paper's recipe)
    num_epochs: float = _help("Passes over the training prompts.", default=1.0)
    max_steps: int = _help("Stop after this many optimizer steps (-1: run the epochs).", default=-1)
    batch_size: int = _help("Prompts per device per step; each step trains on batch_size * num_generations completions.", default=2)
    num_generations: int = _help("Completions sampled per prompt (the group).", default=8)
    gradient_accumulation_steps: int = _help("Steps of generation batches accumulated per update.", default=1)
    learning_rate: float = _help("AdamW learning rate.", default=1e-6)
    temperature: float = _help("Sampling temperature of the rollouts.", default=1.0)
    max_completion_length: int = _help("Longest completion sampled, in tokens.", default=512)
    epsilon: float = _help("PPO clipping range.", default=0.2)
    beta: float = _help("KL coefficient (0: no reference model).", default=0.0)
    loss_type: str = _help(f"TRL loss normalisation, one of {', '.join(LOSS_TYPES)}.", default="dapo")

    # Model adaptation
    use_lora: bool = _help("Train a LoRA adapter instead of all weights.", default=True)
    lora_r: int = _help("LoRA rank.", default=16)
    lora_alpha: int = _help("LoRA alpha.", default=32)
    lora_dropout: float = _help("LoRA dropout.", default=0.05)
    load_in_4bit: bool = _help("QLoRA: load the base model in 4 bits (needs CUDA and bitsandbytes).", default=False)
    disable_gradient_checkpointing: bool = _help("Turn gradient checkpointing off (faster, more memory).", default=False)

    # Where things go, how often
    output_root: str = _help("Folder holding run directories (default: $CHARTRL_ROOT; in Colab with Drive mounted "
                             "/content/drive/MyDrive/chartrl/runs; else ./runs).", default="")
    resume: str = _help("'auto': continue from the run directory's newest complete checkpoint; 'never'; or a "
                        "checkpoint folder.", default="auto")
    staging_dir: str = _help("Local folder the Trainer writes checkpoints to, each complete one then copied to the "
                             "run dir in the background. Used when set, and always when output_root is on Google "
                             "Drive (default there: a folder under the system temp dir).", default="")
    logging_steps: int = _help("Log metrics every N steps (the first step is always logged).", default=10)
    save_steps: int = _help("Checkpoint every N steps.", default=50)
    save_total_limit: int = _help("Checkpoints kept.", default=3)
    report_to: tuple[str, ...] = _help("Loggers: tensorboard, wandb (offline unless logged in), or none.",
                                       default=("tensorboard", "wandb"))

    def __post_init__(self) -> None:
        self.rewards = tuple(self.rewards)
        self.report_to = tuple(r for r in self.report_to if r != "none")
        validate(self)

    @property
    def run_name(self) -> str:
        size = self.subset_size if self.subset_size is not None else "full"
        return f"{self.mode}-{self.vlm_name}-{self.dataset_name}-{size}-{self.seed}"

    @property
    def run_dir(self) -> str:
        """``{output_root}/{run_name}``; an empty output_root (the default) is resolved by
        :func:`chartrl_colab.storage.with_output_root` before a run starts."""
        return os.path.join(self.output_root, self.run_name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_rewards(rewards, verifier: str, reward_threshold) -> None:
    """The reward names, the verifier among them, a finite threshold: shared by training and generation."""
    for name in rewards:
        one_of("reward", name, REWARD_NAMES)
    if not rewards:
        raise ConfigError(f"rewards is empty; choose at least one of: {', '.join(REWARD_NAMES)}")
    if verifier not in rewards:
        raise ConfigError(f"verifier={verifier!r} is not among the rewards; choose one of: {', '.join(rewards)}")
    if not isinstance(reward_threshold, (int, float)) or not math.isfinite(reward_threshold):
        raise ConfigError(f"reward_threshold={reward_threshold!r} is not valid; it must be a finite number (e.g. 0.5)")


def check_whole_numbers(cfg, names) -> None:
    """Each named field is a whole number >= 1."""
    for name in names:
        at_least(name, getattr(cfg, name), 1)
        if int(getattr(cfg, name)) != getattr(cfg, name):
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not valid; it must be a whole number >= 1")


def validate(cfg: RunConfig) -> None:
    """Raise ConfigError for the first bad setting."""
    one_of("mode", cfg.mode, MODES)
    one_of("vlm_name", cfg.vlm_name, MODEL_NAMES)
    one_of("dataset_name", cfg.dataset_name, DATASET_NAMES)
    one_of("init", cfg.init, INITS)
    one_of("loss_type", cfg.loss_type, LOSS_TYPES)
    check_rewards(cfg.rewards, cfg.verifier, cfg.reward_threshold)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} is not valid; it must be a whole number (e.g. 2025)")
    at_least("lambda_psr", cfg.lambda_psr, 0)
    # TRL groups each prompt's completions, so a group needs two samples to have a baseline at all.
    at_least("num_generations", cfg.num_generations, 2, " (GRPO compares completions within a group; try 4 or 8)")
    check_whole_numbers(cfg, ("batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps",
                              "save_total_limit", "max_completion_length", "lora_r"))
    if cfg.subset_size is not None:
        at_least("subset_size", cfg.subset_size, 1, " (or None for the whole set)")
    at_least("num_epochs", cfg.num_epochs, 0)
    if cfg.max_steps != -1:
        at_least("max_steps", cfg.max_steps, 1, " (or -1 to run the epochs)")
    for name in ("learning_rate", "temperature", "epsilon", "beta", "lora_dropout"):
        at_least(name, getattr(cfg, name), 0)
    if cfg.temperature == 0:
        raise ConfigError("temperature=0 is not valid; sampling needs a temperature > 0 (the paper uses 1.0)")
    for logger in cfg.report_to:
        one_of("report_to", logger, ("tensorboard", "wandb", "none"))
    if cfg.resume not in ("auto", "never") and not os.path.isdir(cfg.resume):
        raise ConfigError(f"resume={cfg.resume!r} is not valid; choose 'auto', 'never' or an existing checkpoint folder")
