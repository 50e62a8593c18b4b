"""Accuracy as papers report it: ChartQA's relaxed accuracy (pix2struct) and EvoChart-QA's split rule.

The training reward ``rewards.relaxed_match`` is deliberately more lenient (commas, units, currency, both
readings of a percent); published ChartQA numbers (Chart-RVR's 84.56 among them) use pix2struct's
``relaxed_correctness``, reproduced here to the letter so a reported number means the same thing:

- both strings are read with ``float()``; a trailing ``%`` is stripped and the number divided by 100;
- when the prediction parses and the gold parses to a non-zero number, the relative error must be <= 5%;
- otherwise (text, or a gold of 0) the two strings must be equal after lower-casing, nothing else.

EvoChart-QA's README scores questions marked ``is_clear`` by exact string match and the rest with the 5%
tolerance.
"""

from __future__ import annotations

from typing import Any

from chartrl_colab.rewards.completions import to_float

METRIC_NAME = "relaxed_correctness (pix2struct)"
"""How tables and plots name the reference metric."""


def relaxed_correctness(target: str, prediction: str, max_relative_change: float = 0.05) -> bool:
    """pix2struct's ``relaxed_correctness`` of one prediction against one gold answer (argument order as there).

    >>> relaxed_correctness("1200", "1,234"), relaxed_correctness("45", "45%"), relaxed_correctness("12", "12 kg")
    (False, False, False)
    >>> relaxed_correctness("0", "0"), relaxed_correctness("-3", "-100"), relaxed_correctness("1000", "1e3")
    (True, False, True)
    >>> relaxed_correctness("100", "105"), relaxed_correctness("Yes", "yes"), relaxed_correctness("0", "0.0")
    (True, True, False)
    """
    prediction_float = to_float(prediction, percent=True)
    target_float = to_float(target, percent=True)
    # `target_float` as a truth value, as in the reference: a gold 0 falls through to the string comparison.
    if prediction_float is not None and target_float:
        return abs(prediction_float - target_float) / abs(target_float) <= max_relative_change
    return prediction.lower() == target.lower()


def _golds(golds: Any) -> list:
    """One gold or a list of golds, without the missing ones."""
    return [g for g in (golds if isinstance(golds, (list, tuple)) else [golds]) if g is not None]


def relaxed_accuracy(prediction: str | None, golds: Any) -> bool:
    """Best ``relaxed_correctness`` over one gold or a list of golds; no prediction is wrong.

    >>> relaxed_accuracy("7", ["six", "7"]), relaxed_accuracy(None, "7"), relaxed_accuracy("7", [])
    (True, False, False)
    """
    return prediction is not None and any(relaxed_correctness(str(g), prediction) for g in _golds(golds))


def evochart_correct(prediction: str | None, golds: Any, is_clear: bool | None) -> bool:
    """EvoChart-QA's rule: exact string match (surrounding blanks aside) when ``is_clear``, else 5% tolerance.

    >>> evochart_correct("10.2", "10", is_clear=True), evochart_correct("10.2", "10", is_clear=False)
    (False, True)
    >>> evochart_correct(" 10 ", ["10"], is_clear=True)
    True
    """
    if not is_clear:
        return relaxed_accuracy(prediction, golds)
    return prediction is not None and any(prediction.strip() == str(g).strip() for g in _golds(golds))
