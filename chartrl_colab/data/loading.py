"""Chart question-answering data sets in one schema for TRL's ``GRPOTrainer``.

``load_chart_dataset(name, split, subset_size, seed, data_dir)`` returns a ``datasets.Dataset`` whose rows
all look like this (``FEATURES``), whatever the source:

``prompt``
    ``[{"role": "system", "content": <the reward preset's system prompt>}, {"role": "user", "content":
    question}]`` with plain string contents; TRL inserts the image placeholder into the user turn itself
    because the row has an ``image`` column.
``image``
    The chart as :func:`chartrl_colab.data.images.to_rgb` converts it (as a viewer shows it), a
    ``datasets.Image(mode="RGB")`` that decodes to an RGB ``PIL.Image``.
``answer``
    Gold answer, a string.
``chart_type``, ``reasoning``
    Gold chart type (``"bar"``, ``"line"``, ``"pie"``, ...) and gold rationale, or ``None``.
``table``
    Gold data table as a JSON string ``{"columns": [...], "rows": [[...], ...]}`` or ``None``.
``id``
    Unique, stable string id: ``"<name>/<split>/<row index in the source>"``
    (synthetic: ``"synthetic/<split>/<seed>/<position>"``).
``is_clear``
    EvoChart-QA's flag (``None`` elsewhere): True where the answer is scored by exact string match rather
    than 5% tolerance (see ``chartrl_colab.evaluation.metrics``).
``human_or_machine``
    ChartQA's origin of the question, ``"human"`` or ``"augmented"`` (``None`` elsewhere), so evaluation
    reports each half and the whole.

Extra keys of the rows reach the reward functions as keyword arguments (``answer``, ``chart_type``,
``table``, ``reasoning``); ``None`` marks a field the source does not have.

Data sets (``DATASETS``): ``synthetic`` (bar, line and pie charts drawn with matplotlib, with questions
answerable from the drawn values; no files, deterministic per seed: ``chartrl_colab.data.synthetic``),
``chart-rvr`` (``sanchit97/chart-rvr-grpo-train``, split ``train``), ``chartqa`` (``HuggingFaceM4/ChartQA``,
splits ``train``, ``val``, ``test``) and ``evochart`` (EvoChart-QA, split ``test``, local files only).
``chartrl_colab.data.hub`` reads the last three from local files or the hub: their layouts, chart-rvr's
repeated rows, and the rows skipped (no readable image, question or answer, or an image Qwen-VL's processor
refuses), counted in one warning; no usable row at all is a ConfigError.
"""

from __future__ import annotations

from typing import Any

import datasets
from tqdm.auto import tqdm

from chartrl_colab.data import synthetic
from chartrl_colab.data.hub import SOURCE_SPLITS, load_evochart, load_hub_rows
from chartrl_colab.data.images import png_bytes, to_rgb
from chartrl_colab.data.rows import CHUNK, PROGRESS_MIN
from chartrl_colab.errors import ConfigError, check_split
from chartrl_colab.rewards.presets import AUTO, get_preset, resolve_preset

__all__ = ["DATASETS", "SPLITS", "FEATURES", "load_chart_dataset", "make_prompt"]

DATASETS = ("synthetic", "chart-rvr", "chartqa", "evochart")
SPLITS = {"synthetic": synthetic.SPLITS, **SOURCE_SPLITS}

FEATURES = datasets.Features(
    {
        "prompt": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        # Stored already converted by to_rgb; mode="RGB" only guards against a row built elsewhere.
        "image": datasets.Image(mode="RGB"),
        "answer": datasets.Value("string"),
        "chart_type": datasets.Value("string"),
        "table": datasets.Value("string"),
        "reasoning": datasets.Value("string"),
        "id": datasets.Value("string"),
        "is_clear": datasets.Value("bool"),
        "human_or_machine": datasets.Value("string"),
    }
)


def make_prompt(question: str, preset: str) -> list[dict[str, str]]:
    """The conversational prompt of one row, with the system prompt of the reward ``preset`` (a concrete
    name: no default, since a prompt asked under one preset and trained under another is a silent mismatch)."""
    return [{"role": "system", "content": get_preset(preset).system_prompt}, {"role": "user", "content": question}]


def _synthetic_rows(split: str, subset_size: int | None, seed: int) -> list[dict]:
    n = 100 if subset_size is None else subset_size
    specs = tqdm(synthetic.synthetic_examples(n, seed, split), desc=f"rendering synthetic/{split}",
                 disable=n <= PROGRESS_MIN, leave=False)
    return [{**spec, "image": {"bytes": png_bytes(to_rgb(synthetic.render_chart(spec))), "path": None},
             "id": f"synthetic/{split}/{seed}/{i}"} for i, spec in enumerate(specs)]


def _to_dataset(rows: list[dict]) -> datasets.Dataset:
    rows = [{key: row.get(key) for key in FEATURES} for row in rows]  # a field a source lacks is None
    if not rows:
        return datasets.Dataset.from_list([], features=FEATURES)
    parts = [datasets.Dataset.from_list(rows[i : i + CHUNK], features=FEATURES) for i in range(0, len(rows), CHUNK)]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _check_name(name: Any) -> str:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def load_chart_dataset(name: str, split: str = "train", subset_size: int | None = None, seed: int = 0,
                       data_dir: str | None = None, preset: str = AUTO) -> datasets.Dataset:
    """Load a chart QA data set in the schema described in the module docstring.

    ``preset`` (a name of ``chartrl_colab.rewards.presets.PRESETS``) picks the system prompt: the layout
    its rewards score (``package``: the package's own one-line format); ``auto`` is what training picks
    for the data set (:func:`chartrl_colab.rewards.presets.resolve_preset`).

    ``subset_size`` keeps the first N rows after a shuffle seeded with ``seed`` (synthetic: N charts, 100 when
    None; others: all rows when None). ``data_dir`` points at local files (``chartrl_colab.data.hub``); without it
    ``$CHARTRL_DATA_DIR/<name>`` and then the hub are tried.
    """
    name = _check_name(name)
    check_split(name, split, SPLITS[name])
    preset = resolve_preset(preset, name)
    get_preset(preset)  # a bad name fails before any loading
    whole = isinstance(subset_size, int) and not isinstance(subset_size, bool)
    if subset_size is not None and (not whole or subset_size < 1):
        raise ConfigError(f"subset_size must be a positive int or None, got {subset_size!r}")
    if name == "synthetic":
        rows = _synthetic_rows(split, subset_size, seed)
    elif name == "evochart":
        rows = load_evochart(split, subset_size, seed, data_dir)
    else:
        rows = load_hub_rows(name, split, subset_size, seed, data_dir)
    return _to_dataset([{**row, "prompt": make_prompt(row["question"], preset)} for row in rows])
