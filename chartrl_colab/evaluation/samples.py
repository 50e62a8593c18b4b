"""The samples file: one JSONL row per question, written by ``chartrl_colab.generate``, read by ``evaluate``.

A row::

    {"id", "question", "answer", "chart_type", "table", "reasoning",
     "completions": [n strings], "num_tokens": [n], "truncated": [n bools], "entropy": [n floats or null],
     "rewards": {reward name: [n floats or null]}, "correct": [n bools], "n", "num_correct",
     "generation": {model, checkpoint, dataset, seed, temperature, ... the settings that made the row}}

A sample is correct when its ``verifier`` reward is >= ``reward_threshold`` (null, "not applicable", is not);
truncated when it does not end with an EOS token. ``entropy`` is the mean over a sample's tokens of the entropy
(nats) of the distribution each was drawn from (softmax of logits / temperature); null where the sampler cannot
see the logits (vLLM). Rows are appended and synced as made, so an interrupted run leaves at most a torn last
line. The rows of one file agree on all their ``generation`` settings but the backend.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from chartrl_colab.errors import ConfigError
from chartrl_colab.files import json_line
from chartrl_colab.rewards.completions import last_user_text

__all__ = ["append_row", "check_resume", "make_row", "read_rows", "row_problem", "sync"]

log = logging.getLogger(__name__)



def read_rows(path: str | Path, repair: bool = False, warn: bool = False) -> list[dict]:
    """The rows of a samples file. A torn last line (an interrupted write) is skipped (with a warning when
    ``warn``), and cut off the file when ``repair``; any other unreadable line is a ConfigError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open("rb") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json_line(line)
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError("not a row with an id")
        except ValueError as err:
            if number == len(lines):  # the last line: a write cut short
                if warn:
                    log.warning("%s: ignoring the unfinished last line %d (an interrupted generation)", path, number)
                if repair:
                    os.truncate(path, sum(map(len, lines[:-1])))
                break
            raise ConfigError(f"{path}: line {number} is not a samples row ({err}); the file is damaged") from None
        if (problem := row_problem(row)) is not None:
            raise ConfigError(f"{path}: line {number} (question {row.get('id')!r}): {problem}; the file was not "
                              "written by chartrl_colab.generate, or was edited") from None
        if not line.endswith(b"\n") and repair:  # whole JSON but no newline: finish the line before appending
            with path.open("ab") as f:
                f.write(b"\n")
        rows.append(row)
    return rows


_TEXT = (str, type(None))


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# field -> (what it must be, check of one value); lists: check of each item.
_SCALARS = {
    "id": ("a string or an integer", lambda x: isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool))),
    "question": ("a string or null", lambda x: isinstance(x, _TEXT)),
    "answer": ("a string, a number or null", lambda x: isinstance(x, _TEXT) or _is_number(x)),
    "chart_type": ("a string or null", lambda x: isinstance(x, _TEXT)),
    "table": ("a string or null", lambda x: isinstance(x, _TEXT)),
    "reasoning": ("a string or null", lambda x: isinstance(x, _TEXT)),
    "is_clear": ("true, false or null", lambda x: isinstance(x, (bool, type(None)))),
    "human_or_machine": ("a string or null", lambda x: isinstance(x, _TEXT)),
    "n": ("a whole number", lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 0),
    "num_correct": ("a whole number", lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 0),
    "generation": ("an object", lambda x: isinstance(x, dict)),
}
_NUMBERS = ("numbers or nulls", lambda x: x is None or _is_number(x))
_LISTS = {
    "completions": ("strings", lambda x: isinstance(x, str)),
    "num_tokens": ("whole numbers", lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 0),
    "truncated": ("true/false values", lambda x: isinstance(x, bool)),
    "entropy": _NUMBERS,
    "correct": ("true/false values", lambda x: isinstance(x, bool)),
}


def row_problem(row: dict) -> str | None:
    """What is wrong with the types of a samples row (one field named), or None. Present fields must have the
    types generate writes, and the per-sample lists one length; missing ones are evaluate's to name."""
    for name, (what, ok) in _SCALARS.items():
        if name in row and not ok(row[name]):
            return f"field {name!r} holds {row[name]!r}, not {what}"
    lists = {name: row[name] for name in _LISTS if name in row}
    if "rewards" in row:
        if not isinstance(row["rewards"], dict):
            return f"field 'rewards' holds {row['rewards']!r}, not an object of reward name -> list of numbers or nulls"
        lists.update({f"rewards.{k}": v for k, v in row["rewards"].items()})
    for name, value in lists.items():
        what, ok = _LISTS.get(name, _NUMBERS)
        if not isinstance(value, list):
            return f"field {name!r} holds {value!r}, not a list of {what}"
        if bad := [x for x in value if not ok(x)]:
            return f"field {name!r} holds {bad[0]!r} in its list, not one of {what}"
    lengths = {"n": row["n"]} if "n" in row else {}  # a valid n: checked above
    lengths.update({name: len(value) for name, value in lists.items()})
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        other = next(name for name, size in lengths.items() if size != lengths[first])
        return f"field {other!r} has {lengths[other]} values where {first!r} has {lengths[first]}"
    return None


def check_resume(path: Path, rows: list[dict], wanted: dict) -> None:
    """ConfigError unless every row of ``path`` was made with the ``wanted`` generation settings."""
    for row in rows:
        have = row.get("generation") or {}
        for key, value in wanted.items():
            if key != "backend" and have.get(key) != value:  # the backend changes how, not what, is sampled
                raise ConfigError(
                    f"{path} holds samples made with {key}={have.get(key)!r}, not {value!r} (question {row['id']}); "
                    "pass another --output, or delete the file to start over"
                )


def make_row(row: dict, completions: list[str], completion_ids: list[list[int]], eos_token_ids,
             rewards: dict[str, list], correct: list[bool], generation: dict, entropy: list | None = None) -> dict:
    """The samples row of one data-set ``row``: its gold fields, the completions and their scores (``entropy``
    None: unknown, stored as nulls)."""
    return {
        "id": row["id"],
        "question": last_user_text(row["prompt"]),
        **{k: row.get(k) for k in ("answer", "chart_type", "table", "reasoning")},
        # evaluate scores EvoChart's is_clear rows by exact match and reports ChartQA's human/augmented halves
        **{k: row[k] for k in ("is_clear", "human_or_machine") if row.get(k) is not None},
        "completions": completions,
        "num_tokens": [len(ids) for ids in completion_ids],
        "truncated": [not ids or ids[-1] not in eos_token_ids for ids in completion_ids],
        "entropy": list(entropy) if entropy is not None else [None] * len(completion_ids),
        "rewards": rewards,
        "correct": correct,
        "n": len(correct),
        "num_correct": int(sum(correct)),
        "generation": generation,
    }


def append_row(f, row: dict) -> None:
    """Write one row to ``f``, a samples file open for appending."""
    f.write(json.dumps(row, ensure_ascii=False) + "\n")


def sync(f) -> None:
    """Make the rows written so far durable: a dead runtime loses at most the rows written since."""
    f.flush()
    os.fsync(f.fileno())
