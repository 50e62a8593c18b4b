"""The figures of :mod:`chartrl_colab.monitor`: one matplotlib Figure per metric of ``FIGURES``, every run in it
(each run's raw series faint, its smoothed series on top; long series decimated for drawing), read from
:class:`Columns`, the by-key view of a log history the summary reads too.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np

from chartrl_colab.files import atomic_path

log = logging.getLogger(__name__)

# Smoothing: a centred moving average over this fraction of a series (1 point, i.e. none, for short runs).
SMOOTH_FRACTION = 0.02
# Points drawn per line: ~2 per pixel column of a panel; more cannot show and only slow Agg down.
MAX_DRAWN_POINTS = 4000
REWARD_KEY = re.compile(r"rewards/(.+)/mean")  # TRL's per reward function mean

# (file stem, title, y label, log keys): one PNG each; a figure with several keys has one panel per key.
# The reward panels are filled in per run set (every `rewards/<name>/mean` logged).
FIGURES = (
    ("loss", "Training loss", "loss", ("loss",)),
    ("learning_rate", "Learning rate", "learning rate", ("learning_rate",)),
    ("grad_norm", "Gradient norm", "gradient norm (before clipping)", ("grad_norm",)),
    ("rewards", "Rewards", "mean reward per completion", ("reward",)),
    ("positive_fraction", "Positive fraction (correct completions per step)", "fraction",
     ("mode/positive_fraction",)),
    ("entropy", "Token entropy of the completions", "entropy (nats)", ("entropy",)),
)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Columns:
    """A log history by key: ``columns[key]`` is (steps, values) over the entries that logged ``key``.

    Built once per run and shared by the summary and every plot; a key is extracted on first use.

    >>> cols = Columns([{"loss": 2.0, "step": 1}, {"train_runtime": 9.0, "step": 1}, {"loss": 1.0, "step": 2}])
    >>> cols["loss"], cols["entropy"][1].size
    ((array([1., 2.]), array([2., 1.])), 0)
    """

    def __init__(self, history: list[dict]):
        self.history = history
        self.keys = set().union(*history)
        self.all_steps = np.array([e.get("step", i) for i, e in enumerate(history)], dtype=float)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __getitem__(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        if key not in self._cache:
            self._cache[key] = self._extract(key) if key in self.keys else (np.empty(0), np.empty(0))
        return self._cache[key]

    def _extract(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        try:  # fast path: numbers and missing entries (None -> NaN)
            values = np.array([e.get(key) for e in self.history], dtype=float)
        except (TypeError, ValueError):  # a non-numeric value somewhere
            values = None
        if values is not None and not np.isnan(values).any():
            return self.all_steps.copy(), values
        # The careful path: entries without the key (or not a number) apart from values that are NaN (a diverged loss).
        keep = np.array([_is_number(e.get(key)) for e in self.history], dtype=bool)
        return self.all_steps[keep], np.array([e[key] for e, k in zip(self.history, keep) if k], dtype=float)


def as_columns(history) -> Columns:
    return history if isinstance(history, Columns) else Columns(history)


def smooth(values: np.ndarray, window: int | None = None) -> np.ndarray:
    """Centred moving average (the window shrinks at the ends; NaN/inf values are left out).

    ``window`` defaults to ``SMOOTH_FRACTION`` of the series, so short series come back unchanged.

    >>> smooth(np.array([0.0, 3.0, 0.0, 3.0]), window=3)
    array([1.5, 1. , 2. , 1.5])
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    if window is None:
        window = max(1, round(n * SMOOTH_FRACTION))
    half = max(0, int(window) // 2)
    if half == 0 or n == 0:
        return values.copy()
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + half + 1, 0, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums[hi] - sums[lo]) / (counts[hi] - counts[lo])


def decimate(x: np.ndarray, y: np.ndarray, max_points: int = MAX_DRAWN_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of a series for drawing: each of ``max_points // 2`` buckets keeps its lowest
    and highest point, in order, so spikes survive and the line looks as the full one at plot resolution.

    >>> decimate(np.arange(8.0), np.array([0, 5, 1, 1, 2, 2, -3, 0.0]), max_points=4)
    (array([0., 1., 4., 6.]), array([ 0.,  5.,  2., -3.]))
    """
    n = len(y)
    if n <= max_points:
        return x, y
    buckets = max(1, max_points // 2)
    size = math.ceil(n / buckets)
    rows = np.pad(np.asarray(y, dtype=float), (0, buckets * size - n), constant_values=np.nan).reshape(buckets, size)
    base = np.arange(buckets) * size
    low = np.argmin(np.where(np.isnan(rows), np.inf, rows), axis=1) + base
    high = np.argmax(np.where(np.isnan(rows), -np.inf, rows), axis=1) + base
    keep = np.unique(np.concatenate([low, high]))
    keep = keep[keep < n]
    return x[keep], y[keep]


_STYLES = ("-", "--", "-.", ":", (0, (5, 1)))
_MARKERS = ("o", "s", "^", "v", "D", "x")


def plot_metric(histories: dict, stem: str):
    """One matplotlib Figure of the ``FIGURES`` entry ``stem`` for every run in ``histories`` (label -> log history
    or its :class:`Columns`), or None when no run logged it; one colour per run, one panel per key. Smoothing
    uses every point, drawing goes through :func:`decimate`.
    """
    runs = {label: as_columns(h) for label, h in histories.items()}
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    _, title, ylabel, keys = {f[0]: f for f in FIGURES}.get(stem, (stem, stem, stem, (stem,)))
    if stem == "rewards":  # the total, then every reward function any run logged
        keys += tuple(sorted({k for cols in runs.values() for k in cols.keys if REWARD_KEY.fullmatch(k)}))
    panels = [k for k in keys if any(len(cols[k][0]) for cols in runs.values())]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(6.4 * ncols if ncols > 1 else 9, 4.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, panels):
        for i, (label, cols) in enumerate(runs.items()):
            steps, values = cols[key]
            if not len(steps):
                continue  # a metric this run did not log: the others still draw
            color = f"C{i % 10}"
            ax.plot(*decimate(steps, values), color=color, alpha=0.25, linewidth=0.8)
            # Runs with equal values stay visible: each later run is drawn thinner, dashed and marked on top
            # of the earlier ones, so a run under another shows as a rim around it.
            xs, ys = decimate(steps, smooth(values))
            ax.plot(xs, ys, color=color, linewidth=max(0.8, 3.2 - 0.6 * i), linestyle=_STYLES[i % len(_STYLES)],
                    marker=_MARKERS[i % len(_MARKERS)], markersize=max(2.5, 6 - i), markevery=max(1, len(xs) // 12),
                    label=label)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        if len(panels) > 1:
            reward = REWARD_KEY.fullmatch(key)
            ax.set_title("total reward" if key == "reward" else reward.group(1) if reward else key)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the data, not on it
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: {next(iter(runs))}" if len(runs) == 1 else title)
    return fig


def write_figures(histories: dict, output_dir: str | Path) -> list[Path]:
    """Every figure of ``FIGURES`` that some run logged (``histories``: label -> log history or its
    :class:`Columns`), as ``output_dir/<stem>.png``; returns their paths."""
    from tqdm.auto import tqdm

    histories = {label: as_columns(h) for label, h in histories.items()}  # one extraction for all figures
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, *_ in tqdm(FIGURES, desc="plots", leave=False, disable=None):
        fig = plot_metric(histories, stem)
        if fig is None:
            log.info("no run logged %s; no %s.png", stem, stem)
            continue
        path = output_dir / f"{stem}.png"
        with atomic_path(path) as tmp:  # whole or not at all: a full disk leaves no partial PNG
            fig.savefig(tmp, dpi=100)
        written.append(path)
    return written
