"""Reading completions and gold columns, shared by both reward presets (and generation, evaluation).

TRL hands a reward function its completions and the data set's gold columns as keyword lists aligned with them;
a missing or blank gold means "not applicable" (None: TRL leaves it out of the weighted sum).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any


def completion_text(completion: str | list[dict[str, Any]] | dict[str, Any]) -> str:
    """The text of a string or conversational completion (its last message). A ``<think>`` block TRL's chat-template
    parsing moved to ``reasoning_content`` (or ``thinking``) is put back in front: every reward sees the raw layout.

    >>> completion_text("<answer>4</answer>"), completion_text([{"role": "assistant", "content": "<answer>4</answer>"}])
    ('<answer>4</answer>', '<answer>4</answer>')
    >>> completion_text([{"role": "assistant", "reasoning_content": "r", "content": "<answer>4</answer>"}])
    '<think>r</think><answer>4</answer>'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        completion = completion[-1] if completion else {}
    content = completion.get("content") or ""
    if isinstance(content, list):  # multimodal content parts: keep the text ones
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    thinking = completion.get("reasoning_content") or completion.get("thinking")
    if thinking and "<think>" not in content:
        content = f"<think>{thinking}</think>{content}"
    return content


def last_user_text(prompt: list[dict[str, Any]]) -> str:
    """The text of a conversational prompt's last user message (its text parts joined); "" without one.

    >>> last_user_text([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Max?"}]}])
    'Max?'
    """
    return completion_text([m for m in prompt if m.get("role") == "user"])


def parse_tag(text: str, tag: str) -> str | None:
    """The stripped text inside the first ``<tag>...</tag>``, or ``None``."""
    match = re.search(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, re.DOTALL)
    return match.group(1).strip() if match else None


def parse_answer(text: str) -> str | None:
    """The stripped text inside the last ``<answer>...</answer>`` (the final one wins), or ``None``."""
    matches = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return matches[-1].strip() if matches else None


def to_float(text: str, percent: bool = False) -> float | None:
    """``float(text)``, else None; with ``percent`` a trailing ``%`` reads as a share of 100 (pix2struct's parse)."""
    try:
        return float(text.rstrip("%")) / 100.0 if percent and text.endswith("%") else float(text)
    except ValueError:
        return None


def align_golds(values: Sequence[Any] | None, n: int) -> list[Any]:
    """A gold column aligned with ``n`` completions (no column: None for every row); ValueError when its length is
    not ``n``."""
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"got {len(values)} gold values for {n} completions")
    return values


def gold_list(gold: Any) -> list[str]:
    """One gold or a list of acceptable golds, as strings, without the missing or blank ones."""
    golds = gold if isinstance(gold, (list, tuple)) else [gold]
    return [str(g) for g in golds if g is not None and str(g).strip()]


def score_golds(completions: list[Any], golds: Sequence[Any] | None,
                score: Callable[[str, Any], float | None]) -> list[float | None]:
    """Per completion: None when its gold is missing or blank, else ``score(text, gold)``.

    >>> score_golds(["<answer>3</answer>", "x", "y"], ["3", " ", None], lambda text, gold: 1.0)
    [1.0, None, None]
    """
    return [None if not gold_list(gold) else score(completion_text(completion), gold)
            for completion, gold in zip(completions, align_golds(golds, len(completions)), strict=True)]
