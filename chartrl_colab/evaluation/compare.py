"""Whether a difference in pass@k is real: paired bootstrap intervals over questions, and means over seeds.

Every model is sampled on the same questions, so a difference in mean pass@k is the mean of the per-question
differences, its interval resampling the questions once for both models. Runs of one mode with several seeds
count as one model: the interval resamples each mode's seeds and the shared questions. Percentile intervals.

Values are per-question pass@k arrays (rows of :func:`chartrl_colab.evaluation.passk.pass_at_k_curve`):
``(questions[, K])`` for one run, ``(seeds, questions, K)`` for several.
"""

from __future__ import annotations

import itertools

import numpy as np

from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation.passk import check_bootstrap, percentile_interval

__all__ = ["difference", "difference_cell", "difference_lines", "differences", "seed_mean"]


def _runs(values, name: str) -> np.ndarray:
    """``values`` as (seeds, questions, K) floats: one run given as (questions[, K]) gets a seed axis of 1."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim in (1, 2):
        arr = arr[None, :, None] if arr.ndim == 1 else arr[None]
    if arr.ndim != 3 or 0 in arr.shape:
        raise ConfigError(f"{name} must be per-question values shaped (questions[, K]) or (seeds, questions, K) with "
                          f"at least one seed and one question, got shape {np.shape(values)}")
    return arr


def _replicates(groups: list[np.ndarray], n_bootstrap: int, seed: int) -> list[np.ndarray]:
    """Bootstrap means (n_bootstrap, K) of each group (seeds, questions, K): one question resample per replicate,
    shared by all groups (the pairing), and each group's seeds resampled on their own."""
    q = groups[0].shape[1]
    rng = np.random.default_rng(seed)
    question_w = rng.multinomial(q, np.full(q, 1.0 / q), size=n_bootstrap) / q  # (B, Q), rows sum to 1
    out = []
    for values in groups:
        s = values.shape[0]
        seed_w = rng.multinomial(s, np.full(s, 1.0 / s), size=n_bootstrap) / s if s > 1 else np.ones((n_bootstrap, 1))
        per_seed = np.einsum("bq,sqk->bsk", question_w, values)  # each seed's mean over the resampled questions
        out.append(np.einsum("bs,bsk->bk", seed_w, per_seed))
    return out


def seed_mean(values, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean over seeds and questions with a bootstrap interval resampling both: ``{"mean", "ci_low", "ci_high",
    "seeds", "per_seed"}``, arrays over K (``per_seed``: seeds x K). Every seed must hold the same questions.

    >>> s = seed_mean([[[0.2], [0.2]], [[0.6], [0.6]]], n_bootstrap=4000)  # two seeds, two questions, one k
    >>> round(float(s["mean"][0]), 3), [round(float(s[b][0]), 3) for b in ("ci_low", "ci_high")]
    (0.4, [0.2, 0.6])
    """
    check_bootstrap(n_bootstrap, confidence)
    runs = _runs(values, "values")
    (reps,) = _replicates([runs], int(n_bootstrap), seed)
    mean = runs.mean(axis=(0, 1))
    low, high = percentile_interval(reps, mean, confidence)
    return {"mean": mean, "ci_low": low, "ci_high": high, "seeds": runs.shape[0], "per_seed": runs.mean(axis=1)}


def difference(reference, other, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """``other`` minus ``reference`` in mean pass@k, paired over questions: ``{"diff", "ci_low", "ci_high",
    "significant"}`` as arrays over K; ``significant`` where the interval excludes 0. Both hold the same
    questions in the same order (each side's seeds resampled on their own).

    >>> d = difference([0.0, 0.5, 1.0, 0.2], [0.1, 0.6, 1.0, 0.3])  # better on 3 of 4 questions, never worse
    >>> round(float(d["diff"][0]), 3), bool(d["significant"][0]), round(float(d["ci_low"][0]), 3)
    (0.075, True, 0.025)
    """
    check_bootstrap(n_bootstrap, confidence)
    ref, oth = _runs(reference, "reference"), _runs(other, "other")
    if ref.shape[1:] != oth.shape[1:]:
        raise ConfigError(f"a paired comparison needs the same questions and k: got {ref.shape[1:]} and "
                          f"{oth.shape[1:]} (questions, K); sample both on the same questions")
    rep_ref, rep_oth = _replicates([ref, oth], int(n_bootstrap), seed)
    diff = oth.mean(axis=(0, 1)) - ref.mean(axis=(0, 1))
    low, high = percentile_interval(rep_oth - rep_ref, diff, confidence)
    return {"diff": diff, "ci_low": low, "ci_high": high, "significant": (low > 0) | (high < 0)}


def differences(per_question: dict, ks, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> list:
    """Every pair of models: the first model (the base) against each other, then the others pairwise.

    ``per_question``: label -> per-question pass@k at ``ks`` (questions, len(ks)) or (seeds, questions, len(ks)).
    Returns one dict per pair: ``{"reference", "other", "k": {str(k): {"diff", "ci_low", "ci_high",
    "significant"}}}`` with floats and bools.
    """
    out = []
    for ref, oth in itertools.combinations(per_question, 2):
        d = difference(per_question[ref], per_question[oth], n_bootstrap, confidence, seed)
        out.append({"reference": ref, "other": oth, "k": {
            str(int(k)): {**{name: float(d[name][j]) for name in ("diff", "ci_low", "ci_high")},
                          "significant": bool(d["significant"][j])} for j, k in enumerate(ks)}})
    return out


def difference_cell(d: dict) -> str:
    """``+0.062 [+0.021, +0.104] *`` (the star: the interval excludes 0)."""
    return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]{' *' if d['significant'] else ''}"


def difference_lines(metrics: dict) -> list[str]:
    """Markdown lines of ``metrics["differences"]`` at pass@1 and pass@n (n the smallest sample count), one row per
    pair; empty with fewer than two models."""
    if not (diffs := metrics.get("differences")):
        return []
    n = max(int(k) for k in diffs[0]["k"])
    ks = [1] if n == 1 else [1, n]
    lines = ["", f"paired differences (row's second model minus its first, mean over the same questions "
                 f"[{metrics.get('confidence', 0.95):.0%} paired bootstrap interval]; * where the interval excludes 0)",
             "", "| difference | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for d in diffs:
        lines.append(f"| {d['other']} - {d['reference']} | "
                     + " | ".join(difference_cell(d["k"][str(k)]) for k in ks) + " |")
    return lines
