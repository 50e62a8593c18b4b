"""Run settings: one dataclass, its defaults, validation and the run name.

Field names are the CLI flags with ``-`` for ``_`` (``--reward-threshold`` <-> ``reward_threshold``).
Defaults follow the paper's recipe (8 rollouts, temperature 1.0, PPO clip 0.2, no KL, token-mean loss; lr
1e-6 for full fine-tuning, 1e-5 with LoRA as in TRL's Qwen2.5-VL GRPO LoRA example) and the seed project's logging/checkpoint cadence (log every 10 steps and the first, checkpoint
every 50, keep 3, safetensors). Pure: no I/O and nothing heavy, so the notebook form and the CLI can validate
before loading torch.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from chartrl_colab.errors import ConfigError, at_least, one_of
from chartrl_colab.rewards.package import REWARD_FUNCS
from chartrl_colab.rewards.presets import AUTO, PRESET_NAMES, get_preset, resolve_preset

MODES = ("grpo", "psr", "nsr", "w-reinforce")
# One line per mode, for banners and the notebook form.
MODE_DESCRIPTIONS = {
    "grpo": "GRPO: group-normalised advantages of the verifier reward (grpo_rewards='all': the summed rewards)",
    "psr": "PSR: learn only from correct samples (advantage +1, the rest dropped); sharpens pass@1",
    "nsr": "NSR: learn only from incorrect samples (advantage -1, the rest dropped); keeps pass@k high",
    "w-reinforce": "W-REINFORCE: correct samples +lambda_psr, incorrect -1; NSR with a little PSR",
}
MODEL_NAMES = ("tiny", "tiny-warm", "qwen2-5-3b", "qwen2-5-7b", "qwen2-vl-2b")
DATASET_NAMES = ("synthetic", "chart-rvr", "chartqa", "evochart")
REWARD_NAMES = tuple(REWARD_FUNCS)  # format accuracy length tags chart_type table reasoning: the registry decides
INITS = ("pretrained", "random")
LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")
GRPO_REWARDS = ("verifier", "all")
# The paper's 1e-6 is for full fine-tuning; TRL's Qwen2.5-VL GRPO LoRA example uses 1e-5.
LEARNING_RATE_LORA, LEARNING_RATE_FULL = 1e-5, 1e-6
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
TRI_STATE = ("auto", True, False)  # settings whose "auto" the GPU decides (chartrl_colab.models.device)
# 512 image tokens per chart (Qwen-VL: one token per 28x28 pixels): a chart's labels stay legible, and a T4 fits
# 8 rollouts. The hub processor's own bound is 12.8 M pixels, which turns a large chart into thousands of tokens.
DEFAULT_MAX_PIXELS = 512 * 28 * 28
MIN_PIXELS = 56 * 56  # the processors' own lower bound


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class RunConfig:
    # What to train
    mode: str = _help(f"Training objective: one of {', '.join(MODES)}.", default="grpo")
    vlm_name: str = _help(f"Model: one of {', '.join(MODEL_NAMES)} ('tiny' is the embedded default).", default="tiny")
    dataset_name: str = _help(f"Data set: one of {', '.join(DATASET_NAMES)}.", default="synthetic")
    init: str = _help("'pretrained' weights, or 'random' to build the architecture from its config.", default="pretrained")
    data_dir: str | None = _help("Local files of a hub data set (see chartrl_colab.data.loading).", default=None)
    seed: int = _help("Seed for data order, sampling and the embedded model.", default=2025)
    subset_size: int | None = _help("Number of training prompts (None: the whole set).", default=100)

    # The objective
    reward_threshold: float = _help("A sample is correct when its verifier reward >= this.", default=0.5)
    lambda_psr: float = _help("W-REINFORCE weight of correct samples (incorrect ones weigh 1).", default=0.1)
    rewards: tuple[str, ...] = _help(f"Reward functions, of {', '.join(REWARD_NAMES)}.", default=REWARD_NAMES)
    verifier: str = _help("The reward that judges correctness.", default="accuracy")
    reward_preset: str = _help(f"Reward functions and system prompt: one of {', '.join(PRESET_NAMES)} ('chart-rvr': the "
                               "original Chart-RVR scales, layout and prompt; 'package': bounded rewards, a short "
                               "prompt), or 'auto': package on the embedded synthetic charts, chart-rvr otherwise.",
                               default=AUTO)
    grpo_rewards: str = _help(
        f"What grpo's advantage is built from, one of {', '.join(GRPO_REWARDS)}: 'verifier' (default) the verifier "
        "reward alone, like the paper's GRPO baseline and like psr/nsr/w-reinforce, which always learn from it; "
        "'all' the sum of every reward (Chart-RVR's setting). Sets TRL's reward_weights (1 for the verifier, 0 for "
        "the rest), so it is also what the logged `reward` means in every mode; every reward is logged either way.",
        default="verifier")

    # Optimisation (the paper's recipe)
    num_epochs: float = _help("Passes over the training prompts.", default=1.0)
    max_steps: int = _help("Stop after this many optimizer steps (-1: run the epochs).", default=-1)
    batch_size: int = _help("Prompts per device per step; each step trains on batch_size * num_generations completions.", default=2)
    num_generations: int = _help("Completions sampled per prompt (the group).", default=8)
    gradient_accumulation_steps: int = _help("Steps of generation batches accumulated per update.", default=1)
    learning_rate: float | None = _help(
        f"AdamW learning rate (None: {LEARNING_RATE_LORA:g} with LoRA, {LEARNING_RATE_FULL:g} without; the paper's "
        f"{LEARNING_RATE_FULL:g} is for full fine-tuning).", default=None)
    steps_per_generation: int | None = _help(
        "Optimizer micro-steps each generation batch is split over (TRL's steps_per_generation; None: "
        "gradient_accumulation_steps, i.e. one optimizer step per generation batch, where the PPO ratio is 1 and "
        "the update is plain REINFORCE). Above gradient_accumulation_steps, one rollout makes several clipped "
        "mini-batch updates, as in the paper.", default=None)
    num_iterations: int = _help("Optimisation passes over each generation batch (TRL's num_iterations, the "
                                "GRPO paper's mu); above 1 the later passes are clipped off-policy updates.", default=1)
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
    load_in_4bit: bool | str = _help("QLoRA: load the base model in 4 bits (needs CUDA and bitsandbytes); 'auto': "
                                     "on a GPU under 24 GiB (a T4), for the hub models.", default="auto")
    disable_gradient_checkpointing: bool = _help("Turn gradient checkpointing off (faster, more memory).", default=False)

    # GPU: precision, memory, sampling (chartrl_colab.models.device decides the "auto"s from the card)
    precision: str = _help("Weights and autocast: 'auto' (bf16 at compute capability >= 8.0, fp16 below, fp32 on "
                           "a CPU), bf16, fp16 or fp32.", default="auto")
    max_pixels: int | None = _help(f"Largest image, in pixels, before it is scaled down (28x28 pixels per image token; "
                                   f"default {DEFAULT_MAX_PIXELS} = 512 tokens; None: the model's own bound).",
                                   default=DEFAULT_MAX_PIXELS)
    use_vllm: bool | str = _help("Sample rollouts with vLLM (TRL's colocate mode); 'auto': when vllm is installed, the "
                                 "GPU has compute capability >= 8.0 and the model is not 4-bit.", default="auto")
    vllm_gpu_memory_utilization: float = _help("Share of GPU memory vLLM takes for its weights and KV cache "
                                                "(colocate mode; the rest trains).", default=0.3)

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
        self.reward_preset = resolve_preset(self.reward_preset, self.dataset_name)  # run.json records the real one
        self.rewards = tuple(self.rewards)
        self.report_to = tuple(r for r in self.report_to if r != "none")
        if self.learning_rate is None:
            self.learning_rate = LEARNING_RATE_LORA if self.use_lora else LEARNING_RATE_FULL
        validate(self)

    @property
    def run_name(self) -> str:
        size = self.subset_size if self.subset_size is not None else "full"
        return f"{self.mode}-{self.vlm_name}-{self.dataset_name}-{size}-{self.seed}"

    @property
    def run_dir(self) -> str:
        """``{output_root}/{run_name}``; an empty output_root (the default) is resolved by
        :func:`chartrl_colab.runs.storage.with_output_root` before a run starts."""
        return os.path.join(self.output_root, self.run_name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_rewards(rewards, verifier: str, reward_threshold, preset: str = "package") -> None:
    """The reward names, the verifier among them, a threshold inside the verifier's range under ``preset``:
    shared by training and generation."""
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
        raise ConfigError(f"reward_threshold={reward_threshold!r} is not valid for verifier {verifier!r}, whose rewards "
                          f"lie in [{low:g}, {high:g}]; choose a threshold > {low:g} and <= {high:g} (e.g. 0.5), "
                          "else every sample (or none) counts as correct")


def check_whole_numbers(cfg, names) -> None:
    """Each named field is a whole number >= 1."""
    for name in names:
        at_least(name, getattr(cfg, name), 1)
        if int(getattr(cfg, name)) != getattr(cfg, name):
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not valid; it must be a whole number >= 1")


def check_gpu_knobs(cfg) -> None:
    """``max_pixels`` a whole number of at least the processors' minimum (or None), ``vllm_gpu_memory_utilization``
    a share of the card: shared by training and generation."""
    if cfg.max_pixels is not None:
        check_whole_numbers(cfg, ("max_pixels",))
        at_least("max_pixels", cfg.max_pixels, MIN_PIXELS, " (or None for the model's own bound)")
    share = cfg.vllm_gpu_memory_utilization
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.05 <= share <= 1:
        raise ConfigError(f"vllm_gpu_memory_utilization={share!r} is not valid; it is a share of GPU memory, "
                          "between 0.05 and 1 (e.g. 0.3)")


def validate(cfg: RunConfig) -> None:
    """Raise ConfigError for the first bad setting."""
    one_of("mode", cfg.mode, MODES)
    one_of("vlm_name", cfg.vlm_name, MODEL_NAMES)
    one_of("dataset_name", cfg.dataset_name, DATASET_NAMES)
    one_of("init", cfg.init, INITS)
    one_of("loss_type", cfg.loss_type, LOSS_TYPES)
    one_of("grpo_rewards", cfg.grpo_rewards, GRPO_REWARDS)
    one_of("reward_preset", cfg.reward_preset, PRESET_NAMES)
    check_rewards(cfg.rewards, cfg.verifier, cfg.reward_threshold, cfg.reward_preset)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} is not valid; it must be a whole number (e.g. 2025)")
    at_least("lambda_psr", cfg.lambda_psr, 0)
    # TRL groups each prompt's completions, so a group needs two samples to have a baseline at all.
    at_least("num_generations", cfg.num_generations, 2, " (GRPO compares completions within a group; try 4 or 8)")
    check_whole_numbers(cfg, ("batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps",
                              "save_total_limit", "max_completion_length", "lora_r", "num_iterations"))
    if cfg.steps_per_generation is not None:
        check_whole_numbers(cfg, ("steps_per_generation",))
    if cfg.subset_size is not None:
        at_least("subset_size", cfg.subset_size, 1, " (or None for the whole set)")
    at_least("num_epochs", cfg.num_epochs, 0)
    if cfg.num_epochs == 0:
        raise ConfigError("num_epochs=0 is not valid; it must be > 0 (e.g. 1), or train a fixed number of steps "
                          "with max_steps")
    if cfg.max_steps != -1:
        at_least("max_steps", cfg.max_steps, 1, " (or -1 to run the epochs)")
    for name in ("learning_rate", "temperature", "epsilon", "beta", "lora_dropout"):
        at_least(name, getattr(cfg, name), 0)
    if cfg.lora_dropout >= 1:
        raise ConfigError(f"lora_dropout={cfg.lora_dropout!r} is not valid; it is a probability: >= 0 and < 1 "
                          "(e.g. 0.05)")
    check_whole_numbers(cfg, ("lora_alpha",))
    if cfg.temperature == 0:
        raise ConfigError("temperature=0 is not valid; sampling needs a temperature > 0 (the paper uses 1.0)")
    for logger in cfg.report_to:
        one_of("report_to", logger, ("tensorboard", "wandb", "none"))
    one_of("precision", cfg.precision, PRECISIONS)
    for name in ("load_in_4bit", "use_vllm"):
        if getattr(cfg, name) not in TRI_STATE or not isinstance(getattr(cfg, name), (bool, str)):
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not valid; choose 'auto', True or False")
    check_gpu_knobs(cfg)
    if cfg.resume not in ("auto", "never") and not os.path.isdir(cfg.resume):
        raise ConfigError(f"resume={cfg.resume!r} is not valid; choose 'auto', 'never' or an existing checkpoint folder")
