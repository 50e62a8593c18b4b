"""The training part of a psr step with 25% of rows kept against the same step with all kept, one process.

    python benchmarks/kept_rows.py [--rounds 3] [--steps 6] [--completion-length 64]

ModeTrainer cuts the dropped rows out of each micro-batch before the policy's forward and backward (and out of
the no-grad forward for old log-probs), so psr on a model that is right a quarter of the time should pay about
a quarter of the all-kept training cost. Tiny model + LoRA (r 8), synthetic charts, 4 prompts x 4 generations per
step, every completion forced to the full length (min_new_tokens) so both runs train on the same number of
tokens; the verifier is fixed by position (rows 0, 4, 8, 12 correct, or all). Per step: the training part is
``training_step`` minus the time in ``_generate_and_score_completions`` (generation and scoring); the whole step
is ``training_step``. Medians over steps (first step of each run dropped), runs interleaved over rounds with the
order rotated. Target: training part <= 0.5. ``25% uncut`` is the 25% step with the cut switched off (every row
through the model, as TRL runs it): what the cut saves.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

from trl import GRPOConfig

from chartrl_colab.data.loading import load_chart_dataset
from chartrl_colab.models.loading import add_lora, load_model_and_processor
from chartrl_colab.training.trainer import ModeTrainer


class TimedTrainer(ModeTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation, self.steps = 0.0, []

    def _generate_and_score_completions(self, inputs):
        start = time.perf_counter()
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.generation += time.perf_counter() - start

    def training_step(self, model, inputs, num_items_in_batch):
        self.generation, start = 0.0, time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        whole = time.perf_counter() - start
        self.steps.append((whole - self.generation, whole))
        return loss


class UncutTrainer(TimedTrainer):
    """The same step with every row run through the model, as TRL does (the loss mask alone drops them)."""

    def _rows_to_run(self, mask):
        return None


def run(kept_every: int, dataset, steps: int, length: int, cls=TimedTrainer) -> list[tuple[float, float]]:
    def verifier(completions, **kwargs):
        return [float(i % kept_every == 0) for i in range(len(completions))]

    model, processor = load_model_and_processor("tiny", seed=0)
    model = add_lora(model, r=8, alpha=16, dropout=0.0, gradient_checkpointing=False)
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=16, num_generations=4,
                      max_completion_length=length, generation_kwargs={"min_new_tokens": length}, max_steps=steps,
                      report_to=[], use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True,
                      remove_unused_columns=False, gradient_checkpointing=False)
    trainer = cls(model=model, processing_class=processor, reward_funcs=[verifier], args=args, train_dataset=dataset,
                  mode="psr", verifier=0, print_mode_lines=False)
    trainer.train()
    return trainer.steps[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--completion-length", type=int, default=64)
    opts = parser.parse_args()
    warnings.filterwarnings("ignore")
    dataset = load_chart_dataset("synthetic", subset_size=64, seed=0)
    runs = {"25% kept": (4, TimedTrainer), "all kept": (1, TimedTrainer), "25% uncut": (4, UncutTrainer)}
    times = {label: [] for label in runs}
    for round_ in range(opts.rounds):
        for label in list(runs)[round_ % len(runs):] + list(runs)[:round_ % len(runs)]:
            kept_every, cls = runs[label]
            times[label] += run(kept_every, dataset, opts.steps, opts.completion_length, cls)
        print(f"round {round_ + 1}/{opts.rounds} done", flush=True)
    medians = {label: [statistics.median(t[i] for t in times[label]) for i in (0, 1)] for label in runs}
    base = medians["all kept"]
    print(f"\n{'psr step':<10} {'training part s':>16} {'ratio':>7} {'whole step s':>13} {'ratio':>7}")
    for label in runs:
        train, whole = medians[label]
        print(f"{label:<10} {train:>16.3f} {train / base[0]:>7.3f} {whole:>13.3f} {whole / base[1]:>7.3f}")


if __name__ == "__main__":
    main()
