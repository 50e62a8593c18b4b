"""The unbiased pass@k estimator (Chen et al., 2021) and bootstrap intervals over questions.

With ``n`` samples of a question of which ``c`` are correct::

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{j=0}^{k-1} (1 - c / (n - j))

The binomials overflow long before n = 1024, so the product is evaluated in log space,
``-expm1(sum_j log1p(-c / (n - j)))``: its partial sums give every k at once, and ``expm1`` keeps small values
precise. Results agree with exact rational arithmetic to ~1e-13 for n <= 1024.
"""

from __future__ import annotations

import numpy as np

from chartrl_colab.errors import ConfigError

__all__ = ["bootstrap_ci", "check_bootstrap", "pass_at_k", "pass_at_k_curve", "percentile_interval", "summarize"]

# Elements of the (distinct (n, c)) x k table built at once; bounds memory on inputs with many distinct n.
_TABLE_CHUNK = 1 << 22


def _as_counts(name: str, value) -> np.ndarray:
    arr = np.asarray(value)  # numpy's bool is no integer type: True is not a count
    if not (np.issubdtype(arr.dtype, np.integer) or (np.issubdtype(arr.dtype, np.floating)
                                                      and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))):
        raise ConfigError(f"{name} must hold whole numbers, got {value!r}")
    return arr.astype(np.int64)


def _check(n: np.ndarray, c: np.ndarray, k: np.ndarray) -> None:
    n, c, k = np.broadcast_arrays(n, c, k)
    if np.any(n < 1):
        raise ConfigError(f"n={int(n.min())} is not valid; a question needs at least 1 sample")
    if (bad := (c < 0) | (c > n)).any():
        i = bad.argmax()
        raise ConfigError(f"c={int(c.flat[i])} is not valid for n={int(n.flat[i])}; it must be in [0, n]")
    if np.any(k < 1):
        raise ConfigError(f"k={int(k.min())} is not valid; k must be >= 1")
    if (bad := k > n).any():
        i = bad.argmax()
        raise ConfigError(f"k={int(k.flat[i])} exceeds n={int(n.flat[i])}: pass@k needs at least k samples per "
                          f"question; choose k <= {int(n.min())} or sample more")


def _pairs(n: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (n, c) pairs of 1-D ``n``, ``c`` and, per element, the index of its pair."""
    # One int64 key per pair: a 1-D unique is far faster than np.unique(axis=0) on rows.
    base = int(n.max()) + 1
    uniq, inverse = np.unique(n * base + c, return_inverse=True)
    return uniq // base, uniq % base, inverse.ravel()


def _pass_table(n_u: np.ndarray, c_u: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """pass@k of each distinct (n, c) pair (rows) at each k of 1-D ``ks`` (columns), built in chunks."""
    kmax = int(ks.max())
    j = np.arange(kmax)
    out = np.empty((len(n_u), len(ks)))
    step = max(1, _TABLE_CHUNK // kmax)
    for start in range(0, len(n_u), step):
        n, c = n_u[start:start + step, None], c_u[start:start + step, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            # c / (n - j) reaches 1 exactly at j = n - c (C(n-c, k) = 0 from there on); clip past it and past n
            # (entries with k > n are never read).
            log_miss = np.cumsum(np.log1p(-np.minimum(c / np.maximum(n - j, 1), 1.0)), axis=1)
        out[start:start + step] = -np.expm1(log_miss[:, ks - 1])
    return out


def pass_at_k(n, c, k):
    """Unbiased pass@k for ``n`` samples with ``c`` correct; scalars or arrays, broadcast together.

    Returns a float for scalar inputs, else an array of the broadcast shape. ``k > n`` is a ConfigError.

    >>> round(pass_at_k(10, 3, 1), 12)
    0.3
    >>> round(pass_at_k(10, 3, 2), 12)  # 1 - C(7,2)/C(10,2) = 1 - 21/45
    0.533333333333
    >>> pass_at_k([4, 4, 4], [0, 1, 4], 4).tolist()
    [0.0, 1.0, 1.0]
    >>> pass_at_k(4, 1, 8)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chartrl_colab.errors.ConfigError: k=8 exceeds n=4: pass@k needs at least k samples per question; ...
    """
    n, c, k = np.broadcast_arrays(_as_counts("n", n), _as_counts("c", c), _as_counts("k", k))
    _check(n, c, k)
    out = np.empty(n.shape)
    if n.size:
        # Questions share few (n, c) pairs (c in 0..n) and few k: one small table, then a gather.
        n_u, c_u, pair = _pairs(n.ravel(), c.ravel())
        k_u, k_index = np.unique(k, return_inverse=True)
        out = _pass_table(n_u, c_u, k_u)[pair, k_index.ravel()].reshape(n.shape)
    return float(out) if out.ndim == 0 else out


def pass_at_k_curve(n, c, ks) -> np.ndarray:
    """pass@k of each question (rows) at each k of ``ks`` (columns): shape ``(questions, len(ks))``.

    ``n`` is one sample count for every question or one per question; ``c`` has one count per question.

    >>> pass_at_k_curve(4, [0, 1, 2], [1, 2, 4]).round(4).tolist()
    [[0.0, 0.0, 0.0], [0.25, 0.5, 1.0], [0.5, 0.8333, 1.0]]
    """
    c = np.atleast_1d(_as_counts("c", c))
    if c.ndim != 1:
        raise ConfigError(f"c must be one count per question (1-D), got shape {c.shape}")
    n = np.broadcast_to(_as_counts("n", n), c.shape).copy()
    ks = np.atleast_1d(_as_counts("k", ks))
    if ks.ndim != 1:
        raise ConfigError(f"ks must be a list of k values, got shape {ks.shape}")
    if c.size == 0 or ks.size == 0:
        return np.empty((c.size, ks.size))
    _check(n[:, None], c[:, None], ks[None, :])
    n_u, c_u, pair = _pairs(n, c)
    return _pass_table(n_u, c_u, ks)[pair]


def bootstrap_ci(values, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0):
    """Percentile bootstrap interval of the mean over questions (axis 0): ``(low, high)``.

    ``values`` is ``(questions,)`` or ``(questions, ...)`` (e.g. a pass@k curve); the bounds have the trailing
    shape (floats for 1-D input). Questions are resampled with replacement ``n_bootstrap`` times, the same
    resamples for every column, so the band of a curve is consistent across k.

    >>> lo, hi = bootstrap_ci([0.0, 1.0] * 50, n_bootstrap=2000, seed=1)
    >>> 0.38 < lo < 0.5 < hi < 0.62
    True
    >>> bootstrap_ci([0.25, 0.25, 0.25])
    (0.25, 0.25)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ConfigError("bootstrap_ci needs at least one question's value")
    check_bootstrap(n_bootstrap, confidence)
    q = values.shape[0]
    flat = values.reshape(q, -1)
    rng = np.random.default_rng(seed)
    means = np.empty((int(n_bootstrap), flat.shape[1]))
    # Resample counts (multinomial) times values is one matrix product per chunk: no (B, Q, K) gather.
    step = max(1, (1 << 22) // q)
    for start in range(0, int(n_bootstrap), step):
        block = means[start:start + step]
        block[:] = rng.multinomial(q, np.full(q, 1.0 / q), size=len(block)) @ flat / q
    low, high = percentile_interval(means, flat.mean(axis=0), confidence)
    if values.ndim == 1:
        return float(low[0]), float(high[0])
    return low.reshape(values.shape[1:]), high.reshape(values.shape[1:])


def check_bootstrap(n_bootstrap, confidence) -> None:
    """ConfigError unless ``confidence`` is in (0, 1) and ``n_bootstrap`` a whole number >= 1."""
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence!r} is not valid; it must be between 0 and 1 (e.g. 0.95)")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
        raise ConfigError(f"n_bootstrap={n_bootstrap!r} is not valid; it must be a whole number >= 1")


def percentile_interval(replicates: np.ndarray, point: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of bootstrap ``replicates`` (axis 0) at ``confidence``, widened to hold ``point``."""
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha], axis=0)
    # Identical resampled means can straddle the point by one ulp; an interval always holds its point.
    return np.minimum(low, point), np.maximum(high, point)


def summarize(n, c, ks, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Per-question pass@k, its mean over questions and the bootstrap interval of the mean, at each k of ``ks``.

    Returns ``{"k", "per_question" (questions x k), "mean", "ci_low", "ci_high"}`` as numpy arrays.

    >>> s = summarize(8, [0, 2, 8, 4], [1, 8], n_bootstrap=200)
    >>> s["mean"].tolist(), s["per_question"][:, 1].tolist()
    ([0.4375, 0.75], [0.0, 1.0, 1.0, 1.0])
    >>> bool(s["ci_low"][0] <= 0.4375 <= s["ci_high"][0])
    True
    """
    ks = np.atleast_1d(_as_counts("k", ks))
    per_question = pass_at_k_curve(n, c, ks)
    low, high = bootstrap_ci(per_question, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    return {"k": ks, "per_question": per_question, "mean": per_question.mean(axis=0), "ci_low": low, "ci_high": high}
