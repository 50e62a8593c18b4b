"""Whether a run has settled, judged by what its objective can move (the training summary's verdict).

grpo keeps the original scripts' verdict on the loss (:func:`convergence`). The on-policy loss of psr, nsr and
w-reinforce is set by which samples a step kept, not by learning (``_WHY``): they are judged by the verifier
accuracy (TRL's ``rewards/<reward function>/mean``) and the token entropy, settled when neither moves beyond
its noise over the last window (:func:`still_moving`).
"""

from __future__ import annotations

import numpy as np

from chartrl_colab.errors import ConfigError
from chartrl_colab.rewards.package import REWARD_FUNCS

# Loss std/|mean| over the last window below this reads as converged (the original scripts' verdict).
CONVERGENCE_THRESHOLD = 0.01
# The default window: the last 10% of the logged values, at least this many.
MIN_WINDOW = 10
# Modes whose loss is a learning signal; the others are judged by verifier accuracy and entropy.
LOSS_JUDGED = ("grpo",)
# Below these a change between the two halves of the window is no movement, whatever the noise: accuracy
# (absolute, a fraction of completions) and entropy (relative to its mean, as the loss threshold).
ACCURACY_TOLERANCE = 0.02
ENTROPY_TOLERANCE = CONVERGENCE_THRESHOLD
# How many standard errors a change must exceed to count as movement.
NOISE_SIGMAS = 2.0
_WHY = {
    "psr": "on-policy, psr's loss is -1 at every step that keeps a correct sample (0 otherwise), whatever it learns",
    "nsr": "on-policy, nsr's loss is 1 at every step, whatever it learns",
    "w-reinforce": "on-policy, w-reinforce's loss is 1 - (1 + lambda_psr) x the correct tokens' share, "
                   "whatever it learns",
}


def check_window(window) -> None:
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 2):
        raise ConfigError(f"window={window!r} is not valid; it must be a whole number >= 2 (logged loss values)")


def window_size(n: int, window: int | None) -> int:
    """The window over ``n`` logged values: ``window``, else the last 10% (at least ``MIN_WINDOW``), at most n."""
    check_window(window)
    return min(n, window if window is not None else max(MIN_WINDOW, n // 10))


def convergence(losses: np.ndarray, window: int | None) -> dict:
    """The original scripts' verdict on the loss: std/|mean| over the last window below ``CONVERGENCE_THRESHOLD``."""
    w = window_size(len(losses), window)
    tail = losses[-w:]
    mean = float(np.mean(tail)) if w >= 2 else 0.0
    # NaN in the window (a diverged loss) gives a NaN ratio: not converged, and the summary says nan.
    cv = float(np.std(tail)) / abs(mean) if mean != 0 else None
    return {"window": w, "loss_cv": cv, "threshold": CONVERGENCE_THRESHOLD,
            "converged": bool(cv is not None and cv < CONVERGENCE_THRESHOLD)}


def verifier_key(keys, verifier: str | None = None) -> str | None:
    """The logged key of the verifier reward's mean, if the log has it (``verifier``: a reward name;
    default ``accuracy``).

    >>> verifier_key({"loss", "rewards/accuracy_reward/mean"}), verifier_key({"loss"}, "accuracy")
    ('rewards/accuracy_reward/mean', None)
    """
    func = REWARD_FUNCS.get(verifier or "accuracy")
    key = f"rewards/{func.__name__ if func else verifier}/mean"
    return key if key in keys else None


def trend(values: np.ndarray, window: int | None) -> dict | None:
    """The means of the first and last ``h`` finite values and their change, ``h`` the window (at most half the
    values); None without values.

    >>> trend(np.array([0.0, 0.0, 0.5, 1.0]), None)
    {'first': 0.0, 'last': 0.75, 'change': 0.75, 'window': 2}
    """
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    h = max(1, min(window_size(len(values), window), len(values) // 2))
    first, last = float(np.mean(values[:h])), float(np.mean(values[-h:]))
    return {"first": first, "last": last, "change": last - first, "window": h}


def still_moving(values: np.ndarray, tolerance: float) -> tuple[bool, float]:
    """(moving, change) over ``values`` (the last window): the change between its two halves' means is
    beyond both ``NOISE_SIGMAS`` standard errors and ``tolerance``.

    >>> still_moving(np.array([0.1, 0.0, 0.1, 0.0]), 0.02), still_moving(np.array([0.0, 0.0, 0.5, 0.5]), 0.02)
    ((False, 0.0), (True, 0.5))
    """
    half = len(values) // 2
    a, b = values[:half], values[-half:]
    change = float(np.mean(b) - np.mean(a))
    noise = float(np.sqrt(np.var(a, ddof=1) / half + np.var(b, ddof=1) / half)) if half >= 2 else 0.0
    return bool(abs(change) > max(NOISE_SIGMAS * noise, tolerance)), change


def judge(mode: str | None, losses: np.ndarray, accuracy: np.ndarray | None, entropy: np.ndarray | None,
          window: int | None = None, accuracy_key: str | None = None) -> dict:
    """The verdict of one run: ``signal`` (what was read), ``converged`` (True, False or None: unknown) and
    ``text`` (the summary's line). A run of unknown mode is judged by its loss, as grpo.
    """
    if mode is None or mode in LOSS_JUDGED:
        c = convergence(losses, window)
        over = f"over the last {c['window']} logged steps"
        if c["loss_cv"] is None:
            why = "fewer than 2 logged losses" if c["window"] < 2 else f"the mean loss {over} is 0"
            text = f"? Convergence unknown ({why})"
        elif c["converged"]:
            text = f"✓ Converged (loss std/mean = {c['loss_cv']:.4f} {over})"
        else:
            text = (f"⚠ Not converged yet (loss std/mean = {c['loss_cv']:.4f} {over}; "
                    f"converged below {c['threshold']})")
        return {"signal": "loss", "converged": c["converged"] if c["loss_cv"] is not None else None,
                "window": c["window"], "text": text}

    out = {"signal": f"verifier accuracy ({accuracy_key or 'not logged'}) and entropy",
           "why_not_loss": _WHY.get(mode, ""), "converged": None, "window": 0}
    if accuracy is None or not len(accuracy):
        return {**out, "text": "? Convergence unknown (the log holds no verifier accuracy: no rewards/<verifier>/mean)"}
    w = window_size(len(accuracy), window)
    out["window"] = w
    if not np.any(accuracy):
        flat = "" if entropy is None or not len(entropy) else f"; entropy {entropy[0]:.3f} → {entropy[-1]:.3f} nats"
        return {**out, "text": f"⚠ Nothing to judge: verifier accuracy 0 at every logged step (no correct "
                               f"completion){flat}"}
    if w < 4:
        return {**out, "text": f"? Convergence unknown (fewer than 4 logged steps of verifier accuracy; {w} logged)"}
    moving = []
    acc_moving, acc_change = still_moving(accuracy[-w:], ACCURACY_TOLERANCE)
    if acc_moving:
        moving.append(f"verifier accuracy {acc_change:+.3f}")
    if entropy is not None and len(entropy) >= 4:
        tail = entropy[-window_size(len(entropy), window):]
        ent_moving, ent_change = still_moving(tail, ENTROPY_TOLERANCE * abs(float(np.mean(tail))))
        if ent_moving:
            moving.append(f"entropy {ent_change:+.3f} nats")
    over = f"over the last {w} logged steps"
    if moving:
        return {**out, "converged": False,
                "text": f"⚠ Not converged yet ({over}, second half against first: {', '.join(moving)})"}
    return {**out, "converged": True,
            "text": f"✓ Converged (verifier accuracy and entropy flat within their noise {over})"}
