"""Chart question-answering data sets in one schema for TRL's ``GRPOTrainer``.

``load_chart_dataset(name, split, subset_size, seed, data_dir)`` returns a
``datasets.Dataset`` whose rows all look like this, whatever the source:

``prompt``
    Conversational prompt ``[{"role": "system", "content": SYSTEM_PROMPT},
    {"role": "user", "content": question}]`` with plain string contents.  TRL
    inserts the image placeholder into the first user turn itself because the
    row has an ``image`` column.
``image``
    The chart, a ``datasets.Image(mode="RGB")`` feature, so it decodes to an RGB
    ``PIL.Image``.
``answer``
    Gold answer, a string.
``chart_type``
    Gold chart type (``"bar"``, ``"line"``, ``"pie"``, ...) or ``None``.
``table``
    Gold data table as a JSON string ``{"columns": [...], "rows": [[...], ...]}``
    or ``None`` (the source may hold it as JSON text or, as chart-rvr's upload
    does, a struct ``{columns, rows}`` of strings).
``reasoning``
    Gold rationale or ``None``.
``id``
    Unique, stable string id: ``"<name>/<split>/<row index in the source>"``
    (synthetic: ``"synthetic/<split>/<seed>/<position>"``).
``is_clear``
    EvoChart-QA's flag (``None`` elsewhere): True where its README scores the
    answer by exact string match rather than 5% tolerance.
``human_or_machine``
    ChartQA's origin of the question, ``"human"`` or ``"augmented"`` (``None``
    elsewhere), so evaluation reports each half and the whole.

The system prompt is the one of the reward preset (``preset``, default
``chart-rvr``; see ``chartrl_colab.reward_presets``).

Extra keys of the rows reach the reward functions as keyword arguments
(``answer``, ``chart_type``, ``table``, ``reasoning``); ``None`` marks a field
the source data set does not have.

Data sets (``DATASETS``):

``synthetic``
    Bar, line and pie charts rendered with matplotlib from small vocabularies,
    with questions answerable from the drawn values (lookup, max, min,
    difference, total, count).  Needs no files; deterministic per seed.
``chart-rvr``
    ``sanchit97/chart-rvr-grpo-train`` (split ``train``).  Its upload holds
    ``cache-*.arrow`` files beside the ``data-*.arrow`` shards, so every
    question arrives about three times; repeats of (question, answer, image
    bytes) are dropped, keeping the copy with the most gold fields, and the
    warning says how many.
``chartqa``
    ``HuggingFaceM4/ChartQA`` (splits ``train``, ``val``, ``test``).
``evochart``
    EvoChart-QA (split ``test``), local files only: a JSON file (a list of
    ``{"imgname", "query", "label"}``, optionally ``is_clear`` and
    ``chart_type``) beside a ``png/`` folder of images.

Local files are looked up in ``data_dir`` (or ``data_dir/<name>``), else in
``$CHARTRL_DATA_DIR/<name>``.  For ``chart-rvr`` and ``chartqa`` that folder
holds one of:

- a ``DatasetDict.save_to_disk`` folder (``dataset_dict.json`` + one folder per
  split), or one split saved with ``Dataset.save_to_disk``;
- a snapshot of a single-split hub repository of Arrow files: root-level
  ``data-*.arrow`` and ``cache-*.arrow`` (a ``state.json`` or
  ``dataset_info.json`` beside them is ignored), all read, as on the hub;
- the hub's files: ``data/<split>-*.parquet`` (also ``<split>-*.parquet``,
  ``<split>/*.parquet``, the parquet-converter's ``default/<split>/*.parquet``;
  ``.arrow``, ``.jsonl`` and ``.json`` files in those layouts work too, image
  paths in JSON taken relative to the folder).

The hub data sets are downloaded with ``datasets.load_dataset`` when no local
folder is found.  Rows without a readable image, a question or an answer are
skipped and counted in one warning.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import random
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from chartrl_colab.errors import ConfigError
from chartrl_colab.reward_presets import DEFAULT_PRESET, get_preset

__all__ = [
    "DATASETS",
    "SPLITS",
    "SYSTEM_PROMPT",
    "QUESTION_KINDS",
    "CHART_TYPES",
    "IMAGE_SIZE",
    "FEATURES",
    "load_chart_dataset",
    "make_synthetic_example",
    "synthetic_examples",
    "render_chart",
    "answer_question",
    "make_prompt",
]

DATASETS = ("synthetic", "chart-rvr", "chartqa", "evochart")
SPLITS = {
    "synthetic": ("train", "test"),
    "chart-rvr": ("train",),
    "chartqa": ("train", "val", "test"),
    "evochart": ("test",),
}
HUB_IDS = {
    "chart-rvr": "sanchit97/chart-rvr-grpo-train",
    "chartqa": "HuggingFaceM4/ChartQA",
}
DATA_DIR_ENV = "CHARTRL_DATA_DIR"

# Each reward preset carries the system prompt asking for the layout its rewards score: no drift between the two.
SYSTEM_PROMPT = get_preset(DEFAULT_PRESET).system_prompt

FEATURES = datasets.Features(
    {
        "prompt": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        # mode="RGB" makes every decoded image RGB, whatever the file's own mode.
        "image": datasets.Image(mode="RGB"),
        "answer": datasets.Value("string"),
        "chart_type": datasets.Value("string"),
        "table": datasets.Value("string"),
        "reasoning": datasets.Value("string"),
        "id": datasets.Value("string"),
        # EvoChart-QA: True where the answer is scored by exact string match (see chartrl_colab.metrics).
        "is_clear": datasets.Value("bool"),
        # ChartQA: "human" or "augmented", so evaluation can report each half and the whole.
        "human_or_machine": datasets.Value("string"),
    }
)

# Bars shown above this many rows; below it a bar is just noise.
_PROGRESS_MIN = 32
# Rows are turned into Arrow in chunks so that a full-size image set never
# needs one >2 GiB binary column at once.
_CHUNK = 1000


def make_prompt(question: str, preset: str = DEFAULT_PRESET) -> list[dict[str, str]]:
    """The conversational prompt of one row, with the system prompt of the reward ``preset``."""
    return [{"role": "system", "content": get_preset(preset).system_prompt}, {"role": "user", "content": question}]


# --------------------------------------------------------------------------
# Synthetic charts
# --------------------------------------------------------------------------

IMAGE_SIZE = 224
_DPI = 100
CHART_TYPES = ("bar", "line", "pie")
QUESTION_KINDS = ("value", "max", "min", "diff", "sum", "count")

# (category column name, value column name, labels).  Short labels keep tick
# text legible at 224 px.
_CATEGORICAL_VOCABS = (
    ("Fruit", "Sales", ("Apples", "Bananas", "Cherries", "Grapes", "Mangoes", "Oranges", "Pears", "Plums", "Kiwis", "Lemons")),
    ("Country", "Visitors", ("France", "Germany", "Italy", "Spain", "Japan", "Brazil", "Canada", "India", "Mexico", "Peru")),
    ("Product", "Units", ("Laptops", "Phones", "Tablets", "Cameras", "Monitors", "Speakers", "Printers", "Watches")),
    ("Sport", "Players", ("Soccer", "Tennis", "Golf", "Hockey", "Rugby", "Cricket", "Boxing", "Rowing")),
)
# Ordered vocabularies for line charts, which read as a trend over time.
_ORDERED_VOCABS = (
    ("Month", "Revenue", ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")),
    ("Year", "Orders", tuple(str(y) for y in range(2012, 2025))),
)
_PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
_SERIES_NOUN = {"bar": "The bars show", "line": "The line points show", "pie": "The pie slices show"}
# One chart in this many goes to the test split; see _split_of.
_TEST_BUCKETS = 5


def answer_question(labels, values, kind: str, args=()) -> str:
    """Gold answer of a synthetic question, computed from the chart's data only.

    ``kind`` is one of ``QUESTION_KINDS``; ``args`` holds the labels the question
    names (one for ``value``, two for ``diff``, none otherwise).
    """
    labels = [str(x) for x in labels]
    values = [int(v) for v in values]
    if len(labels) != len(values) or not labels:
        raise ValueError(f"need as many values as labels (got {len(labels)} labels, {len(values)} values)")
    args = list(args or ())
    if kind == "value":
        return str(values[labels.index(args[0])])
    if kind == "max":
        return labels[values.index(max(values))]
    if kind == "min":
        return labels[values.index(min(values))]
    if kind == "diff":
        return str(abs(values[labels.index(args[0])] - values[labels.index(args[1])]))
    if kind == "sum":
        return str(sum(values))
    if kind == "count":
        return str(len(labels))
    raise ValueError(f"unknown question kind {kind!r}; valid kinds: {', '.join(QUESTION_KINDS)}")


def _question_text(kind: str, args, category: str) -> str:
    if kind == "value":
        return f"What is the value of {args[0]}?"
    if kind == "max":
        return f"Which {category.lower()} has the highest value?"
    if kind == "min":
        return f"Which {category.lower()} has the lowest value?"
    if kind == "diff":
        return f"What is the difference between {args[0]} and {args[1]}?"
    if kind == "sum":
        return "What is the total of all values?"
    return "How many categories are shown?"


def _rationale(chart_type: str, labels, values, kind: str, args, answer: str) -> str:
    pairs = ", ".join(f"{lab}={val}" for lab, val in zip(labels, values))
    lookup = dict(zip(labels, values))
    if kind == "value":
        tail = f"so the value of {args[0]} is {answer}."
    elif kind == "max":
        tail = f"so the highest is {answer}."
    elif kind == "min":
        tail = f"so the lowest is {answer}."
    elif kind == "diff":
        hi, lo = sorted((lookup[args[0]], lookup[args[1]]), reverse=True)
        tail = f"so the difference between {args[0]} and {args[1]} is {hi} - {lo} = {answer}."
    elif kind == "sum":
        tail = f"so the total is {' + '.join(str(v) for v in values)} = {answer}."
    else:
        tail = f"so there are {answer} categories."
    return f"{_SERIES_NOUN[chart_type]} {pairs}, {tail}"


def make_synthetic_example(rng: random.Random) -> dict:
    """Draw one chart spec and question from ``rng`` (a ``random.Random``).

    Returns a dict with ``chart_type``, ``title``, ``category``, ``value_name``,
    ``labels``, ``values``, ``colors``, ``kind``, ``args``, ``question``,
    ``answer``, ``table`` (JSON string of exactly the drawn data) and
    ``reasoning``.  Values are distinct integers so max/min are unambiguous.
    """
    chart_type = rng.choice(CHART_TYPES)
    if chart_type == "line":
        category, value_name, vocab = rng.choice(_ORDERED_VOCABS)
        n = rng.randint(4, 7)
        start = rng.randint(0, len(vocab) - n)
        labels = list(vocab[start : start + n])  # consecutive, so the x axis reads in order
        values = rng.sample(range(5, 100), n)
    else:
        category, value_name, vocab = rng.choice(_CATEGORICAL_VOCABS)
        n = rng.randint(3, 5) if chart_type == "pie" else rng.randint(3, 6)
        labels = rng.sample(vocab, n)
        values = rng.sample(range(8, 60) if chart_type == "pie" else range(1, 100), n)  # pie: no sliver too thin to label
    colors = rng.sample(_PALETTE, n) if chart_type == "pie" else [rng.choice(_PALETTE)] * n

    kind = rng.choice(QUESTION_KINDS)
    if kind == "value":
        args = [rng.choice(labels)]
    elif kind == "diff":
        args = rng.sample(labels, 2)
    else:
        args = []
    answer = answer_question(labels, values, kind, args)
    table = json.dumps({"columns": [category, value_name], "rows": [[lab, val] for lab, val in zip(labels, values)]})
    return {
        "chart_type": chart_type,
        "title": f"{value_name} by {category.lower()}",
        "category": category,
        "value_name": value_name,
        "labels": labels,
        "values": values,
        "colors": colors,
        "kind": kind,
        "args": args,
        "question": _question_text(kind, args, category),
        "answer": answer,
        "table": table,
        "reasoning": _rationale(chart_type, labels, values, kind, args, answer),
    }


def render_chart(chart: dict, size: int = IMAGE_SIZE) -> PIL.Image.Image:
    """Render a chart spec (from ``make_synthetic_example``) to a ``size``x``size`` RGB image.

    Uses ``Figure`` + ``FigureCanvasAgg`` directly instead of pyplot, so no
    global backend is switched and an interactive session is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels, values = chart["labels"], chart["values"]
    colors = chart.get("colors") or [_PALETTE[0]] * len(labels)
    fig = Figure(figsize=(size / _DPI, size / _DPI), dpi=_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    kind = chart["chart_type"]
    if kind == "pie":
        ax = fig.add_axes((0.2, 0.06, 0.6, 0.74))  # margin for the names outside the slices
        # Value inside each slice, name outside: both readable from the image.
        ax.pie(
            values,
            labels=labels,
            colors=colors,
            startangle=90,
            counterclock=False,
            labeldistance=1.12,
            autopct=_pie_value_formatter(values),
            pctdistance=0.65,
            textprops={"fontsize": 6},
            wedgeprops={"linewidth": 0.6, "edgecolor": "white"},
        )
        ax.set_aspect("equal")
    else:
        ax = fig.add_axes((0.14, 0.2, 0.82, 0.66))
        x = np.arange(len(labels))
        top = max(values) * 1.18
        if kind == "bar":
            bars = ax.bar(x, values, color=colors, width=0.65)
            ax.bar_label(bars, labels=[str(v) for v in values], fontsize=6, padding=1)
        elif kind == "line":
            ax.plot(x, values, color=colors[0], marker="o", markersize=3, linewidth=1.2)
            for xi, v in zip(x, values):
                ax.annotate(str(v), (xi, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=6)
        else:
            raise ValueError(f"unknown chart type {kind!r}; valid types: {', '.join(CHART_TYPES)}")
        ax.set_ylim(0, top)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=6, rotation=35, ha="right", rotation_mode="anchor")
        ax.tick_params(axis="y", labelsize=5.5, length=2)
        ax.tick_params(axis="x", length=2)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(chart.get("title", ""), fontsize=7.5, y=0.97)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    img = PIL.Image.fromarray(rgba[..., :3].copy(), mode="RGB")
    if img.size != (size, size):  # float rounding of figsize*dpi; keep the stated size exact
        img = img.resize((size, size), PIL.Image.BICUBIC)
    return img


def _pie_value_formatter(values):
    """autopct callback that prints each slice's own value, not its percentage."""
    # matplotlib calls autopct once per wedge, in order; recomputing from the
    # percentage would risk rounding errors, so hand out the exact values.
    it = iter(values)
    return lambda _pct: str(next(it))


def _split_of(chart: dict) -> str:
    """Deterministic split of a chart from its data alone.

    Hashing the drawn data (not the RNG stream) keeps train and test disjoint
    for every pair of seeds, not only within one seed.
    """
    key = json.dumps([chart["chart_type"], chart["labels"], chart["values"]])
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % _TEST_BUCKETS
    return "test" if bucket == 0 else "train"


def synthetic_examples(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """The first ``n`` synthetic chart specs for ``(seed, split)``, in dataset order.

    Specs are drawn one after another from one RNG, so the first ``k`` specs do
    not depend on ``n``.  Charts hashed to the other split, and repeated
    charts, are rejected.
    """
    _check_split("synthetic", split)
    rng = random.Random(f"chartrl-synthetic:{seed}:{split}")  # str seeds hash stably (sha512)
    specs: list[dict] = []
    seen: set[str] = set()
    while len(specs) < n:
        spec = make_synthetic_example(rng)
        sig = json.dumps([spec["chart_type"], spec["labels"], spec["values"]])
        if _split_of(spec) != split or sig in seen:
            continue
        seen.add(sig)
        specs.append(spec)
    return specs


def _png_bytes(img: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _load_synthetic(split: str, subset_size: int | None, seed: int, preset: str = DEFAULT_PRESET) -> datasets.Dataset:
    n = 100 if subset_size is None else subset_size
    specs = synthetic_examples(n, seed, split)
    rows = []
    for i, spec in enumerate(tqdm(specs, desc=f"rendering synthetic/{split}", disable=n <= _PROGRESS_MIN, leave=False)):
        rows.append(
            {
                "prompt": make_prompt(spec["question"], preset),
                "image": {"bytes": _png_bytes(render_chart(spec)), "path": None},
                "answer": spec["answer"],
                "chart_type": spec["chart_type"],
                "table": spec["table"],
                "reasoning": spec["reasoning"],
                "id": f"synthetic/{split}/{seed}/{i}",
            }
        )
    return _to_dataset(rows)


# --------------------------------------------------------------------------
# Real data sets
# --------------------------------------------------------------------------


def _layout_help(name: str, where: str) -> str:
    if name == "evochart":
        return (
            f"put the EvoChart-QA JSON file (a list of {{imgname, query, label}}) in {where}/ "
            f"and its chart images in {where}/png/"
        )
    return (
        f"put {HUB_IDS[name]} in {where}/ either as a datasets.save_to_disk folder "
        f"(Dataset or DatasetDict) or as the hub's parquet files ({where}/data/<split>-*.parquet)"
    )


def _where(name: str) -> str:
    root = os.environ.get(DATA_DIR_ENV)
    return str(Path(root) / name) if root else f"${DATA_DIR_ENV}/{name}"


def _local_dir(name: str, data_dir: str | None) -> Path | None:
    """Folder holding the local files of ``name``, or None to use the hub."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        # Accept either the data set's own folder or a root holding <name>/.
        if (path / name).is_dir():
            path = path / name
        if not path.exists():
            raise FileNotFoundError(f"{name}: data_dir {path} does not exist; {_layout_help(name, str(path))}")
        return path
    root = os.environ.get(DATA_DIR_ENV)
    if root and (Path(root).expanduser() / name).exists():
        return Path(root).expanduser() / name
    return None


def _hub_load(hub_id: str, split: str) -> datasets.Dataset:
    """Download one split from the hub (a seam tests replace to stay offline)."""
    return datasets.load_dataset(hub_id, split=split)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}"


# Packaged builder for each file extension the hub uses.
_BUILDERS = {"parquet": "parquet", "arrow": "arrow", "jsonl": "json", "json": "json"}


def _load_hub_format(path: Path, name: str, split: str) -> datasets.Dataset:
    """Load ``split`` from a local folder in one of the formats the hub data ship in."""
    if path.is_dir() and (path / "dataset_dict.json").exists():  # DatasetDict.save_to_disk
        dd = datasets.load_from_disk(str(path))
        if split not in dd:
            raise FileNotFoundError(f"{name}: split {split!r} is not in {path} (it has: {', '.join(dd)})")
        return dd[split]
    if path.is_dir() and (path / split / "state.json").exists():  # one split saved alone
        return datasets.load_from_disk(str(path / split))
    # A snapshot of a hub repository of Arrow shards (chart-rvr's: data-0000X-of-00002.arrow beside cache-*.arrow,
    # maybe a state.json, no split in the names): read every root-level file as the hub's arrow builder does,
    # so local and hub loads hold the same rows (duplicates included; chart-rvr's are dropped later).
    shards = sorted(glob.glob(str(path / "data-*.arrow"))) + sorted(glob.glob(str(path / "cache-*.arrow")))
    if path.is_dir() and shards and SPLITS[name] == (split,):
        return datasets.load_dataset("arrow", data_files=shards, split="train")
    if path.is_dir() and (path / "state.json").exists():  # Dataset.save_to_disk: taken as the requested split
        return datasets.load_from_disk(str(path))
    for ext, builder in _BUILDERS.items():
        if path.is_file() and path.name.endswith("." + ext):
            files = [str(path)]
        else:
            # data/<split>-*.parquet is the hub's own layout; the rest are its
            # parquet-converter layout (default/<split>/0000.parquet) and plain variants.
            patterns = [
                f"data/{split}-*.{ext}", f"data/{split}/*.{ext}", f"{split}-*.{ext}",
                f"{split}/*.{ext}", f"*/{split}/*.{ext}", f"{split}.{ext}", f"data/{split}.{ext}",
            ]
            files = sorted({f for p in patterns for f in glob.glob(str(path / p))})
        if files:
            return datasets.load_dataset(builder, data_files=files, split="train")
    raise FileNotFoundError(f"{name}: no files for split {split!r} in {path}; {_layout_help(name, str(path))}")


def _load_hub_dataset(name: str, split: str, data_dir: str | None) -> tuple[datasets.Dataset, Path | None]:
    path = _local_dir(name, data_dir)
    if path is not None:
        return _load_hub_format(path, name, split), (path if path.is_dir() else path.parent)
    try:
        return _hub_load(HUB_IDS[name], split), None
    except Exception as err:  # offline, gated, renamed ...: say where local files go instead
        raise FileNotFoundError(
            f"{name}: could not load {HUB_IDS[name]} split {split!r} from the hub ({_one_line(err)}); "
            f"{_layout_help(name, _where(name))}, or pass data_dir=..."
        ) from err


def _read_image(value: Any, base: Path | None) -> bytes | None:
    """Bytes of a readable image, or None.  Decodes fully to catch truncated files."""
    try:
        if value is None:
            return None
        if isinstance(value, PIL.Image.Image):
            return _png_bytes(value.convert("RGB"))
        if isinstance(value, dict):
            data, p = value.get("bytes"), value.get("path")
        elif isinstance(value, (bytes, bytearray)):
            data, p = bytes(value), None
        else:
            data, p = None, str(value)
        if data is None:
            if not p:
                return None
            fp = Path(p)
            if not fp.is_absolute() and base is not None and not fp.exists():
                fp = base / fp
            data = fp.read_bytes()
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.width < 1 or im.height < 1:
                return None
        return bytes(data)
    except Exception:  # any decoder error means the row has no usable image
        return None


def _text(value: Any) -> str | None:
    """Non-empty stripped string of a scalar or the first usable list item."""
    if isinstance(value, (list, tuple)):
        for item in value:
            got = _text(item)
            if got is not None:
                return got
        return None
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        return str(int(value)) if value.is_integer() else str(value)
    text = str(value).strip()
    return text or None


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
    if isinstance(obj, dict) and "columns" in obj and "rows" in obj:
        columns, rows = obj["columns"], obj["rows"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        columns = list(obj)  # column-oriented {"col": [...], ...}
        rows = [list(r) for r in zip(*obj.values())]
    elif isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        columns = list(obj[0])  # records [{"col": v, ...}, ...]
        rows = [[r.get(c) for c in columns] for r in obj]
    else:
        return None, True
    if not isinstance(columns, list) or not isinstance(rows, list):
        return None, True
    return json.dumps({"columns": columns, "rows": rows}, ensure_ascii=False), False


def _collect(
    name: str,
    split: str,
    n_rows: int,
    get_row,
    subset_size: int | None,
    seed: int,
    base: Path | None,
    preset: str = DEFAULT_PRESET,
    source_index: list[int] | None = None,
    notes: list[str] | None = None,
) -> datasets.Dataset:
    """Shared tail of the real loaders: seeded shuffle, mapping, skipping, one warning.

    ``get_row(i)`` returns a dict with ``image``, ``query``, ``label`` and
    optionally ``chart_type``, ``table``, ``reasoning``, ``is_clear``,
    ``human_or_machine``.  Rows are examined in shuffled order until
    ``subset_size`` good ones are found, so a small subset decodes only the
    images it needs.  ``source_index[i]`` is row i's index in the source (for
    its id) when rows were dropped before; ``notes`` go into the warning.
    """
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    want = n_rows if subset_size is None else min(subset_size, n_rows)
    skipped: Counter[str] = Counter()
    bad_tables = 0
    rows: list[dict] = []
    examined = 0
    bar = tqdm(total=want, desc=f"loading {name}/{split}", disable=want <= _PROGRESS_MIN, leave=False)
    for i in order:
        if len(rows) >= want:
            break
        examined += 1
        raw = get_row(i)
        answer = _text(raw.get("label"))
        question = _text(raw.get("query"))
        if answer is None:
            skipped["without an answer"] += 1
            continue
        if question is None:
            skipped["without a question"] += 1
            continue
        image = _read_image(raw.get("image"), base)
        if image is None:
            skipped["unreadable images"] += 1
            continue
        table, bad = _normalize_table(raw.get("table"))
        bad_tables += bad
        chart_type = _text(raw.get("chart_type"))
        rows.append(
            {
                "prompt": make_prompt(question, preset),
                "image": {"bytes": image, "path": None},
                "answer": answer,
                "chart_type": chart_type.lower() if chart_type else None,
                "table": table,
                "reasoning": _text(raw.get("reasoning")),
                "id": f"{name}/{split}/{i if source_index is None else source_index[i]}",
                "is_clear": _flag(raw.get("is_clear")),
                "human_or_machine": _origin(raw.get("human_or_machine")),
            }
        )
        bar.update(1)
    bar.close()
    if skipped or bad_tables or notes:
        parts = [f"{count} {reason}" for reason, count in sorted(skipped.items())]
        msg = f"skipped {sum(skipped.values())} of {examined} rows in {name}/{split}"
        if parts:
            msg += ": " + ", ".join(parts)
        if bad_tables:
            msg += f"; {bad_tables} kept rows had a table that is not columns/rows JSON (table set to None)"
        msg = "; ".join([*(notes or []), msg])
        warnings.warn(msg, stacklevel=4)  # point at the caller of load_chart_dataset
    return _to_dataset(rows)


def _load_hub_rows(name: str, split: str, subset_size: int | None, seed: int, data_dir: str | None,
                   preset: str = DEFAULT_PRESET) -> datasets.Dataset:
    ds, base = _load_hub_dataset(name, split, data_dir)
    if "image" in ds.column_names and isinstance(ds.features.get("image"), datasets.Image):
        # Undecoded, so a corrupt image becomes a skipped row, not a crash mid-iteration.
        ds = ds.cast_column("image", datasets.Image(decode=False))
    missing = {"image", "query", "label"} - set(ds.column_names)
    if missing:
        raise ConfigError(f"{name}: the data lack columns {sorted(missing)} (have {ds.column_names})")
    wanted = [c for c in ("image", "query", "label", *_GOLD_FIELDS, "human_or_machine") if c in ds.column_names]
    ds = ds.select_columns(wanted)
    if name != "chart-rvr":
        return _collect(name, split, len(ds), lambda i: ds[i], subset_size, seed, base, preset)
    kept = _deduplicate(ds)
    dropped = len(ds) - len(kept)
    notes = [f"dropped {dropped} of {len(ds)} rows of {name}/{split} that repeat a (question, answer, image) "
             f"(kept the copy with the most of {', '.join(_GOLD_FIELDS)})"] if dropped else []
    return _collect(name, split, len(kept), lambda i: ds[kept[i]], subset_size, seed, base, preset, kept, notes)


_GOLD_FIELDS = ("reasoning", "chart_type", "table")


def _image_key(value: Any) -> str:
    """Digest of an undecoded image's bytes (its path when it has none)."""
    if isinstance(value, dict):
        data = value.get("bytes")
        return hashlib.sha1(data).hexdigest() if data else f"path:{value.get('path')}"
    return hashlib.sha1(value).hexdigest() if isinstance(value, (bytes, bytearray)) else f"path:{value}"


def _deduplicate(ds: datasets.Dataset) -> list[int]:
    """Source indices of ``ds`` without repeats of (question, answer, image bytes), in source order.

    chart-rvr's upload carries cache-*.arrow files beside its shards, so the hub's arrow builder yields
    each question about three times, a third of them without the gold fields: of each group of repeats
    the row with the most gold fields stays (the first of equals).
    """
    best: dict[tuple[str, str, str], tuple[int, int]] = {}  # key -> (gold fields, index)
    golds = [c for c in _GOLD_FIELDS if c in ds.column_names]
    for start in range(0, len(ds), _CHUNK):
        batch = ds[start : start + _CHUNK]
        for j in range(len(batch["query"])):
            key = (json.dumps(batch["query"][j], default=str), json.dumps(batch["label"][j], default=str),
                   _image_key(batch["image"][j]))
            filled = sum(_filled(batch[c][j]) for c in golds)
            if key not in best or filled > best[key][0]:
                best[key] = (filled, start + j)
    return sorted(index for _, index in best.values())


def _filled(value: Any) -> bool:
    """A gold field holds something: text, or a table struct with columns or rows."""
    if isinstance(value, dict):
        return any(value.values())
    return _text(value) is not None


def _flag(value: Any) -> bool | None:
    """EvoChart's ``is_clear`` as a bool (JSON true/false, or its text), None when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text)


def _origin(value: Any) -> str | None:
    """ChartQA's ``human_or_machine`` as "human" or "augmented" (its ClassLabel: 0 human, 1 machine)."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().lower()
    return {"0": "human", "human": "human", "1": "augmented", "machine": "augmented",
            "augmented": "augmented"}.get(text)


def _load_evochart(split: str, subset_size: int | None, seed: int, data_dir: str | None,
                   preset: str = DEFAULT_PRESET) -> datasets.Dataset:
    path = _local_dir("evochart", data_dir)
    if path is None:
        raise FileNotFoundError(
            f"evochart: no local files (EvoChart-QA is not loaded from the hub); "
            f"{_layout_help('evochart', _where('evochart'))}, or pass data_dir=..."
        )
    if path.is_file():
        json_file, base = path, path.parent
    else:
        candidates = sorted(path.glob("*.json"))
        if len(candidates) > 1:  # prefer a file naming the QA set or split over side files
            preferred = [c for c in candidates if any(k in c.name.lower() for k in ("qa", "test"))]
            candidates = preferred if len(preferred) == 1 else candidates
        if len(candidates) != 1:
            found = ", ".join(c.name for c in candidates) or "none"
            raise FileNotFoundError(
                f"evochart: expected one JSON file in {path} (found: {found}); {_layout_help('evochart', str(path))}"
            )
        json_file, base = candidates[0], path
    records = json.loads(json_file.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise ConfigError(f"evochart: {json_file} must hold a JSON list of {{imgname, query, label}} objects")
    img_dir = base / "png" if (base / "png").is_dir() else base

    def get_row(i: int) -> dict:
        rec = records[i] if isinstance(records[i], dict) else {}
        img = rec.get("imgname")
        if img:
            img = str(img)
            # imgname may or may not already include the png/ folder.
            img = str(base / img) if (base / img).is_file() else str(img_dir / img)
        return {"image": img, "query": rec.get("query"), "label": rec.get("label"),
                "chart_type": rec.get("chart_type"), "is_clear": rec.get("is_clear")}

    return _collect("evochart", split, len(records), get_row, subset_size, seed, base, preset)


def _to_dataset(rows: list[dict]) -> datasets.Dataset:
    rows = [{key: row.get(key) for key in FEATURES} for row in rows]  # a field a source lacks is None
    if not rows:
        return datasets.Dataset.from_list([], features=FEATURES)
    parts = [datasets.Dataset.from_list(rows[i : i + _CHUNK], features=FEATURES) for i in range(0, len(rows), _CHUNK)]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def _check_name(name: Any) -> str:
    key = str(name).strip().lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def _check_split(name: str, split: Any) -> None:
    if split not in SPLITS[name]:
        raise ConfigError(f"unknown split {split!r} for {name}; valid splits: {', '.join(SPLITS[name])}")


def load_chart_dataset(
    name: str,
    split: str = "train",
    subset_size: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    preset: str = DEFAULT_PRESET,
) -> datasets.Dataset:
    """Load a chart QA data set in the schema described in the module docstring.

    ``preset`` (a name of ``chartrl_colab.reward_presets.PRESETS``) picks the system prompt: the layout
    its rewards score (``package``: the package's own one-line format).

    ``subset_size`` keeps the first N rows after a shuffle seeded with ``seed``
    (synthetic: N charts, 100 when None; others: all rows when None).
    ``data_dir`` points at local files (see the module docstring); without it
    ``$CHARTRL_DATA_DIR/<name>`` and then the hub are tried.
    """
    name = _check_name(name)
    _check_split(name, split)
    get_preset(preset)  # a bad name fails before any loading
    if subset_size is not None and (isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 1):
        raise ConfigError(f"subset_size must be a positive int or None, got {subset_size!r}")
    if name == "synthetic":
        return _load_synthetic(split, subset_size, seed, preset)
    if name == "evochart":
        return _load_evochart(split, subset_size, seed, data_dir, preset)
    return _load_hub_rows(name, split, subset_size, seed, data_dir, preset)
