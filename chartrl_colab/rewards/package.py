"""The ``package`` reward preset: Chart-RVR's seven rewards (sanchit97/chartrl, ``grpo_utils.py``), smoothed.

The policy answers as ``ANSWER_FORMAT`` asks::

    <think><type>bar</type><table>{"columns": ["label", "value"], "rows": [["A", 3], ["B", 5]]}</table>
    reasoning text</think><answer>5</answer>

Each is a TRL reward function ``f(completions, **gold_columns) -> list[float | None]`` (None: no gold, "not
applicable"; see :mod:`.completions`). Scales: format 0 or 2; accuracy 0 or 1 (ChartQA-relaxed, 5%); length,
tags, chart_type, table and reasoning in [0, 1]. The original's scales and layout are :mod:`.chart_rvr`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from chartrl_colab.rewards.completions import completion_text, gold_list, parse_answer, parse_tag, score_golds

ANSWER_FORMAT = (
    "Answer in exactly this format: first think inside <think> </think>. The think block starts with the "
    "chart type inside <type> </type> (for example bar, line or pie), then the chart's data as JSON inside "
    '<table> </table> with the keys "columns" (list of header strings) and "rows" (list of rows, each a list '
    "of cell values), then your step-by-step reasoning. After </think>, give only the final answer (a number "
    "or a short phrase, no units) inside <answer> </answer>. Example:\n"
    '<think><type>bar</type><table>{"columns": ["label", "value"], "rows": [["A", 3], ["B", 5]]}</table> '
    "B has the larger value, 5.</think><answer>5</answer>"
)
"""Instruction for the system prompt describing the completion format the rewards score."""

LENGTH_TARGET_WORDS = 50
"""Reasoning words at which ``length_reward`` saturates (Chart-RVR asks for ~50 tokens of reasoning)."""

_TAGS = ("<think>", "</think>", "<answer>", "</answer>", "<type>", "</type>", "<table>", "</table>")

# fullmatch: nothing may precede <think> or follow </answer>; the inner order is checked separately.
_FORMAT_RE = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)
_THINK_LAYOUT_RE = re.compile(r"<type>.*?</type>.*?<table>.*?</table>", re.DOTALL)
_TYPE_TABLE_RE = re.compile(r"<(type|table)>.*?</\1>", re.DOTALL)
_WS_RE = re.compile(r"\s+")

# A number optionally wrapped in a sign, a currency symbol, thousands commas, a percent sign and a unit
# word ("$1,234", "-12 kg", "45%"). The unit may not contain digits, so "2 to 3" stays text.
_NUMBER_RE = re.compile(
    r"""
    (?P<sign>[-+\u2212]?)\s*
    (?:[$\u20ac\u00a3\u00a5\u20b9]\s*)?
    (?P<sign2>[-+\u2212]?)
    (?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)
    \s*(?P<pct>%|percent\b|per\s?cent\b)?
    (?P<unit>(?:[^\W\d_]|[$\u20ac\u00a3\u00a5\u20b9\u00b0])[^\d]{0,24})?
    """,
    re.VERBOSE | re.IGNORECASE,
)


def reasoning_text(text: str) -> str:
    """Return the free-text reasoning of ``<think>``: its content minus the ``<type>`` and ``<table>`` blocks.

    >>> (reasoning_text('<think><type>bar</type><table>{}</table> B is  taller.</think><answer>B</answer>'),
    ...  reasoning_text("<answer>B</answer>"))
    ('B is taller.', '')
    """
    think = parse_tag(text, "think")
    return "" if think is None else _WS_RE.sub(" ", _TYPE_TABLE_RE.sub(" ", think)).strip()


def _normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace and drop a trailing period (ChartQA's text comparison)."""
    return _WS_RE.sub(" ", text).strip().rstrip(".").strip().lower()


def _parse_number(text: str) -> tuple[float, ...] | None:
    """Return the candidate values of a numeric string, or ``None`` when it is not a single number.

    A percentage yields both readings (``"45%"`` -> 45 and 0.45) so "45" and "0.45" both match it.
    """
    match = _NUMBER_RE.fullmatch(text.strip().rstrip(".").strip())
    if match is None or (match.group("sign") and match.group("sign2")):
        return None
    value = float(match.group("num").replace(",", ""))  # the pattern admits only digits, commas and one point
    if set(match.group("sign") + match.group("sign2")) & {"-", "\u2212"}:
        value = -value
    if not math.isfinite(value):  # hundreds of digits read as inf
        return None
    return (value, value / 100.0) if match.group("pct") else (value,)


def relaxed_match(pred: str, gold: str, tolerance: float = 0.05) -> bool:
    """ChartQA relaxed correctness of one prediction against one gold answer.

    Numbers (commas, percent signs, currency symbols and trailing units are ignored) match when their
    relative error is at most ``tolerance``; a gold 0 needs an exact 0. Anything else must be equal after
    lower-casing, collapsing whitespace and dropping a trailing period. An empty prediction never matches.
    As in ChartQA, years are plain numbers, so "2019" matches "2020" (0.05% off).

    >>> relaxed_match("1,234", "1200"), relaxed_match("United States.", "united states")
    (True, True)
    >>> relaxed_match("$12", "12 dollars"), relaxed_match("45%", "45"), relaxed_match("-3.1", "-3")
    (True, True, True)
    >>> relaxed_match("106", "100"), relaxed_match("0.01", "0")
    (False, False)
    """
    if not _normalize_text(pred):
        return False
    pred_values, gold_values = _parse_number(pred), _parse_number(gold)
    if pred_values is not None and gold_values is not None:
        # the epsilon keeps the exact 5% boundary (105 vs 100) inside despite float rounding
        if any(p == g if g == 0 else abs(p - g) / abs(g) <= tolerance + 1e-9
               for p, g in itertools.product(pred_values, gold_values)):
            return True
    return _normalize_text(pred) == _normalize_text(gold)


def format_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Reward 2.0 for ``<think>`` (holding ``<type>...</type>`` then ``<table>...</table>``) then ``<answer>``.

    Whitespace between and around the blocks is allowed; nothing else may come before ``<think>`` or after
    ``</answer>``. Chart-RVR weighs format 2.0 so the layout is learned before the content rewards matter.

    >>> good = '<think><type>bar</type><table>{"columns": [], "rows": []}</table> ok</think>\\n<answer>3</answer>'
    >>> format_reward([good, "<think>no type</think><answer>3</answer>", "3"])
    [2.0, 0.0, 0.0]
    """
    def ok(match: re.Match | None) -> bool:  # one block each: no nesting or repeats
        return (match is not None and "<think>" not in match["think"] and "<answer>" not in match["answer"]
                and _THINK_LAYOUT_RE.search(match["think"]) is not None)

    return [2.0 if ok(_FORMAT_RE.fullmatch(completion_text(c))) else 0.0 for c in completions]


def accuracy_reward(completions: list[Any], answer: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Reward 1.0 when the ``<answer>`` text is relaxed-correct (see ``relaxed_match``), else 0.0.

    ``answer`` holds one gold per completion: a string, a number, or a list of acceptable answers (correct if
    any matches). No ``<answer>`` tag or an empty one scores 0.0; a ``None``, blank or empty-list gold gives
    ``None``.

    >>> accuracy_reward(["<answer>1,020</answer>", "<answer>Blue</answer>", "42"],
    ...                 answer=["1000", ["red", "blue"], "42"])
    [1.0, 1.0, 0.0]
    >>> accuracy_reward(["<answer>3</answer>"], answer=[None])
    [None]
    """
    def score(text: str, gold: Any) -> float:
        pred = parse_answer(text)
        return float(pred is not None and any(relaxed_match(pred, g) for g in gold_list(gold)))

    return score_golds(completions, answer, score)


def length_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Reward ``min(1, words / LENGTH_TARGET_WORDS)`` for the free reasoning inside ``<think>``.

    Only the reasoning counts (``<type>`` and ``<table>`` removed), so a long table cannot buy length; a smooth
    version of Chart-RVR's character window and ``<step-k>`` markers (rambling is kept in check by truncation
    costing format and accuracy). No ``<think>`` block scores 0.0.

    >>> length_reward(["<think>" + "word " * 25 + "</think>", "<think>" + "word " * 80 + "</think>", "none"])
    [0.5, 1.0, 0.0]
    """
    return [min(1.0, len(reasoning_text(completion_text(c)).split()) / LENGTH_TARGET_WORDS) for c in completions]


def tag_count_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Reward 1/8 for each of ``<think> </think> <answer> </answer> <type> </type> <table> </table>`` seen once.

    A dense version of Chart-RVR's all-or-nothing count check: a missing or repeated tag costs its share.

    >>> tag_count_reward(["<think><type>bar</type><table>{}</table></think><answer>1</answer>",
    ...                   "<think>x</think><answer>1</answer><answer>2</answer>"])
    [1.0, 0.25]
    """
    return [sum(completion_text(c).count(tag) == 1 for tag in _TAGS) / len(_TAGS) for c in completions]


def _normalize_chart_type(text: str) -> str:
    return re.sub(r"\s+(?:chart|graph|plot)$", "", _normalize_text(text))


def chart_type_reward(completions: list[Any], chart_type: Sequence[str | None] | None = None,
                      **kwargs: Any) -> list[float | None]:
    """Reward 1.0 when the ``<type>`` text names the gold chart type (case-insensitive, a trailing "chart", "graph"
    or "plot" ignored on both sides), else 0.0. A ``None`` or blank gold (or no ``chart_type`` column) gives ``None``.

    >>> chart_type_reward(["<type>Bar chart</type>", "<type>line</type>", "bar", "<type>pie</type>"],
    ...                   chart_type=["bar", "bar", "bar", None])
    [1.0, 0.0, 0.0, None]
    """
    def score(text: str, gold: Any) -> float:
        pred = parse_tag(text, "type")
        return float(pred is not None and _normalize_chart_type(pred) == _normalize_chart_type(str(gold)))

    return score_golds(completions, chart_type, score)


def _load_table(raw: Any) -> dict[str, Any] | None:
    """Parse a table given as a dict or a JSON string (```json fences allowed); ``None`` if not an object."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if fenced := re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL):  # models often fence their JSON
        text = fenced.group(1).strip()
    try:
        table = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return table if isinstance(table, dict) else None


def _columns(table: dict[str, Any]) -> list[str]:
    columns = table.get("columns")
    return [_normalize_text(str(c)) for c in columns] if isinstance(columns, list) else []


def _rows(table: dict[str, Any]) -> list[list[Any]]:
    rows = table.get("rows")
    return [r for r in rows if isinstance(r, list)] if isinstance(rows, list) else []


def _cell_match(pred: Any, gold: Any, tolerance: float = 0.05) -> bool:
    """Cells match by ``relaxed_match``; empty/null cells only match each other."""
    pred_s = "" if pred is None else str(pred)
    gold_s = "" if gold is None else str(gold)
    if not _normalize_text(gold_s):
        return not _normalize_text(pred_s)
    return relaxed_match(pred_s, gold_s, tolerance)


def _table_score(pred: dict[str, Any], gold: dict[str, Any]) -> float:
    """``table_reward``'s score of a parsed table."""
    gold_cols, pred_cols = _columns(gold), _columns(pred)
    common = sum((Counter(gold_cols) & Counter(pred_cols)).values())  # a predicted header matches one gold at most
    header = common / max(len(gold_cols), len(pred_cols)) if gold_cols or pred_cols else 0.0

    gold_rows, pred_rows = _rows(gold), _rows(pred)
    # Read predicted cells through the gold column order, so swapped but correctly named columns still match.
    order = [pred_cols.index(c) if c in pred_cols else j for j, c in enumerate(gold_cols)]
    width = max([len(gold_cols)] + [len(r) for r in gold_rows])
    order += list(range(len(order), width))

    def hits(pred_row: list[Any], gold_row: list[Any], tolerance: float = 0.05) -> int:
        return sum(order[j] < len(pred_row) and _cell_match(pred_row[order[j]], cell, tolerance)
                   for j, cell in enumerate(gold_row))

    # Rows are paired greedily by most matching cells, so row order does not matter (Chart-RVR sorts rows);
    # exact matches break ties, since neighbouring rows can be within 5% of each other.
    free = list(range(len(pred_rows)))
    cell_hits = 0
    for gold_row in gold_rows[: len(pred_rows)]:  # each pairing uses up one predicted row
        best = max(free, key=lambda i: (hits(pred_rows[i], gold_row), hits(pred_rows[i], gold_row, 0.0)))
        cell_hits += hits(pred_rows[best], gold_row)
        free.remove(best)
    # Dividing by the larger table penalises both missing and invented cells.
    n_cells = max(sum(len(r) for r in gold_rows), sum(len(r) for r in pred_rows))
    cells = cell_hits / n_cells if n_cells else float(not pred_rows)
    return 0.25 + 0.25 * header + 0.5 * cells


def table_reward(completions: list[Any], table: Sequence[Any] | None = None, **kwargs: Any) -> list[float | None]:
    """Reward in [0, 1] for the ``<table>`` JSON against the gold table.

    ``0.25`` if the content parses to a JSON object (```json fences allowed), ``+ 0.25 x`` the header
    overlap (case-insensitive, order-free, divided by the longer header list) ``+ 0.5 x`` the cell overlap
    (rows paired greedily, columns aligned by name, cells compared with ``relaxed_match``, divided by the
    larger cell count). No ``<table>`` or invalid JSON scores 0.0. The gold is a dict or a JSON string;
    ``None`` or an unparseable gold gives ``None``.

    >>> gold = {"columns": ["label", "value"], "rows": [["A", 3], ["B", 5]]}
    >>> table_reward(['<table>{"columns": ["Label", "value"], "rows": [["B", 5.1], ["A", 3]]}</table>',
    ...               '<table>{"columns": ["label", "value"], "rows": [["A", 9], ["B", 9]]}</table>',
    ...               '<table>{"columns": ["label"</table>'], table=[gold, json.dumps(gold), gold])
    [1.0, 0.75, 0.0]
    """
    def score(text: str, gold_raw: Any) -> float | None:
        gold = _load_table(gold_raw)
        if gold is None:
            return None
        content = parse_tag(text, "table")
        pred = _load_table(content) if content is not None else None
        return 0.0 if pred is None else _table_score(pred, gold)

    return score_golds(completions, table, score)


def reasoning_reward(completions: list[Any], reasoning: Sequence[str | None] | None = None,
                     **kwargs: Any) -> list[float | None]:
    """Reward the cosine similarity, clipped to [0, 1], of :func:`reasoning_text` and the gold rationale.

    Empty reasoning scores 0.0. Embeddings: all-MiniLM-L6-v2 (:mod:`.similarity`), one batched ``encode`` per
    call. A ``None`` or blank gold gives ``None`` (and loads no model).

    >>> scores = reasoning_reward(["<think>Sales rose each year, peaking in 2020.</think><answer>2020</answer>",
    ...                            "<think>I like pizza.</think><answer>2020</answer>", "<answer>2020</answer>"],
    ...                           reasoning=["Sales increased every year and were highest in 2020."] * 3)
    >>> scores[0] > 0.6 > scores[1], scores[2]
    (True, 0.0)
    >>> reasoning_reward(["<think>x</think>"], reasoning=[None])
    [None]
    """
    from chartrl_colab.rewards.similarity import gold_similarity

    texts = [reasoning_text(completion_text(completion)) for completion in completions]
    return [None if score is None else min(1.0, max(0.0, score))
            for score in gold_similarity(texts, reasoning)]


REWARD_FUNCS: dict[str, Callable[..., list[float | None]]] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "length": length_reward,
    "tags": tag_count_reward,
    "chart_type": chart_type_reward,
    "table": table_reward,
    "reasoning": reasoning_reward,
}
"""Registry of the reward functions by short name, in Chart-RVR's order."""

