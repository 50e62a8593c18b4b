"""Behaviour tests for chartrl_colab.data.loading and chartrl_colab.data.hub: data set names and splits, and the
local-file loaders (the synthetic set's rows are tested in test_synthetic.py).

Nothing here touches the network: the hub seam is replaced by a function that fails,
and the datasets cache points into tmp_path.
"""

import io
import json
import warnings

import datasets
import numpy as np
import PIL.Image
import pytest

from chartrl_colab.data import hub as H
from chartrl_colab.data import loading as D
from chartrl_colab.rewards.presets import get_preset


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.delenv(H.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")

    def no_hub(hub_id, split):
        raise ConnectionError(f"no network in tests ({hub_id})")

    monkeypatch.setattr(H, "_hub_load", no_hub)


def _skip_warnings(record):
    return [str(w.message) for w in record if "skipped" in str(w.message)]


# ----------------------------------------------------------------- names and splits


def test_bad_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        D.load_chart_dataset("plotqa")
    msg = str(err.value)
    assert "plotqa" in msg and all(n in msg for n in D.DATASETS) and "\n" not in msg


@pytest.mark.parametrize(
    "name,split,valid",
    [("synthetic", "validation", ["train", "test"]), ("chartqa", "dev", ["train", "val", "test"]), ("evochart", "train", ["test"])],
)
def test_bad_split_lists_valid_splits(name, split, valid):
    with pytest.raises(ValueError) as err:
        D.load_chart_dataset(name, split)
    msg = str(err.value)
    assert split in msg and all(v in msg for v in valid) and "\n" not in msg


# ----------------------------------------------------------------- local files


def _image_bytes(color, mode="RGB", size=(40, 30)):
    buf = io.BytesIO()
    PIL.Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def evochart_dir(tmp_path):
    root = tmp_path / "evochart"
    (root / "png").mkdir(parents=True)
    (root / "png" / "a.png").write_bytes(_image_bytes((200, 30, 30)))
    (root / "png" / "b.png").write_bytes(_image_bytes(128, mode="L"))
    (root / "png" / "c.png").write_bytes(_image_bytes((0, 0, 255, 128), mode="RGBA"))
    (root / "png" / "bad.png").write_bytes(b"this is not a png")
    records = [
        {"imgname": "a.png", "query": "Q a?", "label": "12"},
        {"imgname": "b.png", "query": "Q b?", "label": 3.0},
        {"imgname": "c.png", "query": "Q c?", "label": ["Yes"]},
        {"imgname": "bad.png", "query": "Q bad?", "label": "1"},
        {"imgname": "a.png", "query": "Q no label?"},
        {"imgname": "missing.png", "query": "Q missing?", "label": "2"},
    ]
    (root / "EvoChart-QA.json").write_text(json.dumps(records))
    return root


def test_evochart_local_rows_and_skips(evochart_dir):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = D.load_chart_dataset("evochart", "test", data_dir=str(evochart_dir))
    assert ds.features == D.FEATURES
    got = {r["prompt"][1]["content"]: r for r in ds}
    assert set(got) == {"Q a?", "Q b?", "Q c?"}
    assert {q: r["answer"] for q, r in got.items()} == {"Q a?": "12", "Q b?": "3", "Q c?": "Yes"}
    for r in ds:
        assert r["image"].mode == "RGB" and r["image"].size == (40, 30)
        assert r["chart_type"] is None and r["table"] is None and r["reasoning"] is None
        assert r["prompt"][0]["content"] == get_preset("chart-rvr").system_prompt  # hub data: the original prompt
    assert np.asarray(got["Q a?"]["image"])[0, 0].tolist() == [200, 30, 30]
    assert len(set(ds["id"])) == 3 and all(i.startswith("evochart/test/") for i in ds["id"])
    msgs = _skip_warnings(rec)
    assert len(msgs) == 1
    assert "skipped 3 of 6 rows in evochart" in msgs[0]
    assert "2 unreadable images" in msgs[0] and "1 without an answer" in msgs[0]


def test_evochart_subset_seed_and_env_dir(evochart_dir, monkeypatch):
    monkeypatch.setenv(H.DATA_DIR_ENV, str(evochart_dir.parent))  # root holding evochart/
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = D.load_chart_dataset("evochart", "test", subset_size=2, seed=4)
        b = D.load_chart_dataset("evochart", "test", subset_size=2, seed=4)
        full = D.load_chart_dataset("evochart", "test", seed=4)
    assert len(a) == 2 and a["id"] == b["id"] == full["id"][:2]


@pytest.fixture
def chartqa_dir(tmp_path):
    """Tiny ChartQA in the hub's layout: data/<split>-*.parquet with its features."""
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "query": datasets.Value("string"),
            "label": datasets.List(datasets.Value("string")),
            "human_or_machine": datasets.ClassLabel(names=["human", "machine"]),
        }
    )
    rows = {
        "image": [
            {"bytes": _image_bytes((10, 200, 10)), "path": None},
            {"bytes": _image_bytes(90, mode="L"), "path": None},
            {"bytes": _image_bytes((1, 2, 3)), "path": None},
            {"bytes": b"\x89PNG broken", "path": None},
            {"bytes": _image_bytes((4, 5, 6)), "path": None},
        ],
        "query": ["How many?", "Which one?", "What year?", "Broken image?", "No label?"],
        "label": [["7"], ["Red"], ["2019"], ["1"], []],
        "human_or_machine": [0, 1, 0, 1, 0],
    }
    root = tmp_path / "chartqa"
    (root / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    return root


def test_chartqa_from_hub_parquet_layout(chartqa_dir):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = D.load_chart_dataset("chartqa", "test", data_dir=str(chartqa_dir))
    assert ds.features == D.FEATURES
    assert sorted(zip([p[1]["content"] for p in ds["prompt"]], ds["answer"])) == [
        ("How many?", "7"),
        ("What year?", "2019"),
        ("Which one?", "Red"),
    ]
    assert all(r["image"].mode == "RGB" for r in ds)
    assert all(r["chart_type"] is None and r["table"] is None for r in ds)
    msgs = _skip_warnings(rec)
    assert len(msgs) == 1 and "skipped 2 of 5 rows in chartqa/test" in msgs[0]
    assert "1 unreadable images" in msgs[0] and "1 without an answer" in msgs[0]


def test_chartqa_missing_split_says_where(chartqa_dir):
    with pytest.raises(FileNotFoundError) as err:
        D.load_chart_dataset("chartqa", "val", data_dir=str(chartqa_dir))
    msg = str(err.value)
    assert "'val'" in msg and str(chartqa_dir) in msg and "parquet" in msg and "save_to_disk" in msg


def test_chart_rvr_from_save_to_disk(tmp_path):
    table = {"columns": ["Year", "Sales"], "rows": [["2019", "5"], ["2020", "8"]]}
    ds = datasets.Dataset.from_dict(
        {
            "image": [PIL.Image.new("RGB", (32, 32), (i * 40, 0, 0)) for i in range(4)],
            "query": ["Q0?", "Q1?", "Q2?", "Q3?"],
            "label": ["8", "2020", "", "yes"],
            "reasoning": ["<step-1> read 2020 </step-1>", None, "r", "r3"],
            "chart_type": ["Bar", None, "line", "pie"],
            "table": [json.dumps(table), None, None, "not json at all"],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "query": datasets.Value("string"),
                "label": datasets.Value("string"),
                "reasoning": datasets.Value("string"),
                "chart_type": datasets.Value("string"),
                "table": datasets.Value("string"),
            }
        ),
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "chart-rvr"))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = D.load_chart_dataset("chart-rvr", data_dir=str(tmp_path))  # root holding chart-rvr/
    rows = {r["prompt"][1]["content"]: r for r in out}
    assert set(rows) == {"Q0?", "Q1?", "Q3?"}
    r0 = rows["Q0?"]
    assert r0["answer"] == "8" and r0["chart_type"] == "bar"
    assert json.loads(r0["table"]) == table and r0["reasoning"] == "<step-1> read 2020 </step-1>"
    assert rows["Q1?"]["chart_type"] is None and rows["Q1?"]["table"] is None and rows["Q1?"]["reasoning"] is None
    assert rows["Q3?"]["table"] is None and rows["Q3?"]["chart_type"] == "pie"
    msgs = _skip_warnings(rec)
    assert len(msgs) == 1 and "skipped 1 of 4 rows in chart-rvr/train: 1 without an answer" in msgs[0]
    assert "1 kept rows had a table" in msgs[0]


# ----------------------------------------------------------------- missing files


@pytest.mark.parametrize("name", ["chartqa", "chart-rvr"])
def test_hub_unreachable_says_where_to_put_files(name, tmp_path, monkeypatch):
    monkeypatch.setenv(H.DATA_DIR_ENV, str(tmp_path / "store"))
    with pytest.raises(FileNotFoundError) as err:
        D.load_chart_dataset(name, "train")
    msg = str(err.value)
    assert "\n" not in msg
    assert H.HUB_IDS[name] in msg and str(tmp_path / "store" / name) in msg
    assert "parquet" in msg and "save_to_disk" in msg and "data_dir" in msg


def test_evochart_missing_says_where(monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        D.load_chart_dataset("evochart", "test")
    msg = str(err.value)
    assert "png/" in msg and "CHARTRL_DATA_DIR" in msg and "imgname" in msg and "\n" not in msg


def test_nonexistent_data_dir_says_where(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        D.load_chart_dataset("chartqa", "test", data_dir=str(missing))
    assert str(missing) in str(err.value) and "parquet" in str(err.value)


# ----------------------------------------------------------------- Chart-RVR as uploaded

_RVR_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "query": datasets.Value("string"),
        "label": datasets.Value("string"),
        "reasoning": datasets.Value("string"),
        "chart_type": datasets.Value("string"),
        "table": {"columns": datasets.List(datasets.Value("string")),
                  "rows": datasets.List(datasets.List(datasets.Value("string")))},
    }
)


def _arrow_file(tmp_path, name, rows):
    """One Arrow shard as datasets writes it (the format of the hub upload's data-* and cache-* files)."""
    where = tmp_path / f"shard-{name}"
    datasets.Dataset.from_list(rows, features=_RVR_FEATURES).save_to_disk(str(where))
    return where / "data-00000-of-00001.arrow", where / "state.json"


def _rvr_row(q, label, color, full=True):
    table = {"columns": ["Year", "Sales"], "rows": [["2019", "5"], ["2020", label]]}
    return {"image": {"bytes": _image_bytes(color), "path": None}, "query": q, "label": label,
            "reasoning": f"<step-1>: {q} is read off the chart" if full else None,
            "chart_type": "Bar" if full else None, "table": table if full else None}


@pytest.mark.parametrize("with_state", [True, False])
def test_chart_rvr_snapshot_with_cache_files_loads_without_repeats(tmp_path, with_state):
    # The upload: two data shards and a cache file repeating every question, a third of them without gold fields.
    a = [_rvr_row("Q0?", "8", (10, 0, 0)), _rvr_row("Q1?", "9", (20, 0, 0), full=False)]
    b = [_rvr_row("Q2?", "7", (30, 0, 0)), _rvr_row("Q2?", "7", (31, 0, 0))]  # same question, other image: kept
    cache = [_rvr_row("Q0?", "8", (10, 0, 0), full=False), _rvr_row("Q1?", "9", (20, 0, 0)),
             _rvr_row("Q2?", "7", (30, 0, 0), full=False)]
    snap = tmp_path / "chart-rvr"
    snap.mkdir()
    for name, rows in (("data-00000-of-00002", a), ("data-00001-of-00002", b), ("cache-4f2a9c1e", cache)):
        shard, state = _arrow_file(tmp_path, name, rows)
        (snap / f"{name}.arrow").write_bytes(shard.read_bytes())
    if with_state:  # the snapshot's state.json names files it does not hold; it must not matter
        (snap / "state.json").write_text(state.read_text())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = D.load_chart_dataset("chart-rvr", data_dir=str(snap))
    assert ds.features == D.FEATURES and len(ds) == 4
    by_image = {tuple(np.asarray(r["image"])[0, 0].tolist()): r for r in ds}
    assert set(by_image) == {(10, 0, 0), (20, 0, 0), (30, 0, 0), (31, 0, 0)}
    for r in ds:  # every kept copy is the one with the gold fields, wherever it was
        assert r["reasoning"].startswith("<step-1>:") and r["chart_type"] == "bar"
        assert json.loads(r["table"]) == {"columns": ["Year", "Sales"], "rows": [["2019", "5"], ["2020", r["answer"]]]}
    # ids are positions in the source (data shards first, then cache files): Q1's full copy is cache row 1
    assert by_image[(20, 0, 0)]["id"] == "chart-rvr/train/5"
    msgs = [str(w.message) for w in rec if "dropped" in str(w.message)]
    assert len(msgs) == 1 and "dropped 3 of 7 rows of chart-rvr/train" in msgs[0]


def test_chart_rvr_table_struct_and_hub_rows_are_deduplicated(monkeypatch):
    rows = [_rvr_row("Q0?", "8", (10, 0, 0), full=False), _rvr_row("Q0?", "8", (10, 0, 0))]
    monkeypatch.setattr(H, "_hub_load", lambda hub_id, split: datasets.Dataset.from_list(rows, features=_RVR_FEATURES))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = D.load_chart_dataset("chart-rvr")
    assert len(ds) == 1 and ds[0]["id"] == "chart-rvr/train/1" and ds[0]["reasoning"] is not None
    assert json.loads(ds[0]["table"])["columns"] == ["Year", "Sales"]
    assert any("dropped 1 of 2 rows" in str(w.message) for w in rec)


def test_evochart_keeps_is_clear_and_chart_type(evochart_dir):
    records = json.loads((evochart_dir / "EvoChart-QA.json").read_text())[:3]
    records[0].update(is_clear=True, chart_type="Bar")
    records[1].update(is_clear=False)
    (evochart_dir / "EvoChart-QA.json").write_text(json.dumps(records))
    ds = D.load_chart_dataset("evochart", "test", data_dir=str(evochart_dir))
    got = {r["prompt"][1]["content"]: (r["is_clear"], r["chart_type"]) for r in ds}
    assert got == {"Q a?": (True, "bar"), "Q b?": (False, None), "Q c?": (None, None)}


def test_chartqa_keeps_human_or_machine(chartqa_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = D.load_chart_dataset("chartqa", "test", data_dir=str(chartqa_dir))
    got = {r["prompt"][1]["content"]: r["human_or_machine"] for r in ds}
    assert got == {"How many?": "human", "Which one?": "augmented", "What year?": "human"}


def test_the_preset_picks_the_system_prompt():
    from chartrl_colab.rewards.package import ANSWER_FORMAT
    from chartrl_colab.rewards.presets import PRESETS

    package = D.load_chart_dataset("synthetic", "train", subset_size=2, seed=0, preset="package")
    # the package preset is the former prompt, word for word
    former = "You are a vision-language assistant that answers questions about chart images. " + ANSWER_FORMAT
    assert package[0]["prompt"][0]["content"] == former == PRESETS["package"].system_prompt
    default = D.load_chart_dataset("synthetic", "train", subset_size=2, seed=0)
    assert default[0]["prompt"][0]["content"] == former  # auto: the embedded charts keep the short prompt
    rvr = D.load_chart_dataset("synthetic", "train", subset_size=2, seed=0, preset="chart-rvr")
    assert rvr[0]["prompt"][0]["content"] == PRESETS["chart-rvr"].system_prompt
    assert D.make_prompt("Q?", "package")[0]["content"] == former
    with pytest.raises(D.ConfigError, match="reward_preset='nope' is not valid; choose one of: chart-rvr, package"):
        D.load_chart_dataset("synthetic", preset="nope")
