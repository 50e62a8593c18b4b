"""How pass@1 and pass@n of held-out questions move over RL steps from the embedded warm base, per mode.

    OMP_NUM_THREADS=1 python benchmarks/learnability.py --modes psr nsr --steps 96 --every 32 \\
        --questions 64 --samples 16 --output runs/learnability

Each mode trains from ``tiny-warm`` with the demo's settings (synthetic charts, 2 prompts x 4 completions per
step, LoRA learning rate ``--learning-rate``), saving a checkpoint every ``--every`` steps; then the base and
every checkpoint are sampled on the same ``--questions`` held-out test questions, ``--samples`` each, and
compared by ``chartrl_colab.evaluate`` (pass@k with bootstrap intervals, paired differences to the base).
Prints one line per (mode, step) and writes ``learnability.md`` and the evaluation files to ``--output``.
The numbers go in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["psr", "nsr"])
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--every", type=int, default=32)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--subset-size", type=int, default=256, help="train prompts")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--output", default="runs/learnability")
    parser.add_argument("--runs", nargs="*", default=[],
                        help="run directories already trained (e.g. make demo's): sample their checkpoints, train none")
    args = parser.parse_args()

    from chartrl_colab.colab.pipelines import evaluate_runs, train_run
    from chartrl_colab.config import RunConfig
    from chartrl_colab.messages import configure_logging
    from chartrl_colab.runs.storage import list_checkpoints

    configure_logging()
    out = Path(args.output)
    checkpoints, labels = [], []
    for run in args.runs:
        mode = Path(run).name.split("-tiny")[0]
        for ckpt in list_checkpoints(run):
            checkpoints.append(str(ckpt))
            labels.append(f"{mode.upper()}@{ckpt.name.rsplit('-', 1)[-1]}")
    for mode in [] if args.runs else args.modes:
        began = time.monotonic()
        cfg = RunConfig(mode=mode, vlm_name="tiny-warm", dataset_name="synthetic", seed=args.seed,
                        subset_size=args.subset_size, max_steps=args.steps, save_steps=args.every,
                        save_total_limit=args.steps // args.every + 1, batch_size=2, num_generations=4,
                        learning_rate=args.learning_rate, max_completion_length=args.max_completion_length,
                        gradient_checkpointing=False, logging_steps=1, report_to=["tensorboard"],
                        output_root=str(out / "runs"))
        train_run(cfg)
        print(f"{mode}: {args.steps} steps in {time.monotonic() - began:.0f} s")
        for ckpt in list_checkpoints(cfg.run_dir):
            checkpoints.append(str(ckpt))
            labels.append(f"{mode.upper()}@{ckpt.name.rsplit('-', 1)[-1]}")
    result = evaluate_runs(checkpoints, labels, include_base=True, output_dir=out / "eval", vlm_name="tiny-warm",
                           dataset_name="synthetic", split="test", seed=args.seed, subset_size=args.questions,
                           num_samples=args.samples, max_new_tokens=args.max_completion_length)
    import json

    diffs = {d["other"]: d for d in json.loads(Path(result["metrics_json"]).read_text())["differences"]
             if d["reference"] == "Base"}
    n = args.samples
    lines = [f"| model@step | pass@1 | pass@{n} | pass@1 - base | pass@{n} - base |", "|---|---|---|---|---|"]
    for label, m in result["models"].items():
        d = diffs.get(label)
        cells = [f"{m['pass_at_1']['mean']:.3f}", f"{m['pass_at_n']['mean']:.3f}"]
        cells += [_cell(d["k"]["1"]), _cell(d["k"][str(n)])] if d else ["", ""]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "learnability.md").write_text(text)
    print(text)


def _cell(d: dict) -> str:
    return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]{' *' if d['significant'] else ''}"


if __name__ == "__main__":
    main()
