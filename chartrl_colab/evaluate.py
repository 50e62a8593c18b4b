"""pass@k of sample files (from ``chartrl_colab.generate``) side by side: curves, bars, a table, metrics.json.

    python -m chartrl_colab.evaluate --samples base.jsonl nsr.jsonl psr.jsonl --labels Base NSR PSR \\
        --k 1 2 4 8 16 32 64 --output-dir eval

Outputs: the README's "Evaluation: pass@k". The files (:mod:`chartrl_colab.evaluation.samples`) must hold the
same question ids, in any order; their ``n`` may differ (each curve runs to its own n). Each is bootstrapped with
the same seed over the first file's question order, so two models' intervals come from the same resampled
questions. Each output is written whole or not at all.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chartrl_colab.cli import parser_for, run_cli
from chartrl_colab.errors import ConfigError, one_of
from chartrl_colab.evaluation import compare
from chartrl_colab.evaluation.metrics import METRIC_NAME, evochart_correct
from chartrl_colab.evaluation.passk import summarize
from chartrl_colab.evaluation.passk_plots import plot_bars, plot_curves, plot_differences
from chartrl_colab.evaluation.samples import read_rows
from chartrl_colab.files import atomic_path, naming
from chartrl_colab.rewards.completions import parse_answer

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
METRICS = ("relaxed_correctness", "verifier")


@dataclass
class SampleFile:
    """One samples file reduced to what pass@k needs: per-question sample and correct counts."""

    path: Path
    label: str
    ids: list[str]
    n: np.ndarray  # samples per question
    c: np.ndarray  # correct samples per question
    settings: dict = field(default_factory=dict)  # the "generation" record of the first row
    origins: list = field(default_factory=list)  # ChartQA's "human" / "augmented" per question, or None
    mean_entropy: float | None = None  # mean per-token entropy over every sampled token (None: not recorded)


@dataclass
class EvalReport:
    metrics: dict
    figures: list[Path]
    table_md: Path
    table_csv: Path
    metrics_json: Path
    per_question_csv: Path | None = None


def load_samples(path: str | Path, label: str | None = None, metric: str = "relaxed_correctness") -> SampleFile:
    """Read a samples JSONL file; ConfigError for a missing, empty or malformed one.

    ``metric``: ``relaxed_correctness`` (the reference metric of each completion's ``<answer>``) or ``verifier``
    (the file's ``correct`` lists).
    """
    one_of("metric", metric, METRICS)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"samples file {str(path)!r} does not exist; make one with python -m chartrl_colab.generate")
    rows = read_rows(path, warn=True)
    if not rows:
        raise ConfigError(f"samples file {path} holds no rows")
    ids, n, c, origins, seen = [], [], [], [], set()
    entropy_sum = entropy_tokens = 0.0
    for row in rows:
        qid = str(row["id"])
        if metric == "verifier":
            correct = row.get("correct")  # a list of true/false values when present: read_rows checks the types
            if not correct:
                raise ConfigError(f"{path}: question {qid!r} has no 'correct' list of true/false values")
        elif row.get("completions"):
            correct = [evochart_correct(parse_answer(c), row.get("answer"), row.get("is_clear"))
                       for c in row["completions"]]
        else:
            raise ConfigError(f"{path}: question {row['id']!r} has no completions to score with relaxed_correctness; "
                              "pass --metric verifier to use the file's correct lists")
        if qid in seen:
            raise ConfigError(f"{path}: question {qid!r} appears twice")
        seen.add(qid)
        ids.append(qid)
        n.append(len(correct))
        c.append(sum(correct))
        origins.append(row.get("human_or_machine"))
        for value, tokens in zip(row.get("entropy") or [], row.get("num_tokens") or []):
            if value is not None and tokens:  # token-weighted: each completion's mean times its length
                entropy_sum, entropy_tokens = entropy_sum + value * tokens, entropy_tokens + tokens
    return SampleFile(path, label or path.stem, ids, np.array(n), np.array(c), rows[0].get("generation") or {},
                      origins, entropy_sum / entropy_tokens if entropy_tokens else None)


def align(files: list[SampleFile]) -> None:
    """Put every file in the first one's question order; ConfigError naming the first id that differs."""
    ref = files[0]
    for other in files[1:]:
        for a, b in ((ref, other), (other, ref)):
            theirs = set(b.ids)
            if missing := next(((i, qid) for i, qid in enumerate(a.ids) if qid not in theirs), None):
                i, qid = missing
                raise ConfigError(f"{other.path} and {ref.path} hold different questions: {qid!r} (question {i + 1} "
                                  f"of {a.path.name}) is not in {b.path.name}; sample both from the same "
                                  "--dataset-name, --split, --subset-size and --seed")
        order = {qid: i for i, qid in enumerate(other.ids)}
        idx = np.array([order[qid] for qid in ref.ids])
        other.ids, other.n, other.c = list(ref.ids), other.n[idx], other.c[idx]
        other.origins = [other.origins[i] for i in idx]


def default_ks(n: int) -> list[int]:
    """Powers of two up to n, and n itself.

    >>> default_ks(64), default_ks(10)
    ([1, 2, 4, 8, 16, 32, 64], [1, 2, 4, 8, 10])
    """
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    return ks if ks[-1] == n else [*ks, n]


def metric_label(metric: str, settings: dict | None = None) -> str:
    """How tables and plots name what made a sample correct.

    >>> metric_label("relaxed_correctness"), metric_label("verifier", {"verifier": "accuracy", "reward_threshold": 0.5})
    ('relaxed_correctness (pix2struct)', 'verifier accuracy >= 0.5')
    """
    if metric == "relaxed_correctness":
        return METRIC_NAME
    settings = settings or {}
    return f"verifier {settings.get('verifier', '?')} >= {settings.get('reward_threshold', '?')}"


def by_origin(f: SampleFile) -> dict | None:
    """Accuracy (mean pass@1) of ChartQA's human and augmented questions and overall; None without origins."""
    if not any(f.origins):
        return None
    acc, origins = f.c / f.n, np.array(f.origins, dtype=object)
    masks = {"human": origins == "human", "augmented": origins == "augmented", "overall": np.ones(len(acc), bool)}
    return {name: {"num_questions": int(mask.sum()), "accuracy": float(acc[mask].mean()) if mask.any() else None}
            for name, mask in masks.items()}


def _cell(s: dict, i: int) -> dict:
    """Entry ``i`` of a :func:`chartrl_colab.evaluation.passk.summarize` result: mean and interval as floats."""
    return {key: float(s[key][i]) for key in ("mean", "ci_low", "ci_high")}


def evaluate(samples, labels=None, ks=None, output_dir: str | Path = "eval", n_bootstrap: int = 1000, seed: int = 0,
             confidence: float = CONFIDENCE, metric: str = "relaxed_correctness") -> EvalReport:
    """pass@k of one or more sample files; writes plots, tables and metrics.json to ``output_dir``.

    ``metric``: as :func:`load_samples`.
    """
    one_of("metric", metric, METRICS)
    paths = [samples] if isinstance(samples, (str, Path)) else list(samples)
    if not paths:
        raise ConfigError("samples is empty; pass at least one samples file")
    labels = [labels] if isinstance(labels, str) else list(labels or [None] * len(paths))
    if len(labels) != len(paths):
        raise ConfigError(f"got {len(labels)} labels for {len(paths)} sample files; give one label per file")
    files = [load_samples(p, label, metric) for p, label in zip(paths, labels)]
    names = [f.label for f in files]
    if len(set(names)) != len(names):
        dup = next(x for x in names if names.count(x) > 1)
        raise ConfigError(f"label {dup!r} is used twice; pass --labels with one distinct name per file")
    align(files)

    notes = []
    n_of = {f.label: int(f.n.min()) for f in files}
    for f in files:
        if f.n.min() != f.n.max():
            notes.append(f"{f.label}: n varies across questions ({int(f.n.min())} to {int(f.n.max())}); "
                         f"pass@k is given for k <= {int(f.n.min())}")
    if len(set(n_of.values())) > 1:
        notes.append("n differs across files (" + ", ".join(f"{k} n={v}" for k, v in n_of.items())
                     + "); each curve runs to its own n, and table cells with k > n are empty")
    for key in ("verifier", "reward_threshold"):
        values = {f.label: f.settings.get(key) for f in files if key in f.settings}
        if len(set(map(str, values.values()))) > 1:
            notes.append(f"the files were scored with different {key}: "
                         + ", ".join(f"{k} {v}" for k, v in values.items()))

    ks = sorted({int(k) for k in (default_ks(min(n_of.values())) if ks is None else ks)})
    if ks and ks[0] < 1:
        raise ConfigError(f"k={ks[0]} is not valid; k must be >= 1")
    largest = max(n_of.values())
    if not ks or ks[-1] > largest:
        raise ConfigError(f"k={ks[-1] if ks else None} exceeds n={largest}, the most samples per question of any "
                          f"file; choose k <= {largest}")

    models, per_question = {}, {}
    for f in files:
        n = n_of[f.label]
        curve_k = np.arange(1, n + 1)
        # Every k up to this file's n; the same bootstrap seed for every file over the same question order.
        s = summarize(f.n, f.c, curve_k, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
        per_question[f.label] = s["per_question"]  # (questions, n): pass@k of every question at k = 1..n
        models[f.label] = {
            "file": str(f.path),
            "num_questions": len(f.ids),
            "n": n,
            "num_correct": int(f.c.sum()),
            "pass_at_k": {str(k): _cell(s, k - 1) for k in ks if k <= n},
            "pass_at_1": _cell(s, 0),
            "pass_at_n": _cell(s, -1),
            "curve": {"k": curve_k.tolist(), **{key: s[key].tolist() for key in ("mean", "ci_low", "ci_high")}},
            "mean_entropy": f.mean_entropy,
            "generation": f.settings,
        }
        if (origins := by_origin(f)) is not None:
            models[f.label]["by_origin"] = origins
    metrics = {"metric": metric_label(metric, files[0].settings), "ks": ks, "confidence": confidence,
               "n_bootstrap": n_bootstrap, "seed": seed,
               "num_questions": len(files[0].ids), "labels": names, "models": models, "notes": notes}
    # Paired differences (every pair, k = 1..the smallest n): the same questions sampled by both models.
    common = min(n_of.values())
    metrics["differences"] = compare.differences({label: pq[:, :common].copy() for label, pq in per_question.items()},
                                                 range(1, common + 1), n_bootstrap=n_bootstrap, confidence=confidence,
                                                 seed=seed)

    out = Path(output_dir)
    with naming(out):
        out.mkdir(parents=True, exist_ok=True)
    figures = [plot_curves(metrics, out / "passk_curves.png"), plot_bars(metrics, out / "passk_bars.png")]
    if len(files) > 1:
        figures.append(plot_differences(metrics, out / "passk_differences.png"))
    table_md, table_csv = write_tables(metrics, out / "passk_table.md", out / "passk_table.csv")
    per_question_csv = write_per_question(files, per_question, ks, out / "per_question.csv")
    metrics_json = out / "metrics.json"
    with atomic_path(metrics_json) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    print(table_md.read_text(encoding="utf-8"), end="")
    for note in notes:
        log.info(f"note: {note}")
    log.info(f"✓ wrote {', '.join(p.name for p in [*figures, table_md, table_csv, per_question_csv, metrics_json])} "
             f"to {out}")
    return EvalReport(metrics, figures, table_md, table_csv, metrics_json, per_question_csv)


# ---------------------------------------------------------------------------------------------- outputs
def write_tables(metrics: dict, md_path: Path, csv_path: Path) -> tuple[Path, Path]:
    """Markdown (one row per file, "mean [low, high]" per k) and CSV (one row per file and k)."""
    ks = metrics["ks"]
    head = ["model", "n", "questions", *[f"pass@{k}" for k in ks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "file", "n", "num_questions", "k", "pass_at_k", "ci_low", "ci_high", "metric"])
        for label, m in metrics["models"].items():
            for k, cell in m["pass_at_k"].items():  # the ks <= this file's n
                writer.writerow([label, m["file"], m["n"], m["num_questions"], k, repr(cell["mean"]),
                                 repr(cell["ci_low"]), repr(cell["ci_high"]), metrics["metric"]])
            cells = {k: f"{c['mean']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]" for k, c in m["pass_at_k"].items()}
            row = [label, str(m["n"]), str(m["num_questions"]), *(cells.get(str(k), "") for k in ks)]
            lines.append("| " + " | ".join(row) + " |")
    origins = {label: m["by_origin"] for label, m in metrics["models"].items() if "by_origin" in m}
    if origins:  # ChartQA's halves, as Chart-RVR reports them
        lines += ["", f"accuracy (pass@1, {metrics['metric']}) by question origin", "",
                  "| model | human | augmented | overall |", "|---|---|---|---|"]
        for label, o in origins.items():
            cells = ["" if o[g]["accuracy"] is None else f"{o[g]['accuracy']:.4f} ({o[g]['num_questions']})"
                     for g in ("human", "augmented", "overall")]
            lines.append("| " + " | ".join([label, *cells]) + " |")
    lines += compare.difference_lines(metrics)
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"pass@k ({metrics['metric']}), mean over questions "
                       f"[{metrics['confidence']:.0%} bootstrap interval]\n\n" + "\n".join(lines) + "\n",
                       encoding="utf-8")
    return md_path, csv_path


def write_per_question(files: list[SampleFile], per_question: dict, ks: list[int], path: Path) -> Path:
    """One row per file and question: n, correct, and pass@k at each requested k <= n (``per_question``: label ->
    pass@k of every question at k = 1..n, shaped (questions, n))."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "id", "n", "num_correct", *[f"pass@{k}" for k in ks]])
        for sf in files:
            usable = [k - 1 for k in ks if k <= sf.n.min()]
            for qid, n, c, row in zip(sf.ids, sf.n, sf.c, per_question[sf.label][:, usable]):
                cells = [repr(float(v)) for v in row] + [""] * (len(ks) - len(usable))
                writer.writerow([sf.label, qid, int(n), int(c), *cells])
    return path


# ------------------------------------------------------------------------------------------------ CLI
@dataclass
class EvaluateConfig:
    """The flags of ``python -m chartrl_colab.evaluate``: the arguments of :func:`evaluate`."""

    samples: tuple[str, ...] = field(metadata={"help": "Sample JSONL files of chartrl_colab.generate."})
    labels: tuple[str, ...] | None = field(default=None, metadata={
        "help": "One name per file (default: the file names)."})
    ks: tuple[int, ...] | None = field(default=None, metadata={
        "help": "k values of the table (default: powers of two up to n, and n).", "aliases": ("--k",)})
    output_dir: str = field(default="eval", metadata={"help": "Folder for the plots, tables and metrics.json."})
    n_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples of the questions."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})
    confidence: float = field(default=CONFIDENCE, metadata={"help": "Interval coverage."})
    metric: str = field(default="relaxed_correctness", metadata={
        "help": f"What makes a sample correct, one of {', '.join(METRICS)}: the reference relaxed_correctness "
                "(pix2struct) of its <answer> (default), or the file's verifier 'correct' lists."})


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(EvaluateConfig, "python -m chartrl_colab.evaluate", __doc__.split("\n")[0])
    return run_cli(lambda: evaluate(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
