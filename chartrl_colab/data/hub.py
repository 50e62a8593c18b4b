"""Chart QA data sets read from local files or the hub, as the rows of :func:`chartrl_colab.data.rows.collect`.

Local files are looked up in ``data_dir`` (or ``data_dir/<name>``), else in ``$CHARTRL_DATA_DIR/<name>``, else
``chart-rvr`` and ``chartqa`` come from the hub. Their local folder holds a ``save_to_disk`` folder (``DatasetDict``
or one split), a snapshot of a single-split hub repository of root-level ``data-*.arrow`` and ``cache-*.arrow``
files (all read, as on the hub), or the hub's files (``data/<split>-*.parquet`` and the variants of
``_PATTERNS``; ``.arrow``, ``.jsonl`` and ``.json`` too, image paths in JSON relative to the folder).
EvoChart-QA is local files only: a JSON list of ``{"imgname", "query", "label"}`` (optionally ``is_clear`` and
``chart_type``) beside a ``png/`` folder of images.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import datasets

from chartrl_colab.data.rows import CHUNK, collect, field_text
from chartrl_colab.errors import ConfigError
from chartrl_colab.files import read_json

HUB_IDS = {"chart-rvr": "sanchit97/chart-rvr-grpo-train", "chartqa": "HuggingFaceM4/ChartQA"}
# The splits of the data sets read here (chartrl_colab.data.loading.SPLITS adds synthetic's).
SOURCE_SPLITS = {"chart-rvr": ("train",), "chartqa": ("train", "val", "test"), "evochart": ("test",)}
DATA_DIR_ENV = "CHARTRL_DATA_DIR"
_GOLD_FIELDS = ("reasoning", "chart_type", "table")


def _layout_help(name: str, where: str) -> str:
    if name == "evochart":
        return (f"put the EvoChart-QA JSON file (a list of {{imgname, query, label}}) in {where}/ "
                f"and its chart images in {where}/png/")
    return (f"put {HUB_IDS[name]} in {where}/ either as a datasets.save_to_disk folder "
            f"(Dataset or DatasetDict) or as the hub's parquet files ({where}/data/<split>-*.parquet)")


def _where(name: str) -> str:  # where $CHARTRL_DATA_DIR would hold the files
    root = os.environ.get(DATA_DIR_ENV)
    return str(Path(root) / name) if root else f"${DATA_DIR_ENV}/{name}"


def _local_dir(name: str, data_dir: str | None) -> Path | None:
    """Folder (or file) of the local files of ``name``, or None to use the hub."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        path = path / name if (path / name).is_dir() else path  # the data set's own folder, or a root holding it
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
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


# Packaged builder for each file extension the hub uses.
_BUILDERS = {"parquet": "parquet", "arrow": "arrow", "jsonl": "json", "json": "json"}
# data/<split>-*.parquet is the hub's own layout; the rest are its parquet-converter's (default/<split>/0000.parquet)
# and plain variants.
_PATTERNS = ("data/{split}-*.{ext}", "data/{split}/*.{ext}", "{split}-*.{ext}", "{split}/*.{ext}", "*/{split}/*.{ext}",
             "{split}.{ext}", "data/{split}.{ext}")


def _load_hub_format(path: Path, name: str, split: str) -> datasets.Dataset:
    if path.is_dir() and (path / "dataset_dict.json").exists():  # DatasetDict.save_to_disk
        dd = datasets.load_from_disk(str(path))
        if split not in dd:
            raise FileNotFoundError(f"{name}: split {split!r} is not in {path} (it has: {', '.join(dd)})")
        return dd[split]
    if path.is_dir() and (path / split / "state.json").exists():  # one split saved alone
        return datasets.load_from_disk(str(path / split))
    # A snapshot of a hub repository of Arrow shards (chart-rvr's data-*.arrow, cache-*.arrow, maybe a state.json):
    # every root-level file, as the hub's arrow builder reads them, so local and hub loads hold the same rows.
    shards = sorted(glob.glob(str(path / "data-*.arrow"))) + sorted(glob.glob(str(path / "cache-*.arrow")))
    if path.is_dir() and shards and SOURCE_SPLITS[name] == (split,):
        return datasets.load_dataset("arrow", data_files=shards, split="train")
    if path.is_dir() and (path / "state.json").exists():  # Dataset.save_to_disk: taken as the requested split
        return datasets.load_from_disk(str(path))
    for ext, builder in _BUILDERS.items():
        if path.is_file():
            files = [str(path)] if path.name.endswith("." + ext) else []
        else:
            files = sorted({f for p in _PATTERNS for f in glob.glob(str(path / p.format(split=split, ext=ext)))})
        if files:
            try:
                return datasets.load_dataset(builder, data_files=files, split="train")
            except Exception as err:  # noqa: BLE001 - a damaged file (ArrowInvalid...) is the user's to replace
                raise ConfigError(f"{name}: cannot read {files[0] if len(files) == 1 else path} ({_one_line(err)}); "
                                  "download the files again or point data_dir at good ones") from None
    raise FileNotFoundError(f"{name}: no files for split {split!r} in {path}; {_layout_help(name, str(path))}")


def load_hub_rows(name: str, split: str, subset_size: int | None, seed: int, data_dir: str | None) -> list[dict]:
    path = _local_dir(name, data_dir)
    if path is not None:
        ds, base = _load_hub_format(path, name, split), (path if path.is_dir() else path.parent)
    else:
        try:
            ds, base = _hub_load(HUB_IDS[name], split), None
        except Exception as err:  # offline, gated, renamed ...: say where local files go instead
            raise FileNotFoundError(
                f"{name}: could not load {HUB_IDS[name]} split {split!r} from the hub ({_one_line(err)}); "
                f"{_layout_help(name, _where(name))}, or pass data_dir=...") from err
    if isinstance(ds.features.get("image"), datasets.Image):
        # Undecoded, so a corrupt image becomes a skipped row, not a crash mid-iteration.
        ds = ds.cast_column("image", datasets.Image(decode=False))
    if missing := {"image", "query", "label"} - set(ds.column_names):
        raise ConfigError(f"{name}: the data lack columns {sorted(missing)} (have {ds.column_names})")
    ds = ds.select_columns([c for c in ("image", "query", "label", *_GOLD_FIELDS, "human_or_machine")
                            if c in ds.column_names])
    if name != "chart-rvr":
        return collect(name, split, len(ds), lambda i: ds[i], subset_size, seed, base)
    kept = _deduplicate(ds)
    dropped = len(ds) - len(kept)
    notes = [f"dropped {dropped} of {len(ds)} rows of {name}/{split} that repeat a (question, answer, image) "
             f"(kept the copy with the most of {', '.join(_GOLD_FIELDS)})"] if dropped else []
    return collect(name, split, len(kept), lambda i: ds[kept[i]], subset_size, seed, base, kept, notes)


def _image_key(value: Any) -> str:
    if isinstance(value, dict):
        data = value.get("bytes")
        return hashlib.sha1(data).hexdigest() if data else f"path:{value.get('path')}"
    return hashlib.sha1(value).hexdigest() if isinstance(value, (bytes, bytearray)) else f"path:{value}"


def _deduplicate(ds: datasets.Dataset) -> list[int]:
    """Source indices of ``ds`` without repeats of (question, answer, image bytes), in source order: of each group
    the row with the most gold fields stays, the first of equals (chart-rvr's cache-*.arrow files repeat every
    question, a third of the copies without the gold fields)."""
    best: dict[tuple[str, str, str], tuple[int, int]] = {}  # key -> (gold fields, index)
    golds = [c for c in _GOLD_FIELDS if c in ds.column_names]
    for start in range(0, len(ds), CHUNK):
        batch = ds[start : start + CHUNK]
        for j in range(len(batch["query"])):
            key = (json.dumps(batch["query"][j], default=str), json.dumps(batch["label"][j], default=str),
                   _image_key(batch["image"][j]))
            filled = sum(_filled(batch[c][j]) for c in golds)
            if key not in best or filled > best[key][0]:
                best[key] = (filled, start + j)
    return sorted(index for _, index in best.values())


def _filled(value: Any) -> bool:
    # A gold field holds text, or a table struct with columns or rows.
    if isinstance(value, dict):
        return any(value.values())
    return field_text(value) is not None


def load_evochart(split: str, subset_size: int | None, seed: int, data_dir: str | None) -> list[dict]:
    path = _local_dir("evochart", data_dir)
    if path is None:
        raise FileNotFoundError("evochart: no local files (EvoChart-QA is not loaded from the hub); "
                                f"{_layout_help('evochart', _where('evochart'))}, or pass data_dir=...")
    if path.is_file():
        json_file, base = path, path.parent
    else:
        candidates = sorted(path.glob("*.json"))
        # Prefer the one file naming the QA set or split over side files.
        preferred = [c for c in candidates if any(k in c.name.lower() for k in ("qa", "test"))]
        candidates = preferred if len(preferred) == 1 else candidates
        if len(candidates) != 1:
            found = ", ".join(c.name for c in candidates) or "none"
            raise FileNotFoundError(f"evochart: expected one JSON file in {path} (found: {found}); "
                                    f"{_layout_help('evochart', str(path))}")
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
        img = rec.get("imgname") and str(rec["imgname"])
        if img:  # with or without the png/ folder in front
            img = str(base / img if (base / img).is_file() else img_dir / img)
        return {"image": img, "query": rec.get("query"), "label": rec.get("label"),
                "chart_type": rec.get("chart_type"), "is_clear": rec.get("is_clear")}

    return collect("evochart", split, len(records), get_row, subset_size, seed, base)
