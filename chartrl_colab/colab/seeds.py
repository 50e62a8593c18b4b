"""Runs of one mode with several seeds (a ``batch`` of modes x seeds, evaluated) compared as one line per mode:
``03_eval`` calls :func:`compare_modes` on what :func:`chartrl_colab.colab.pipelines.evaluate_runs` sampled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluate import align, load_samples
from chartrl_colab.evaluation import compare, passk_plots
from chartrl_colab.evaluation.passk import pass_at_k_curve
from chartrl_colab.runs.record import read_run_json

BASE = "Base"


def compare_modes(samples: dict[str, str | Path], run_dirs, output_dir: str | Path, base: str = BASE,
                  n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Per mode: mean pass@k (k = 1..n) over its seeds and the questions with an interval resampling both, and its
    difference to ``base`` with the paired interval (:mod:`chartrl_colab.evaluation.compare`).

    ``samples``: label -> samples file as ``evaluate_runs`` returns it (the runs in the order of ``run_dirs``).
    Writes ``modes_table.md``, ``modes_passk.png``, ``modes_differences.png`` and ``modes.json`` (what it returns:
    ``modes`` {mode: {seeds, labels, k, mean, ci_low, ci_high}}, ``differences``, ``table_md``, ``table_markdown``,
    ``figures``, and ``json``: its path) to ``output_dir``.
    """
    runs = [label for label in samples if label != base]
    if len(runs) != len(run_dirs):
        raise ConfigError(f"got {len(runs)} sampled runs for {len(run_dirs)} run directories; pass evaluate_runs' "
                          "samples and the run directories it sampled, in the same order")
    groups: dict[str, list[tuple[str, int | None]]] = {}  # MODE -> [(label, seed)] from the runs' run.json
    for label, run in zip(runs, map(Path, run_dirs)):
        config = (read_run_json(run) or read_run_json(run.parent) or {}).get("config") or {}
        if "mode" not in config:
            raise ConfigError(f"{run} has no run.json naming its mode; evaluate run directories trained by this "
                              "package")
        groups.setdefault(str(config["mode"]).upper(), []).append((label, config.get("seed")))
    files = [load_samples(path, label) for label, path in samples.items()]
    align(files)
    n = int(min(f.n.min() for f in files))
    ks = np.arange(1, n + 1)
    curves = {f.label: pass_at_k_curve(f.n, f.c, ks) for f in files}  # questions x k, same question order
    stacked = {mode: np.stack([curves[label] for label, _ in members]) for mode, members in groups.items()}
    if base in curves:
        stacked = {base: curves[base][None], **stacked}
    settings = dict(n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    modes = {}
    for mode, values in stacked.items():
        s = compare.seed_mean(values, **settings)
        members = groups.get(mode, [(base, None)])
        modes[mode] = {"seeds": [sd for _, sd in members], "labels": [lb for lb, _ in members], "k": ks.tolist(),
                       "mean": s["mean"].tolist(), "ci_low": s["ci_low"].tolist(), "ci_high": s["ci_high"].tolist()}
    pairs = [{base: stacked[base], mode: stacked[mode]} for mode in groups] if base in stacked else []
    diffs = [d for pair in pairs for d in compare.differences(pair, ks, **settings)]  # each mode against the base

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    questions = len(files[0].ids)
    markdown = _table(modes, diffs, n, questions, confidence)
    table_md = out / "modes_table.md"
    table_md.write_text(markdown)
    figures = [passk_plots.plot_seed_means(
        {mode: {**m, "seeds": len(m["seeds"])} for mode, m in modes.items()}, out / "modes_passk.png",
        f"pass@k per mode, mean over seeds and {questions} questions ({confidence:.0%} bootstrap bands over both)")]
    if diffs:
        figures.append(passk_plots.plot_differences(
            {"labels": [base], "differences": diffs, "num_questions": questions, "confidence": confidence,
             "metric": "relaxed_correctness"}, out / "modes_differences.png"))
    result = {"modes": modes, "differences": diffs, "table_md": str(table_md), "table_markdown": markdown,
              "figures": [str(p) for p in figures]}
    path = out / "modes.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    result["json"] = str(path)
    print(markdown)  # what the cell shows
    return result


def _table(modes: dict, diffs: list, n: int, questions: int, confidence: float) -> str:
    by_mode = {d["other"]: d for d in diffs}
    ks = [1] if n == 1 else [1, n]
    head = ["mode", "seeds", *[f"pass@{k}" for k in ks], *[f"pass@{k} - base" for k in ks]]
    lines = [f"pass@k per mode: mean over seeds and {questions} questions [{confidence:.0%} bootstrap interval over "
             "seeds and questions]; difference to the base paired over questions (* where its interval excludes 0)",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, m in modes.items():
        cells = [f"{m['mean'][k - 1]:.3f} [{m['ci_low'][k - 1]:.3f}, {m['ci_high'][k - 1]:.3f}]" for k in ks]
        d = by_mode.get(mode)
        cells += [compare.difference_cell(d["k"][str(k)]) if d else "" for k in ks]
        lines.append(f"| {mode} | {len(m['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
