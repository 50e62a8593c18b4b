"""Behaviour tests for chartrl_colab.data.synthetic: the generated charts, questions and answers, and the rows
chartrl_colab.data.loading makes of them."""

import json
import subprocess
import sys
from itertools import product

import datasets
import numpy as np
import PIL.Image
import pytest

from chartrl_colab.data import loading as D
from chartrl_colab.data import synthetic as S
from chartrl_colab.rewards.presets import get_preset

N = 40  # rendered rows per synthetic fixture: enough variety, a second or so each


def _png(ds, i):
    """Stored image bytes of row i (undecoded, to compare exact bytes)."""
    return ds.cast_column("image", datasets.Image(decode=False))[i]["image"]["bytes"]


@pytest.fixture(scope="module")
def train0():
    return D.load_chart_dataset("synthetic", "train", subset_size=N, seed=0)


def test_schema_and_prompt(train0):
    assert train0.features == D.FEATURES
    assert len(train0) == N
    row = train0[0]
    prompt = get_preset("package").system_prompt  # the embedded charts' default preset
    assert row["prompt"][0] == {"role": "system", "content": prompt}
    assert row["prompt"][1]["role"] == "user" and isinstance(row["prompt"][1]["content"], str)
    for tag in ("<think>", "<type>", "<table>", "</think>", "<answer>", "</answer>"):
        assert tag in prompt
    assert all(r["chart_type"] in S.CHART_TYPES for r in train0)
    assert len(set(train0["id"])) == N


def test_same_seed_same_rows(train0):
    again = D.load_chart_dataset("synthetic", "train", subset_size=N, seed=0)
    for col in ("id", "prompt", "answer", "chart_type", "table", "reasoning"):
        assert again[col] == train0[col]
    assert [_png(again, i) for i in range(N)] == [_png(train0, i) for i in range(N)]


def test_different_seed_differs(train0):
    other = D.load_chart_dataset("synthetic", "train", subset_size=N, seed=1)
    assert len(set(other["table"]) & set(train0["table"])) < N // 4
    assert [_png(other, i) for i in range(N)] != [_png(train0, i) for i in range(N)]


def test_train_and_test_are_disjoint(train0):
    test0 = D.load_chart_dataset("synthetic", "test", subset_size=N, seed=0)
    assert not set(test0["table"]) & set(train0["table"])
    assert not set(test0["id"]) & set(train0["id"])
    # Disjoint by chart data even across seeds, which is what an evaluation needs.
    charts = lambda specs: {s["table"] for s in specs}  # noqa: E731
    assert not charts(S.synthetic_examples(300, 0, "train")) & charts(S.synthetic_examples(300, 1, "test"))


def test_subset_size_honoured_and_prefix_stable(train0):
    small = D.load_chart_dataset("synthetic", "train", subset_size=7, seed=0)
    assert len(small) == 7
    assert small["id"] == train0["id"][:7] and small["answer"] == train0["answer"][:7]
    assert len(D.load_chart_dataset("synthetic", "test")) == 100  # default size


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_subset_size_must_be_positive(bad):
    with pytest.raises(ValueError, match="subset_size"):
        D.load_chart_dataset("synthetic", subset_size=bad)


def test_answer_question_by_hand():
    labels, values = ["A", "B", "C"], [3, 5, 7]
    assert S.answer_question(labels, values, "value", ["B"]) == "5"
    assert S.answer_question(labels, values, "max", []) == "C"
    assert S.answer_question(labels, values, "min", []) == "A"
    assert S.answer_question(labels, values, "diff", ["A", "C"]) == "4"
    assert S.answer_question(labels, values, "diff", ["C", "A"]) == "4"
    assert S.answer_question(labels, values, "sum", []) == "15"
    assert S.answer_question(labels, values, "count", []) == "3"
    assert S.answer_question(labels, values, "compare", ["A", "B"]) == "B"
    assert S.answer_question(labels, values, "compare", ["C", "B"]) == "C"
    assert S.answer_question(labels, values, "type", [], chart_type="pie") == "pie"
    with pytest.raises(ValueError, match="chart_type"):
        S.answer_question(labels, values, "type", [])
    with pytest.raises(ValueError, match="valid kinds"):
        S.answer_question(labels, values, "median", [])


def _rederive(table_json, kind, args, chart_type):
    table = json.loads(table_json)
    assert set(table) == {"columns", "rows"} and len(table["columns"]) == 2
    labels = [r[0] for r in table["rows"]]
    values = [r[1] for r in table["rows"]]
    return S.answer_question(labels, values, kind, args, chart_type)


def test_answers_rederived_from_the_table_for_many_charts():
    specs = S.synthetic_examples(600, seed=3, split="train")
    seen = set()
    for s in specs:
        assert _rederive(s["table"], s["kind"], s["args"], s["chart_type"]) == s["answer"]
        table = json.loads(s["table"])
        assert [r[0] for r in table["rows"]] == s["labels"] and [r[1] for r in table["rows"]] == s["values"]
        assert len(set(s["values"])) == len(s["values"])  # max/min unambiguous
        for a in s["args"]:
            assert a in s["question"]
        assert s["answer"] in s["reasoning"]
        seen.add((s["chart_type"], s["kind"]))
    assert seen == set(product(S.CHART_TYPES, S.QUESTION_KINDS))


def test_rows_match_their_specs(train0):
    specs = S.synthetic_examples(N, seed=0, split="train")
    for row, spec in zip(train0, specs):
        assert row["prompt"][1]["content"] == spec["question"]
        assert row["table"] == spec["table"] and row["chart_type"] == spec["chart_type"]
        assert _rederive(row["table"], spec["kind"], spec["args"], row["chart_type"]) == row["answer"]
    assert {s["kind"] for s in specs} == set(S.QUESTION_KINDS)
    assert {s["chart_type"] for s in specs} == set(S.CHART_TYPES)
    # The stored image is exactly the rendering of that spec.
    for i in (0, 1, 2):
        assert np.array_equal(np.asarray(train0[i]["image"]), np.asarray(S.render_chart(specs[i])))


def test_later_kinds_leave_each_seeds_charts_and_first_questions_in_place():
    """The kinds added later (compare, type) replace some questions from a stream of their own: every position
    keeps the chart it had, and a question of one of the first six kinds is the one it was."""
    import random

    first, later = S.QUESTION_KINDS[:6], S.QUESTION_KINDS[6:]
    assert later == ("compare", "type")
    for seed, split in ((0, "train"), (2025, "test")):
        specs = S.synthetic_examples(200, seed, split)
        rng, before, seen = random.Random(f"chartrl-synthetic:{seed}:{split}"), [], set()
        while len(before) < len(specs):  # the stream as it was drawn before the later kinds existed
            spec = S.make_synthetic_example(rng)
            sig = spec["table"] + spec["chart_type"]
            if S._split_of(spec) == split and sig not in seen:
                seen.add(sig)
                before.append(spec)
        assert {s["kind"] for s in before} == set(first)
        for now, was in zip(specs, before):
            assert (now["chart_type"], now["table"], now["colors"]) == (was["chart_type"], was["table"], was["colors"])
            assert now == was if now["kind"] in first else now == S.with_question(was, now["kind"], now["args"])
        share = sum(s["kind"] in later for s in specs) / len(specs)
        assert 0.15 < share < 0.35


def test_make_synthetic_example_is_deterministic():
    import random

    a = [S.make_synthetic_example(random.Random(5)) for _ in range(3)]
    b = [S.make_synthetic_example(random.Random(5)) for _ in range(3)]
    assert a == b
    assert S.make_synthetic_example(random.Random(6)) != a[0]


def test_images_are_rgb_right_size_and_not_blank(train0):
    for row in train0.select(range(12)):
        img = row["image"]
        assert isinstance(img, PIL.Image.Image) and img.mode == "RGB"
        assert img.size == (S.IMAGE_SIZE, S.IMAGE_SIZE)
        arr = np.asarray(img)
        not_white = (arr < 240).any(axis=2).mean()
        assert 0.03 < not_white < 0.9, not_white
        assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 10


def test_rendering_does_not_import_pyplot():
    # pyplot would pick (and could switch) the process-wide backend; Figure + Agg canvas does not.
    code = (
        "import sys, random\n"
        "from chartrl_colab.data import synthetic as S\n"
        "S.render_chart(S.make_synthetic_example(random.Random(0)))\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
