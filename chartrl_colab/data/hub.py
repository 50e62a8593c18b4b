"""Chart QA data sets read from local files or the hub, as plain rows for ``chartrl_colab.data.loading``.

``_load_hub_rows`` (``chart-rvr``, ``chartqa``) and ``_load_evochart`` (``evochart``) return a list of
row dicts holding the chart's undecoded image bytes, the ``question`` and the fields of
``chartrl_colab.data.loading.FEATURES`` but ``prompt``; ``chartrl_colab.data.loading`` adds the preset's prompt and
makes the ``datasets.Dataset``.

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

EvoChart-QA is local files only: a JSON file (a list of ``{"imgname", "query", "label"}``, optionally
``is_clear`` and ``chart_type``) beside a ``png/`` folder of images.

The hub data sets are downloaded with ``datasets.load_dataset`` when no local
folder is found.  Rows without a readable image, a question or an answer are
skipped and counted in one warning.  chart-rvr's repeats of (question, answer,
image bytes) are dropped, keeping the copy with the most gold fields.
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
import PIL.Image
from tqdm.auto import tqdm

from chartrl_colab.data.images import processor_problem, rgb_png_bytes, to_rgb
from chartrl_colab.errors import ConfigError
from chartrl_colab.files import read_json

HUB_IDS = {
    "chart-rvr": "sanchit97/chart-rvr-grpo-train",
    "chartqa": "HuggingFaceM4/ChartQA",
}
# The splits of the data sets read here (chartrl_colab.data.loading.SPLITS adds synthetic's).
SOURCE_SPLITS = {
    "chart-rvr": ("train",),
    "chartqa": ("train", "val", "test"),
    "evochart": ("test",),
}
DATA_DIR_ENV = "CHARTRL_DATA_DIR"

# Bars shown above this many rows; below it a bar is just noise.
_PROGRESS_MIN = 32
# Rows are turned into Arrow in chunks so that a full-size image set never
# needs one >2 GiB binary column at once.
_CHUNK = 1000


def _png_bytes(img: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


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
    if path.is_dir() and shards and SOURCE_SPLITS[name] == (split,):
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
            try:
                return datasets.load_dataset(builder, data_files=files, split="train")
            except Exception as err:  # noqa: BLE001 - a damaged file (ArrowInvalid...) is the user's to replace
                raise ConfigError(f"{name}: cannot read {files[0] if len(files) == 1 else path} ({_one_line(err)}); "
                                  "download the files again or point data_dir at good ones") from None
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


def _read_image(value: Any, base: Path | None) -> tuple[bytes | None, str | None]:
    """``(bytes, None)`` of a usable image, converted to RGB as a viewer shows it
    (:func:`chartrl_colab.data.images.to_rgb`), or ``(None, why not)``: unreadable, or refused by
    Qwen-VL's image processor (:func:`chartrl_colab.data.images.processor_problem`). Decodes fully to catch
    truncated files."""
    try:
        if value is None:
            return None, "unreadable images"
        if isinstance(value, PIL.Image.Image):
            rgb = to_rgb(value)
            data, size = _png_bytes(rgb), rgb.size
        else:
            if isinstance(value, dict):
                data, p = value.get("bytes"), value.get("path")
            elif isinstance(value, (bytes, bytearray)):
                data, p = bytes(value), None
            else:
                data, p = None, str(value)
            if data is None:
                if not p:
                    return None, "unreadable images"
                fp = Path(p)
                if not fp.is_absolute() and base is not None and not fp.exists():
                    fp = base / fp
                data = fp.read_bytes()
            data, size = rgb_png_bytes(data)
    except Exception:  # any decoder error means the row has no usable image
        return None, "unreadable images"
    problem = processor_problem(*size)
    return (None, f"images the Qwen-VL processor refuses ({problem})") if problem else (data, None)


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
    source_index: list[int] | None = None,
    notes: list[str] | None = None,
) -> list[dict]:
    """Shared tail of the real loaders: seeded shuffle, mapping, skipping, one warning; the rows kept.

    ``get_row(i)`` returns a dict with ``image``, ``query``, ``label`` and
    optionally ``chart_type``, ``table``, ``reasoning``, ``is_clear``,
    ``human_or_machine``.  Rows are examined in shuffled order until
    ``subset_size`` good ones are found, so a small subset decodes only the
    images it needs.  ``source_index[i]`` is row i's index in the source (for
    its id) when rows were dropped before; ``notes`` go into the warning.
    Each row holds the ``question``; ``chartrl_colab.data.loading`` turns it into the prompt.
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
        image, why = _read_image(raw.get("image"), base)
        if image is None:
            skipped[why] += 1
            continue
        table, bad = _normalize_table(raw.get("table"))
        bad_tables += bad
        chart_type = _text(raw.get("chart_type"))
        rows.append(
            {
                "question": question,
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
        if not rows:
            raise ConfigError(f"no usable rows in {name}/{split}: {msg}; check the files"
                              f"{f' under {base}' if base else ''} or point data_dir at good ones")
        warnings.warn(msg, stacklevel=4)  # point at the caller of load_chart_dataset
    if not rows:
        raise ConfigError(f"no rows in {name}/{split}; check the files{f' under {base}' if base else ''}")
    return rows


def _load_hub_rows(name: str, split: str, subset_size: int | None, seed: int, data_dir: str | None) -> list[dict]:
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
        return _collect(name, split, len(ds), lambda i: ds[i], subset_size, seed, base)
    kept = _deduplicate(ds)
    dropped = len(ds) - len(kept)
    notes = [f"dropped {dropped} of {len(ds)} rows of {name}/{split} that repeat a (question, answer, image) "
             f"(kept the copy with the most of {', '.join(_GOLD_FIELDS)})"] if dropped else []
    return _collect(name, split, len(kept), lambda i: ds[kept[i]], subset_size, seed, base, kept, notes)


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


def _load_evochart(split: str, subset_size: int | None, seed: int, data_dir: str | None) -> list[dict]:
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
    try:
        records = read_json(json_file)
    except ValueError as err:
        raise ConfigError(f"evochart: {json_file} does not parse as JSON ({_one_line(err)}); download it again or "
                          "point data_dir at a good copy") from None
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

    return _collect("evochart", split, len(records), get_row, subset_size, seed, base)
