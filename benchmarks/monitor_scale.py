"""Monitoring a long run: load + summary + every plot of a 100,000-step log history, against json.load alone.

    python benchmarks/monitor_scale.py [--steps 100000] [--rounds 3]

The history has the keys a real run logs (loss, grad_norm, learning_rate, the seven reward means and
stds, mode counts, entropy, clip ratios, completion lengths, step_time, ...: 44 per entry) and sits in
``checkpoint-N/trainer_state.json`` of a run directory beside a valid adapter file, so the monitor goes
through the same path as on a real run (complete-checkpoint check included). Reported: the median over
rounds of ``monitor()`` (load, summary, every PNG, summary.txt/json) and of its parts, each as a ratio to
the bare ``json.load`` of the same file. Target: monitor() <= 5x json.load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from chartrl_colab.evaluation.monitor_plots import Columns, write_figures
from chartrl_colab.monitor import load_history, monitor, summarize

REWARDS = ("format_reward", "accuracy_reward", "length_reward", "tag_count_reward", "chart_type_reward",
           "table_reward", "reasoning_reward")


def synthetic_history(steps: int, seed: int = 0) -> list[dict]:
    """A log history shaped like a real run's (noisy decaying loss, rising reward, linear LR decay)."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, steps + 1)
    loss = 1.0 + np.exp(-t / (steps / 5)) + 0.05 * rng.standard_normal(steps)
    reward = 2.0 - np.exp(-t / (steps / 4)) + 0.2 * rng.standard_normal(steps)
    pos = rng.binomial(8, np.clip(reward / 3, 0, 1))
    history = []
    for i in range(steps):
        entry = {"loss": float(loss[i]), "grad_norm": float(abs(rng.normal(0.2, 0.05))),
                 "learning_rate": 1e-6 * (1 - i / steps), "num_tokens": float(2900 * (i + 1))}
        for name in ("mean_length", "min_length", "max_length", "clipped_ratio", "mean_terminated_length",
                     "min_terminated_length", "max_terminated_length"):
            entry[f"completions/{name}"] = float(rng.integers(10, 512))
        for j, name in enumerate(REWARDS):
            entry[f"rewards/{name}/mean"] = float(reward[i] / 7 + 0.01 * j)
            entry[f"rewards/{name}/std"] = float(abs(rng.normal(0.3, 0.1)))
        entry.update({"reward": float(reward[i]), "reward_std": 0.5, "frac_reward_zero_std": 0.1,
                      "mode/num_positive": float(pos[i]), "mode/num_negative": float(8 - pos[i]),
                      "mode/positive_fraction": float(pos[i] / 8), "entropy": float(6.9 - i / steps),
                      "clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.0, "clip_ratio/region_mean": 0.0,
                      "clip_ratio/low_min": 0.0, "clip_ratio/high_max": 0.0, "step_time": 2.0,
                      "epoch": (i + 1) / steps, "step": i + 1})
        history.append(entry)
    return history


def write_run(root: Path, history: list[dict]) -> Path:
    from safetensors.numpy import save_file

    steps = history[-1]["step"]
    ckpt = root / "nsr-tiny-synthetic-100-2025" / f"checkpoint-{steps}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": steps, "log_history": history}, indent=2))
    save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(ckpt / "adapter_model.safetensors"))
    return ckpt.parent


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp), synthetic_history(opts.steps))
        state = run / f"checkpoint-{opts.steps}" / "trainer_state.json"
        print(f"{opts.steps:,} steps, trainer_state.json {state.stat().st_size / 1e6:.0f} MB")
        parts = {"json.load": [], "monitor()": [], "  load_history": [], "  Columns + summarize": [],
                 "  write_figures": []}
        for r in range(opts.rounds):
            t, _ = timed(lambda: json.loads(state.read_text()))
            parts["json.load"].append(t)
            with contextlib.redirect_stdout(io.StringIO()):
                t, report = timed(lambda: monitor(run, output_dir=Path(tmp) / f"monitor-{r}"))
            parts["monitor()"].append(t)
            # The same work in its parts (monitor() also writes summary.txt/json).
            t, history = timed(lambda: load_history(run))
            parts["  load_history"].append(t)
            t, cols = timed(lambda: (lambda c: (c, summarize(c)))(Columns(history))[0])
            parts["  Columns + summarize"].append(t)
            t, _ = timed(lambda: write_figures({"run": cols}, Path(tmp) / f"plots-{r}"))
            parts["  write_figures"].append(t)
        base = statistics.median(parts["json.load"])
        print(f"| part | seconds (median of {opts.rounds}) | / json.load |")
        print("| --- | --- | --- |")
        for name, times in parts.items():
            print(f"| {name} | {statistics.median(times):.3f} | {statistics.median(times) / base:.2f} |")
        ratio = statistics.median(parts["monitor()"]) / base
        print(f"monitor() wrote {len(report.figures)} PNGs; monitor() / json.load = {ratio:.2f} "
              f"(target <= 5: {'met' if ratio <= 5 else 'NOT met'})")

if __name__ == "__main__":
    main()
