"""The proof of concept: the four modes on one small subset, then their comparison plots and summary.

This is the seed project's 100-sample validation (grpo, psr, nsr, w-reinforce with the same data, seed
and budget), run from ``notebooks/01_poc.ipynb``. Each mode trains (resuming automatically, so a rerun
after a disconnect continues where it stopped), then :func:`chartrl_colab.monitor.monitor` compares the
runs: one PNG per metric holding all four, ``summary.txt`` and ``summary.json``. :func:`checks` turns the
seed's success indicators into one line per run (steps trained, a checkpoint saved, and whether each mode
saw the samples it learns from).
"""

from __future__ import annotations

from pathlib import Path

from chartrl_colab.config import MODES, RunConfig
from chartrl_colab.errors import ConfigError
from chartrl_colab.storage import with_output_root


def run_poc(modes=MODES, output_dir: str | Path = "poc_comparison", echo=print, **params) -> dict:
    """Train every mode with the same settings, then compare them; returns paths and key numbers.

    ``params`` are RunConfig fields shared by the runs (``mode`` is set per run). The result holds
    ``runs`` (mode -> :func:`chartrl_colab.runs.run_summary`), ``figures``, ``summary_txt``,
    ``summary_json``, ``summaries`` (label -> the monitor's numbers), ``checks`` and ``errors``.
    """
    from chartrl_colab.monitor import monitor
    from chartrl_colab.runs import train_run

    if not modes:
        raise ConfigError("modes is empty; give at least one of: " + ", ".join(MODES))
    configs = {mode: with_output_root(RunConfig(**{**params, "mode": mode})) for mode in modes}  # all validated before training
    runs = {}
    for i, (mode, cfg) in enumerate(configs.items(), 1):
        echo(f"\n[{i}/{len(configs)}] {mode}: {cfg.run_dir}")
        runs[mode] = train_run(cfg)
    report = monitor([cfg.run_dir for cfg in configs.values()], labels=[m.upper() for m in configs],
                     output_dir=str(output_dir), compare=True)
    if "grpo" in configs:  # what the comparison is like for like on (run.json holds it as the config's grpo_rewards)
        echo(f"GRPO rewards: {configs['grpo'].grpo_rewards} (grpo's advantage from "
             f"{'the verifier alone, as psr/nsr/w-reinforce' if configs['grpo'].grpo_rewards == 'verifier' else 'the sum of all rewards'})")
    lines = checks(runs)
    echo("\nPOC CHECKS")
    for line in lines:
        echo(line)
    return {"runs": runs, "figures": [str(p) for p in report.figures], "summary_txt": str(report.summary_txt),
            "summary_json": str(report.summary_json), "summaries": report.summaries, "checks": lines,
            "errors": report.errors}


# What each mode learns from, and the seed's fix when a run saw none of it.
_NEEDS = {
    "psr": ("mode/num_positive", "correct", "lower reward_threshold or raise num_generations"),
    "nsr": ("mode/num_negative", "incorrect", "raise reward_threshold or num_generations (e.g. 8)"),
    "w-reinforce": ("mode/num_negative", "incorrect", "raise reward_threshold or num_generations (e.g. 8)"),
}


def checks(runs: dict[str, dict]) -> list[str]:
    """One line per run: ✓ when it trained, saved a checkpoint and saw samples to learn from; else ✗ and why.

    >>> print("\\n".join(checks({"psr": {"global_step": 4, "checkpoint": "r/checkpoint-4",
    ...                                  "totals": {"mode/num_positive": 0, "mode/num_negative": 32}}})))
    ✗ PSR: 4 steps, checkpoint r/checkpoint-4; no correct samples in any step, so nothing to learn from (lower reward_threshold or raise num_generations)
    """
    lines = []
    for mode, run in runs.items():
        problems = []
        if not run.get("global_step"):
            problems.append("no training step was logged")
        if not run.get("checkpoint"):
            problems.append("no complete checkpoint was saved (save_steps larger than the run?)")
        if mode in _NEEDS:
            key, kind, fix = _NEEDS[mode]
            if not run.get("totals", {}).get(key):
                problems.append(f"no {kind} samples in any step, so nothing to learn from ({fix})")
        counts = run.get("totals", {})
        seen = f"{counts.get('mode/num_positive', 0):g} correct / {counts.get('mode/num_negative', 0):g} incorrect samples"
        head = f"{mode.upper()}: {run.get('global_step', 0)} steps, checkpoint {run.get('checkpoint')}"
        lines.append(f"✗ {head}; " + "; ".join(problems) if problems else f"✓ {head}; {seen}")
    return lines
