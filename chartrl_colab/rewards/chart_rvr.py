"""The original Chart-RVR reward preset: its seven rewards at their scales and layout, and its prompt.

Transcribed from Chart-RVR (sanchit97/chartrl, ``grpo_utils.py``; prompt: ``prompts.py`` template 4) so
GRPO sees the same reward sums, hence the same advantages, as the paper's runs. The layout is
newline-strict, as ``CHART_RVR_EXAMPLE`` shows.

Scales (the original's): format 0 or 2; tags 0 or 2; accuracy 0 or 1; chart_type 0 or 1; length 0..2.5;
table 0..(1.25 + 0.5 x columns); reasoning a raw cosine in [-1, 1]. The original's bugs are fixed, not copied
(listed in the README, "Reproducing Chart-RVR"). A ``None`` gold gives ``None`` ("not applicable", TRL's
signature), where the original raised or returned 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from chartrl_colab.rewards.completions import completion_text, gold_list, parse_answer, parse_tag, score_golds, to_float
from chartrl_colab.rewards.package import REWARD_FUNCS as PACKAGE_REWARDS

CHART_TYPES = ("line", "bar", "stacked bar", "pie", "histogram", "scatterplot", "area", "stacked area", "bubble",
               "treemap")

CHART_RVR_EXAMPLE = (
    "<think>\n<type>bar</type>\n"
    '<table>{"columns": ["label", "value"], "rows": [["A", "3"], ["B", "5"]]}</table>\n'
    "<step-1>: The question asks for the larger of the two bars.\n"
    "<step-2>: A is 3 and B is 5.\n"
    "<step-3>: 5 is more than 3, so the answer is 5.\n"
    "</think>\n<answer>5</answer>"
)
"""A completion in the layout the prompt asks for; it scores full marks under ``format_reward``."""

# Template 4's words, block for block, without its indentation and two stray backslashes; the example is added
# because the template's skeleton puts an instruction line between <think> and <type>, which its format scores 0.
CHART_RVR_PROMPT = (
    "You are a vision-language assistant. You are given a chart image and a query about the chart.\n"
    "Think step-by-step about how to answer the query based on the chart image and then provide the final "
    "answer.\n\n"
    "### Output format\n"
    "Respond **with exactly two blocks in order and nothing else**:\n"
    "<think>\n"
    "First output the type of chart in <type>, then output the underlying data table and finally, think "
    "step-by-step about how to answer the query based on the chart image and then provide the final answer.\n"
    "<type>\n"
    f"Type of chart - one word from {', '.join(CHART_TYPES)}.\n"
    "</type>\n"
    "Next output the data table in the <table></table> tags\n"
    "<table>\n"
    'json table - for the chart image, output only a JSON object with: "columns": list of column headers, '
    '"rows": list-of-lists, one per data row\n'
    "No prose, no comments.\n"
    "1. Respond with **only** a JSON object\n"
    "2. The JSON must use exactly this schema:\n"
    '    {\n        "columns": [...],\n        "rows": [[...], [...],..., [...]]\n    }\n'
    "3. Do NOT output HTML, Markdown, or commentary. Any deviation gets zero reward.\n"
    "</table>\n"
    "Provide your reasoning here in steps:\n"
    "<step-1>: Provide a description of reasoning\n"
    "<step-2>: Gather ALL the appropriate data from the chart\n"
    "<step-3>: Break down the query into smaller parts and verify each part with the data\n"
    "...\n"
    "<step-n>: Do the final calculation or reasoning to derive the answer\n"
    "</think>\n"
    "<answer>\n"
    "Final answer on a single line\n"
    "</answer>\n"
    "Example:\n" + CHART_RVR_EXAMPLE
)
"""Chart-RVR's system prompt (template 4) with one concrete example appended."""

_FORMAT_RE = re.compile(
    r"<think>\n<type>.*?</type>\n<table>.*?</table>(?P<steps>.*?)</think>\n<answer>(?P<answer>.*?)</answer>\s*",
    re.DOTALL,
)
# The original's ten count patterns: each tag once, and the two newline joints of the layout once.
_COUNT_PATTERNS = ("<type>", "</type>", "<think>", "</think>", "<answer>", "</answer>", "<table>", "</table>",
                   "<think>\n<type>", "</type>\n<table>")


def format_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """2.0 for exactly ``<think>\\n<type>..</type>\\n<table>..</table>..</think>\\n<answer>..</answer>`` and blanks;
    no block may hold a second ``</think>`` or ``</answer>``.

    >>> format_reward([CHART_RVR_EXAMPLE, CHART_RVR_EXAMPLE.replace("<think>\\n", "<think>"),
    ...                CHART_RVR_EXAMPLE + "\\nmore"])
    [2.0, 0.0, 0.0]
    """
    def ok(match: re.Match | None) -> bool:
        return match is not None and "</think>" not in match.group("steps") and "</answer>" not in match.group("answer")

    return [2.0 if ok(_FORMAT_RE.fullmatch(completion_text(c))) else 0.0 for c in completions]


def tag_count_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """2.0 when each of the eight tags and the joints ``<think>\\n<type>``, ``</type>\\n<table>`` occur once, else 0.0.

    >>> tag_count_reward([CHART_RVR_EXAMPLE, CHART_RVR_EXAMPLE.replace("</type>\\n", "</type> ")])
    [2.0, 0.0]
    """
    return [2.0 if all(completion_text(c).count(p) == 1 for p in _COUNT_PATTERNS) else 0.0 for c in completions]


def _correct(pred: str, gold: str) -> bool:
    """Numbers within 5% of the gold (an exact 0 for a gold 0); anything else equal after lower-casing."""
    p, g = to_float(pred), to_float(gold)
    if p is not None and g is not None:
        return p == 0 if g == 0 else abs(p - g) / abs(g) <= 0.05
    return pred.lower() == gold.lower()


def accuracy_reward(completions: list[Any], answer: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the last ``<answer>`` (trailing periods dropped) matches the gold, else 0.0; needs a ``<think>``.

    ``answer`` holds a string or a list of acceptable strings per completion.

    >>> accuracy_reward(["<think>x</think><answer>0</answer>", "<think>x</think><answer>5</answer>",
    ...                  "<answer>0</answer>", "<think>x</think><answer>Blue.</answer>"],
    ...                 answer=["0", "-3", "0", ["red", "blue"]])
    [1.0, 0.0, 0.0, 1.0]
    """
    def score(text: str, gold: Any) -> float:
        pred = (parse_answer(text) or "").rstrip(".") if "<think>" in text else ""
        return float(bool(pred) and any(_correct(pred, g.strip()) for g in gold_list(gold)))

    return score_golds(completions, answer, score)


def length_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the ``<think>`` text (stripped, type and table included) has 71 to 250 characters, plus
    0.25 for the block and 0.25 per ``<step-`` marker in it, that part capped at 1.5. No ``<think>``: 0.0.

    >>> length_reward(["<think>" + "x" * 71 + "</think>", "<think>" + "x" * 251 + "</think>",
    ...                "<think><step-1>: a <step-2>: b</think>", "<step-1>: no think block"])
    [1.25, 0.25, 0.75, 0.0]
    """
    def score(think: str | None) -> float:
        if think is None:
            return 0.0
        return (1.0 if 70 < len(think) <= 250 else 0.0) + min(0.25 * (think.count("<step-") + 1), 1.5)

    return [score(parse_tag(completion_text(completion), "think")) for completion in completions]


def chart_type_reward(completions: list[Any], chart_type: Sequence[str | None] | None = None,
                      **kwargs: Any) -> list[float | None]:
    """1.0 when the ``<type>`` text equals the gold type, ignoring case, else 0.0.

    >>> chart_type_reward(["<type>Bar</type>", "<type>bar chart</type>", "bar", "<type>pie</type>"],
    ...                   chart_type=["bar", "bar", "bar", None])
    [1.0, 0.0, 0.0, None]
    """
    def score(text: str, gold: Any) -> float:
        pred = parse_tag(text, "type")
        return float(pred is not None and pred.lower() == str(gold).strip().lower())

    return score_golds(completions, chart_type, score)


def _strings(value: Any) -> list[str]:
    """A header or row as strings, as the original's ``parse_int=str`` JSON reading leaves them."""
    if not isinstance(value, list):
        return []
    return ["" if v is None else v if isinstance(v, str) else json.dumps(v) for v in value]


def _read_table(raw: Any) -> dict[str, Any] | None:
    """A table from a dict or JSON text, numbers kept as their text (``parse_int=str``, ``parse_float=str``)."""
    if isinstance(raw, dict):
        return raw
    try:
        table = json.loads(raw, parse_int=str, parse_float=str, parse_constant=str)
    except (TypeError, ValueError, RecursionError):
        return None
    return table if isinstance(table, dict) else None


def _compare_tables(pred: dict[str, Any], gold: dict[str, Any]) -> float:
    """0.5 x sorted headers matched in place + 0.5 per cell matched in place (rows sorted) / rows."""
    pred_cols = sorted(_strings(pred.get("columns")), key=str.lower)
    gold_cols = sorted(_strings(gold.get("columns")), key=str.lower)
    score = 0.0
    if pred_cols or gold_cols:
        hits = sum(p.lower() == g.lower() for p, g in zip(pred_cols, gold_cols))
        score += 0.5 * hits / max(len(pred_cols), len(gold_cols))
    pred_rows = sorted(_strings(r) if isinstance(r, list) else [str(r)] for r in pred.get("rows") or [])
    gold_rows = sorted(_strings(r) if isinstance(r, list) else [str(r)] for r in gold.get("rows") or [])
    if pred_rows or gold_rows:
        hits = sum(p == g for pr, gr in zip(pred_rows, gold_rows) for p, g in zip(pr, gr))
        score += 0.5 * hits / max(len(pred_rows), len(gold_rows))
    return score


def table_reward(completions: list[Any], table: Sequence[Any] | None = None, **kwargs: Any) -> list[float | None]:
    """Original table credit: 0.5 if the ``<table>`` JSON parses (a ```json fence allowed), 0.25 if its keys
    are exactly columns and rows, 0.5 x sorted headers matched, 0.5 per matching cell of the sorted rows
    divided by the row count (a full table earns 0.5 x columns). Counts divide by the larger table.

    >>> gold = {"columns": ["label", "value"], "rows": [["A", "3"], ["B", "5"]]}
    >>> table_reward(['<table>{"columns": ["Value", "label"], "rows": [["B", 5], ["A", 3]]}</table>',
    ...               '<table>{"columns": ["label", "value"], "rows": [["A", 3]]}</table>',
    ...               '<table>{"columns": </table>', "no table"], table=[gold] * 4)
    [2.25, 1.75, 0.0, 0.0]
    """
    def score(text: str, gold_raw: Any) -> float | None:
        gold = _read_table(gold_raw)
        if gold is None:
            return None
        content = parse_tag(text, "table")
        if content is None:
            return 0.0
        if "```json" in content:
            block = content.split("```json")[-1].split("```")[0].strip()
        else:
            block = content.replace("\n", "").strip()
        pred = _read_table(block)
        if pred is None:  # unparseable, or JSON that is not an object: nothing to compare
            try:
                json.loads(block)
                return 0.5
            except (ValueError, RecursionError):
                return 0.0
        return 0.5 + (0.25 if set(pred) == {"columns", "rows"} else 0.0) + _compare_tables(pred, gold)

    return score_golds(completions, table, score)


def reasoning_reward(completions: list[Any], reasoning: Sequence[str | None] | None = None,
                     **kwargs: Any) -> list[float | None]:
    """Raw cosine similarity (-1..1, all-MiniLM-L6-v2) of the ``<think>`` text after ``</table>`` to the gold
    rationale. No ``<think>`` block, no ``</table>`` in it or nothing after it: 0.0 (and nothing embedded).

    >>> reasoning_reward(["<think>\\n<type>bar</type>\\n<table>{}</table>\\n</think>"], reasoning=["<step-1>: x"])
    [0.0]
    >>> reasoning_reward(["<think>x</think>"], reasoning=[None])
    [None]
    """
    from chartrl_colab.rewards.similarity import gold_similarity

    thinks = [parse_tag(completion_text(completion), "think") for completion in completions]
    texts = [t.split("</table>")[-1].strip() if t is not None and "</table>" in t else "" for t in thinks]
    return gold_similarity(texts, reasoning)  # unclipped, as the original


# The package preset's reward names and function names, each bound to this module's function of that name
# (TRL logs ``rewards/<function name>/mean``, so runs of either preset plot side by side).
REWARD_FUNCS: dict[str, Callable[..., list[float | None]]] = {
    name: globals()[func.__name__] for name, func in PACKAGE_REWARDS.items()
}
