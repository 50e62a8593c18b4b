"""Source rows as the package's rows: the shared tail of :mod:`chartrl_colab.data.hub`'s loaders."""

from __future__ import annotations

import argparse
import json
import random
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from chartrl_colab.cli import tri_state
from chartrl_colab.data.images import read_image
from chartrl_colab.errors import ConfigError

# Bars shown above this many rows; below it a bar is just noise.
PROGRESS_MIN = 32
# Rows are turned into Arrow in chunks so that a full-size image set never needs one >2 GiB binary column at once.
CHUNK = 1000


def collect(name: str, split: str, n_rows: int, get_row, subset_size: int | None, seed: int, base: Path | None,
            source_index: list[int] | None = None, notes: list[str] | None = None) -> list[dict]:
    """The first ``subset_size`` good rows (all when None) of a source in a seeded shuffle, so a small subset
    decodes only the images it needs; each holds the ``question`` (``chartrl_colab.data.loading`` makes the prompt).

    ``get_row(i)`` returns ``image``, ``query``, ``label`` and optionally ``chart_type``, ``table``, ``reasoning``,
    ``is_clear``, ``human_or_machine``; ``source_index[i]`` is row i's index in the source. Rows without a readable
    image, a question or an answer are skipped, counted with ``notes`` in one warning; ConfigError when none is left.
    """
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    want = n_rows if subset_size is None else min(subset_size, n_rows)
    skipped: Counter[str] = Counter()
    bad_tables = 0
    rows: list[dict] = []
    bar = tqdm(total=want, desc=f"loading {name}/{split}", disable=want <= PROGRESS_MIN, leave=False)
    for i in order:
        if len(rows) >= want:
            break
        raw = get_row(i)
        answer, question = field_text(raw.get("label")), field_text(raw.get("query"))
        if answer is None or question is None:
            skipped["without an answer" if answer is None else "without a question"] += 1
            continue
        image, why = read_image(raw.get("image"), base)
        if image is None:
            skipped[why] += 1
            continue
        table, bad = _normalize_table(raw.get("table"))
        bad_tables += bad
        chart_type = field_text(raw.get("chart_type"))
        rows.append({
            "question": question, "image": {"bytes": image, "path": None}, "answer": answer,
            "chart_type": chart_type.lower() if chart_type else None, "table": table,
            "reasoning": field_text(raw.get("reasoning")),
            "id": f"{name}/{split}/{i if source_index is None else source_index[i]}",
            "is_clear": _flag(raw.get("is_clear")), "human_or_machine": _origin(raw.get("human_or_machine")),
        })
        bar.update(1)
    bar.close()
    if skipped or bad_tables or notes:
        n_bad = sum(skipped.values())
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        msg = f"skipped {n_bad} of {len(rows) + n_bad} rows in {name}/{split}" + (f": {reasons}" if reasons else "")
        if bad_tables:
            msg += f"; {bad_tables} kept rows had a table that is not columns/rows JSON (table set to None)"
        msg = "; ".join([*(notes or []), msg])
        if not rows:
            raise ConfigError(f"no usable rows in {name}/{split}: {msg}; check the files"
                              f"{f' under {base}' if base else ''} or point data_dir at good ones")
        warnings.warn(msg, stacklevel=4)  # point at the caller of load_chart_dataset
    if not rows:
        raise ConfigError(f"no rows in {name}/{split}; check the files{f' under {base}' if base else ''}")
    return rows


def field_text(value: Any) -> str | None:
    """Non-empty stripped string of a scalar or the first usable list item (a whole float without its ``.0``).

    >>> field_text(["", None, " 42 "]), field_text(3.0), field_text(float("nan"))
    ('42', '3', None)
    """
    if isinstance(value, (list, tuple)):
        return next(filter(None, map(field_text, value)), None)
    if value is None or (isinstance(value, float) and value != value):  # NaN
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip() or None


def _normalize_table(value: Any) -> tuple[str | None, bool]:
    """Table as canonical ``{"columns", "rows"}`` JSON; second item is True when a table was given but unusable."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, False
    obj = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("```"):  # model-written tables sometimes keep a code fence
            text = text.strip("`").removeprefix("json").strip()
        try:
            obj = json.loads(text)
        except ValueError:
            return None, True
    if isinstance(obj, dict) and isinstance(obj.get("columns"), list) and isinstance(obj.get("rows"), list):
        columns, rows = obj["columns"], obj["rows"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        columns = list(obj)  # column-oriented {"col": [...], ...}
        rows = [list(r) for r in zip(*obj.values())]
    elif isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        columns = list(obj[0])  # records [{"col": v, ...}, ...]
        rows = [[r.get(c) for c in columns] for r in obj]
    else:
        return None, True
    return json.dumps({"columns": columns, "rows": rows}, ensure_ascii=False), False


def _flag(value: Any) -> bool | None:
    """EvoChart's ``is_clear`` as a bool (JSON true/false, or its text), None when absent or unreadable."""
    try:
        flag = tri_state(value)
    except argparse.ArgumentTypeError:
        return None
    return None if flag == "auto" else flag


def _origin(value: Any) -> str | None:
    """ChartQA's ``human_or_machine`` as "human" or "augmented" (its ClassLabel: 0 human, 1 machine)."""
    return {"0": "human", "human": "human", "1": "augmented", "machine": "augmented",
            "augmented": "augmented"}.get(str(value).strip().lower())
