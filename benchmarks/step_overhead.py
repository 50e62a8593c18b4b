"""Step time of ModeTrainer (each mode) against plain trl.GRPOTrainer, same model, data and seed.

    python benchmarks/step_overhead.py [--rounds 3] [--steps 8] [--completion-length 64]

Runs are interleaved (round 1: GRPOTrainer, grpo, psr, nsr, w-reinforce; round 2 the same order rotated by
one; ...) in one process so drift of the machine hits all alike. Reported: median of TRL's per-step `step_time`
(generation, scoring and the update; first step of each run dropped as warm-up) per 1,000 tokens of that step
(the modes update differently, so they sample completions of different lengths, and a step's cost follows its
tokens), and its ratio to GRPOTrainer. Target <= 1.02.

On a small CPU the run-to-run spread of that ratio is a few percent, so the script also measures the
hook itself: the time ModeTrainer spends in `_generate_and_score_completions` and `_compute_loss` beyond
TRL's own (timed around both), as a fraction of the step time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections import defaultdict

from trl import GRPOConfig, GRPOTrainer

from chartrl_colab.data.loading import load_chart_dataset
from chartrl_colab.models.loading import add_lora, load_model_and_processor
from chartrl_colab.rewards.package import accuracy_reward, format_reward
from chartrl_colab.training.trainer import ModeTrainer

LABELS = ("GRPOTrainer", "grpo", "psr", "nsr", "w-reinforce")
SPENT = defaultdict(float)  # seconds inside each timed method, per label


def timed(cls, name: str, key: str) -> None:
    """Wrap cls.name so the seconds spent in it add up under SPENT[(label, key)]."""
    inner = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(self, *args, **kwargs)
        finally:
            SPENT[(self._bench_label, key)] += time.perf_counter() - start

    setattr(cls, name, wrapper)


for method in ("_generate_and_score_completions", "_compute_loss"):
    timed(GRPOTrainer, method, "trl")
    timed(ModeTrainer, method, "mode")


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
    trainer._bench_label = label
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "step_time" in entry]
    tokens = [b["num_tokens"] - a["num_tokens"] for a, b in zip(logged, logged[1:])]
    SPENT[(label, "steps")] += sum(entry["step_time"] for entry in logged)
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
        # Rotate the order each round so no trainer always runs first (warm caches, allocator state).
        for label in LABELS[round_ % len(LABELS):] + LABELS[:round_ % len(LABELS)]:
            times[label] += step_times(label, dataset, opts.steps, opts.completion_length)
        print(f"round {round_ + 1}/{opts.rounds} done", flush=True)
    base = statistics.median(times["GRPOTrainer"])
    print(f"\n{'trainer':<14} {'s per 1k tokens':>16} {'ratio':>7}  (target <= 1.02)")
    for label in LABELS:
        median = statistics.median(times[label])
        print(f"{label:<14} {median:>16.4f} {median / base:>7.3f}")
    print("\nhook time beyond TRL's, as a fraction of step time")
    for label in LABELS[1:]:
        extra = SPENT[(label, "mode")] - SPENT[(label, "trl")]
        print(f"{label:<14} {extra / SPENT[(label, 'steps')]:>8.4%}")


if __name__ == "__main__":
    main()
