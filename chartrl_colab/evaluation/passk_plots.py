"""The pass@k figures: curves with bootstrap bands, pass@1/pass@n bars, paired differences, means over seeds.

Each draws on a matplotlib ``Figure`` (no pyplot: a notebook's backend is left alone) and writes one PNG whole
or not at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chartrl_colab.files import atomic_path

__all__ = ["plot_bars", "plot_curves", "plot_differences", "plot_seed_means"]


def _axes(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _log2_axis(ax, largest: int) -> None:
    ax.set_xscale("log", base=2)
    ticks = [2**i for i in range(largest.bit_length()) if 2**i <= largest]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlim(1, max(largest, 2))
    ax.set_xlabel("k (samples)")
    ax.grid(True, alpha=0.3)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return path


def plot_curves(metrics: dict, path: Path) -> Path:
    """pass@k against k (log2 axis) for every file, with bootstrap bands and markers at the requested k."""
    fig, ax = _axes((8.5, 4.5))
    for label, m in metrics["models"].items():
        k = np.array(m["curve"]["k"])
        (line,) = ax.plot(k, m["curve"]["mean"], label=f"{label} (n={m['n']})", linewidth=1.8)
        ax.fill_between(k, m["curve"]["ci_low"], m["curve"]["ci_high"], color=line.get_color(), alpha=0.2, linewidth=0)
        marked = [int(x) for x in m["pass_at_k"]]
        ax.plot(marked, [m["pass_at_k"][str(x)]["mean"] for x in marked], "o", color=line.get_color(), markersize=4)
    _log2_axis(ax, max(m["n"] for m in metrics["models"].values()))
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"pass@k, {metrics['metric']}")
    ax.set_title(f"pass@k over {metrics['num_questions']} questions ({metrics['confidence']:.0%} bootstrap bands)\n"
                 f"correct: {metrics['metric']}", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the axes, never over a band
    return _save(fig, path)


def plot_bars(metrics: dict, path: Path) -> Path:
    """pass@1 and pass@n of every file, with bootstrap error bars."""
    labels = list(metrics["models"])
    x = np.arange(len(labels))
    width = 0.38
    fig, ax = _axes((max(4.5, 1.4 * len(labels) + 2), 4.5))
    for offset, key, name in ((-width / 2, "pass_at_1", "pass@1"), (width / 2, "pass_at_n", "pass@n")):
        cells = [metrics["models"][lb][key] for lb in labels]
        vals = np.array([c["mean"] for c in cells])
        err = np.array([vals - [c["ci_low"] for c in cells], [c["ci_high"] for c in cells] - vals])
        bars = ax.bar(x + offset, vals, width, yerr=np.clip(err, 0, None), capsize=3, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xticks(x, [f"{lb}\n(n={metrics['models'][lb]['n']})" for lb in labels])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"pass rate, {metrics['metric']}")
    ax.set_title(f"pass@1 and pass@n\ncorrect: {metrics['metric']}", fontsize=10)
    ax.legend(loc="upper left")
    return _save(fig, path)


def _band_lines(lines: list, path: Path, ylabel: str, title: str, zero_line: bool = False) -> Path:
    """One line with its band per ``(label, colour, {"k", "mean", "ci_low", "ci_high"})`` against k (log2 axis)."""
    fig, ax = _axes((8.5, 4.5))
    if zero_line:
        ax.axhline(0.0, color="black", linewidth=0.8)
    for label, color, c in lines:
        ax.plot(c["k"], c["mean"], color=color, linewidth=1.8, marker="o", markersize=3, label=label)
        ax.fill_between(c["k"], c["ci_low"], c["ci_high"], color=color, alpha=0.15, linewidth=0)
    _log2_axis(ax, max([1, *(int(c["k"][-1]) for _, _, c in lines)]))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def plot_differences(metrics: dict, path: Path) -> Path:
    """pass@k of each model minus the first model's (the base), k = 1..n, with the paired bands: which way each
    model moved where the pass@k curves lie on top of each other."""
    base = metrics["labels"][0]
    lines = []
    for i, d in enumerate(d for d in metrics.get("differences", []) if d["reference"] == base):
        k = sorted(int(x) for x in d["k"])
        cells = {name: [d["k"][str(x)][field] for x in k] for name, field in
                 (("mean", "diff"), ("ci_low", "ci_low"), ("ci_high", "ci_high"))}
        lines.append((f"{d['other']} - {base}", f"C{i + 1}", {"k": np.array(k), **cells}))  # C0: the base's colour
    return _band_lines(lines, path, f"pass@k minus {base}'s",
                       f"difference to {base} over {metrics['num_questions']} questions "
                       f"({metrics['confidence']:.0%} paired bootstrap bands)\ncorrect: {metrics['metric']}",
                       zero_line=True)


def plot_seed_means(curves: dict, path: Path, title: str, ylabel: str = "pass@k") -> Path:
    """One line per model: mean pass@k over seeds and questions with its band (``curves``: label -> a
    :func:`chartrl_colab.evaluation.compare.seed_mean` result plus its ``"k"``)."""
    lines = [(f"{label} ({c['seeds']} seed{'s' if c['seeds'] != 1 else ''})", f"C{i}", {**c, "k": np.asarray(c["k"])})
             for i, (label, c) in enumerate(curves.items())]
    return _band_lines(lines, path, ylabel, title)
