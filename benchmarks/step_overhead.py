"""Step time of ModeTrainer (each mode) against plain trl.GRPOTrainer, same model, data and seed.

    python benchmarks/step_overhead.py [--rounds 3] [--steps 8] [--completion-length 64]

Runs are interleaved (round 1: GRPOTrainer, grpo, psr, nsr, w-reinforce; round 2: ...) in one process so
drift of the machine hits all alike. Reported: median of TRL's per-step `step_time` (generation, scoring
and the update; first step of each run dropped as warm-up) per 1,000 tokens of that step (the modes
update differently, so they sample completions of different lengths, and a step's cost follows its
tokens), and its ratio to GRPOTrainer. Target <= 1.02.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings

from trl import GRPOConfig, GRPOTrainer

from chartrl_colab.data import load_chart_dataset
from chartrl_colab.models import add_lora, load_model_and_processor
from chartrl_colab.rewards import accuracy_reward, format_reward
from chartrl_colab.trainer import ModeTrainer

LABELS = ("GRPOTrainer", "grpo", "psr", "nsr", "w-reinforce")


def step_times(label: str, dataset, steps: int, completion_length: int) -> list[float]:
    model, processor = load_model_and_processor("tiny", seed=0)
    model = add_lora(model, r=8, alpha=16, dropout=0.0, gradient_checkpointing=False)
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=completion_length, max_steps=steps, logging_steps=1, report_to=[],
                      use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True, remove_unused_columns=False)
    common = dict(model=model, processing_class=processor, reward_funcs=[format_reward, accuracy_reward], args=args,
                  train_dataset=dataset)
    if label == "GRPOTrainer":
        trainer = GRPOTrainer(**common)
    else:
        trainer = ModeTrainer(**common, mode=label, verifier="accuracy_reward", print_mode_lines=False)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "step_time" in entry]
    tokens = [b["num_tokens"] - a["num_tokens"] for a, b in zip(logged, logged[1:])]
    return [1000 * entry["step_time"] / n for entry, n in zip(logged[1:], tokens)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=64)
    opts = parser.parse_args()
    warnings.filterwarnings("ignore")
    dataset = load_chart_dataset("synthetic", subset_size=64, seed=0)
    times = {label: [] for label in LABELS}
    for round_ in range(opts.rounds):
        for label in LABELS:
            times[label] += step_times(label, dataset, opts.steps, opts.completion_length)
        print(f"round {round_ + 1}/{opts.rounds} done", flush=True)
    base = statistics.median(times["GRPOTrainer"])
    print(f"\n{'trainer':<14} {'s per 1k tokens':>16} {'ratio':>7}  (target <= 1.02)")
    for label in LABELS:
        median = statistics.median(times[label])
        print(f"{label:<14} {median:>16.4f} {median / base:>7.3f}")


if __name__ == "__main__":
    main()
