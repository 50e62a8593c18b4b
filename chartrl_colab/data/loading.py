"""Chart question-answering data sets in one schema for TRL's ``GRPOTrainer``.

``load_chart_dataset`` returns a ``datasets.Dataset`` whose rows look like this (``FEATURES``) whatever the source;
``None`` marks a field the source lacks, and the extra keys reach the reward functions as keyword arguments:

``prompt``
    ``[{"role": "system", "content": <the reward preset's system prompt>}, {"role": "user", "content":
    question}]``; TRL inserts the image placeholder itself because the row has an ``image`` column.
``image``
    The chart as :func:`chartrl_colab.data.images.to_rgb` converts it; decodes to an RGB ``PIL.Image``.
``answer``, ``chart_type``, ``reasoning``
    Gold answer (a string), chart type (``"bar"``, ``"line"``, ``"pie"``, ...) and rationale.
``table``
    Gold data table as a JSON string ``{"columns": [...], "rows": [[...], ...]}``.
``id``
    Unique, stable: ``"<name>/<split>/<row index in the source>"`` (synthetic: ``"synthetic/<split>/<seed>/<i>"``).
``is_clear``
    EvoChart-QA's flag: True where the answer is scored by exact match, not 5% tolerance (``evaluation.metrics``).
``human_or_machine``
    ChartQA's origin of the question, ``"human"`` or ``"augmented"``, so evaluation reports each half.

Data sets (``DATASETS``): ``synthetic`` (``chartrl_colab.data.synthetic``: no files, deterministic per seed) and
the three ``chartrl_colab.data.hub`` reads from local files or the hub: ``chart-rvr``, ``chartqa``, ``evochart``.
"""

from __future__ import annotations

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
        **dict.fromkeys(("answer", "chart_type", "table", "reasoning", "id"), datasets.Value("string")),
        "is_clear": datasets.Value("bool"),
        "human_or_machine": datasets.Value("string"),
    }
)


def make_prompt(question: str, preset: str) -> list[dict[str, str]]:
    """The conversational prompt of one row under the reward ``preset`` (a concrete name: no default, since a prompt
    asked under one preset and trained under another is a silent mismatch)."""
    return [{"role": "system", "content": get_preset(preset).system_prompt}, {"role": "user", "content": question}]


def load_chart_dataset(name: str, split: str = "train", subset_size: int | None = None, seed: int = 0,
                       data_dir: str | None = None, preset: str = AUTO) -> datasets.Dataset:
    """Load a chart QA data set in the schema of the module docstring.

    ``preset`` (a name of ``chartrl_colab.rewards.presets.PRESETS``, or ``auto``: what training picks for the data
    set) gives the system prompt. ``subset_size`` keeps the first N rows after a shuffle seeded with ``seed``
    (synthetic: N charts, 100 when None; others: all rows when None). ``data_dir`` points at local files; without
    it ``$CHARTRL_DATA_DIR/<name>`` and then the hub are tried (``chartrl_colab.data.hub``).
    """
    if (known := name.strip().lower() if isinstance(name, str) else name) not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    name = known
    check_split(name, split, SPLITS[name])
    preset = resolve_preset(preset, name)
    get_preset(preset)  # a bad name fails before any loading
    whole = isinstance(subset_size, int) and not isinstance(subset_size, bool)
    if subset_size is not None and (not whole or subset_size < 1):
        raise ConfigError(f"subset_size must be a positive int or None, got {subset_size!r}")
    if name == "synthetic":
        n = 100 if subset_size is None else subset_size
        specs = tqdm(synthetic.synthetic_examples(n, seed, split), desc=f"rendering synthetic/{split}",
                     disable=n <= PROGRESS_MIN, leave=False)
        rows = [{**spec, "image": {"bytes": png_bytes(to_rgb(synthetic.render_chart(spec))), "path": None},
                 "id": f"synthetic/{split}/{seed}/{i}"} for i, spec in enumerate(specs)]
    elif name == "evochart":
        rows = load_evochart(split, subset_size, seed, data_dir)
    else:
        rows = load_hub_rows(name, split, subset_size, seed, data_dir)
    # Never empty (the loaders raise ConfigError first). Arrow in chunks: no >2 GiB binary column at once.
    rows = [{key: row.get(key) for key in FEATURES} | {"prompt": make_prompt(row["question"], preset)} for row in rows]
    parts = [datasets.Dataset.from_list(rows[i : i + CHUNK], features=FEATURES) for i in range(0, len(rows), CHUNK)]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
