"""The chart-rvr reward preset against the original Chart-RVR formulas, and every preset's prompt example.

Expected numbers are worked out by hand from the original ``grpo_utils.py`` (quoted beside each), not by
calling the code; where the original had a bug, the comment gives its value and the fixed one is asserted.
"""

import numpy as np
import pytest

from chartrl_colab.config import REWARD_NAMES, RunConfig
from chartrl_colab.errors import ConfigError
from chartrl_colab.rewards import chart_rvr as R
from chartrl_colab.rewards import package as rewards
from chartrl_colab.rewards import similarity
from chartrl_colab.rewards.presets import PRESETS, get_preset, get_reward_funcs

TABLE = '{"columns": ["Year", "Sales"], "rows": [["2019", "5"], ["2020", "8"]]}'
GOLD_TABLE = {"columns": ["Year", "Sales"], "rows": [["2019", "5"], ["2020", "8"]]}
STEPS = "<step-1>: Read the two bars.\n<step-2>: The 2020 bar is 8."
THINK = f"<type>bar</type>\n<table>{TABLE}</table>\n{STEPS}"
GOOD = f"<think>\n{THINK}\n</think>\n<answer>8</answer>"


def completion(think=THINK, answer="8"):
    return f"<think>\n{think}\n</think>\n<answer>{answer}</answer>"


# ------------------------------------------------------------------------------------------------ format
def test_format_is_two_for_the_newline_layout_and_zero_otherwise():
    # pattern ^<think>\n<type>.*?</type>\n<table>.*?</table>.*?</think>\n<answer>.*?</answer>$ -> 2.0 else 0.0
    assert R.format_reward([GOOD]) == [2.0]
    assert R.format_reward([GOOD + "\n"]) == [2.0]  # trailing blanks only
    assert R.format_reward([GOOD.replace("<think>\n", "<think>")]) == [0.0]  # no newline after <think>
    assert R.format_reward([GOOD.replace("</type>\n", "</type> ")]) == [0.0]  # no newline between type and table
    assert R.format_reward([GOOD.replace("</think>\n", "</think>")]) == [0.0]  # no newline before <answer>
    assert R.format_reward([" " + GOOD]) == [0.0]  # ^ anchors at the first character
    # The original's re.MULTILINE let $ match before a newline, so trailing text scored 2.0; fixed: 0.0.
    assert R.format_reward([GOOD + "\nI hope this helps."]) == [0.0]
    assert R.format_reward([[{"role": "assistant", "content": GOOD}]]) == [2.0]


# ------------------------------------------------------------------------------------------------ tags
def test_tags_are_two_only_when_all_ten_patterns_occur_once():
    # 2 * int(all(len(p.findall(c)) == 1 for p in ten patterns))
    assert R.tag_count_reward([GOOD]) == [2.0]
    assert R.tag_count_reward([GOOD + "<answer>9</answer>"]) == [0.0]  # <answer> twice
    assert R.tag_count_reward([GOOD.replace("<think>\n<type>", "<think><type>")]) == [0.0]  # joint missing
    assert R.tag_count_reward([GOOD.replace("<table>", "").replace("</table>", "")]) == [0.0]


# ------------------------------------------------------------------------------------------------ length
def test_length_window_and_step_markers():
    # +1 if 70 < len(think) <= 250 (len of the stripped <think> text), + min(0.25 * (markers + 1), 1.5)
    assert 70 < len(THINK) <= 250 and THINK.count("<step-") == 2
    assert R.length_reward([GOOD]) == [1.0 + 0.75]
    assert R.length_reward([completion("x" * 70), completion("x" * 71), completion("x" * 250),
                            completion("x" * 251)]) == [0.25, 1.25, 1.25, 0.25]
    four = "".join(f"<step-{k}>: ok. " for k in range(1, 5))  # 4 markers, 56 characters
    assert R.length_reward([completion(four + "y" * 30)]) == [1.0 + 1.25]
    five = "".join(f"<step-{k}>: ok. " for k in range(1, 6))
    assert R.length_reward([completion(five + "y" * 30)]) == [2.5]  # the maximum
    seven = "".join(f"<step-{k}>: ok. " for k in range(1, 8))
    assert R.length_reward([completion(seven + "y" * 200)]) == [1.5]  # over 250 characters, markers capped
    # The original split the whole completion when <think> was missing (0.25 for "no think"); fixed: 0.0.
    assert R.length_reward(["<step-1>: a <step-2>: b <answer>3</answer>"]) == [0.0]


# ------------------------------------------------------------------------------------------------ accuracy
def test_accuracy_relative_five_percent_and_text():
    # |pred - gold| / gold <= 0.05 when both parse as floats, else gold.lower() == pred.lower(); needs <think>
    golds = ["8", "8", "8", "blue", "1,234", "8"]
    preds = ["8", "8.3", "8.5", "Blue.", "1,234", "eight"]
    assert R.accuracy_reward([completion(answer=p) for p in preds], answer=golds) == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    assert R.accuracy_reward(["<answer>8</answer>"], answer=["8"]) == [0.0]  # no <think>
    assert R.accuracy_reward([completion(answer="x"), completion()], answer=[None, ["7", "8"]]) == [None, 1.0]


def test_accuracy_bugs_fixed():
    # Original: sol = float(gold) + 1e-6, so for gold 0 the error of a 0 is 1e-6 / 1e-6 = 1 > 0.05: never right.
    assert R.accuracy_reward([completion(answer="0"), completion(answer="0.01")], answer=["0", "0"]) == [1.0, 0.0]
    # Original: for a negative gold, (|pred - gold|) / gold < 0 <= 0.05: every number right.
    assert R.accuracy_reward([completion(answer="5"), completion(answer="-3.1")], answer=["-3", "-3"]) == [0.0, 1.0]


# ------------------------------------------------------------------------------------------------ chart type
def test_chart_type_exact_ignoring_case():
    # pred_type == c_type.lower() -> 1.0 else 0.0
    assert R.chart_type_reward([GOOD, GOOD.replace(">bar<", ">Stacked Bar<"), GOOD.replace(">bar<", ">bar chart<")],
                               chart_type=["Bar", "stacked bar", "bar"]) == [1.0, 1.0, 0.0]
    # The original split the whole completion when <type> was missing, so a bare "bar" scored 1.0; fixed: 0.0.
    assert R.chart_type_reward(["bar"], chart_type=["bar"]) == [0.0]
    assert R.chart_type_reward([GOOD], chart_type=[None]) == [None]


# ------------------------------------------------------------------------------------------------ table
def table_completion(table):
    return completion(f"<type>bar</type>\n<table>{table}</table>\n{STEPS}")


def test_table_scales():
    # 0.5 parse + 0.25 keys == {columns, rows} + 0.5 x headers matched (sorted, in place) / count
    # + 0.5 per cell matched (rows sorted, in place) / row count: a full 2-column table is 0.75 + 0.5 + 1.0.
    assert R.table_reward([GOOD], table=[GOLD_TABLE]) == [2.25]
    swapped = '{"columns": ["sales", "YEAR"], "rows": [[2020, 8], [2019, 5]]}'  # numbers read as their text
    assert R.table_reward([table_completion(swapped)], table=[TABLE]) == [2.25]
    fenced = '```json\n{"columns": ["Year", "Sales"], "rows": [["2019", "5"], ["2020", "8"]], "title": "t"}\n```'
    assert R.table_reward([table_completion(fenced)], table=[GOLD_TABLE]) == [0.5 + 0.0 + 0.5 + 1.0]
    one_wrong = '{"columns": ["Year", "Sales"], "rows": [["2019", "5"], ["2020", 8.0]]}'  # "8.0" != "8"
    assert R.table_reward([table_completion(one_wrong)], table=[GOLD_TABLE]) == [0.5 + 0.25 + 0.5 + 0.75]
    sales_only = '{"columns": ["Sales"], "rows": [["5"], ["8"]]}'  # sorted: "Sales" vs "Sales"; "5" vs "2019"
    assert R.table_reward([table_completion(sales_only)], table=[GOLD_TABLE]) == [0.5 + 0.25 + 0.25 + 0.0]
    assert R.table_reward([table_completion("[1, 2]")], table=[GOLD_TABLE]) == [0.5]  # JSON, not a table
    assert R.table_reward([GOOD], table=[None]) == [None]


def test_table_bugs_fixed():
    # One right row: the original divided by the predicted row count (1), giving the full 1.0; now / 2.
    one_row = '{"columns": ["Year", "Sales"], "rows": [["2019", "5"]]}'
    assert R.table_reward([table_completion(one_row)], table=[GOLD_TABLE]) == [0.5 + 0.25 + 0.5 + 0.5]
    # An extra column: the original raised IndexError and kept only 0.75; now headers 0/3, cells 4 of 2 rows.
    extra = '{"columns": ["Year", "Sales", "Profit"], "rows": [["2019", "5", "1"], ["2020", "8", "2"]]}'
    assert R.table_reward([table_completion(extra)], table=[GOLD_TABLE]) == [0.5 + 0.25 + 0.0 + 1.0]
    # An unparseable table right after a good one: the original compared the previous completion's table.
    assert R.table_reward([GOOD, table_completion('{"columns": ')], table=[GOLD_TABLE] * 2) == [2.25, 0.0]
    # No <table> tag: the original parsed the whole completion; now 0.0.
    assert R.table_reward([f"<think>\n{TABLE}\n</think>\n<answer>8</answer>"], table=[GOLD_TABLE]) == [0.0]


# ------------------------------------------------------------------------------------------------ reasoning
class FakeModel:
    """Stands in for all-MiniLM-L6-v2 with fixed unit vectors, so cosines are known exactly."""

    def __init__(self, vectors):
        self.vectors = vectors
        self.calls = []

    def encode(self, texts, **kwargs):
        self.calls.append(list(texts))
        return np.array([self.vectors[t] for t in texts])


def test_reasoning_is_the_raw_cosine_of_the_text_after_the_table(monkeypatch):
    # text_sim(completion.split("</table>")[-1].split("</think>")[0].strip(), reasoning): a cosine in [-1, 1]
    fake = FakeModel({STEPS: [1.0, 0.0], "gold A": [-0.6, 0.8], "gold B": [0.8, 0.6]})
    monkeypatch.setattr(similarity, "_SIMILARITY_MODEL", fake)
    got = R.reasoning_reward([GOOD, GOOD], reasoning=["gold A", "gold B"])
    assert got == pytest.approx([-0.6, 0.8])  # negative kept: the original does not clip
    assert fake.calls == [[STEPS, STEPS, "gold A", "gold B"]]
    # The original read the whole completion after a missing </table>; now 0.0, nothing embedded.
    assert R.reasoning_reward([f"<think>\n{STEPS}\n</think>\n<answer>8</answer>", "no tags"],
                              reasoning=["gold A", "gold A"]) == [0.0, 0.0]
    assert len(fake.calls) == 1


# ------------------------------------------------------------------------------------------------ presets, prompts
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_prompt_example_scores_full_marks_under_its_own_format_reward(name):
    preset = get_preset(name)
    assert preset.system_prompt.endswith("Example:\n" + preset.example)
    assert preset.funcs["format"]([preset.example]) == [2.0]
    assert preset.funcs["tags"]([preset.example]) == [2.0 if name == "chart-rvr" else 1.0]


def test_the_chart_rvr_prompt_is_template_4():
    prompt = get_preset("chart-rvr").system_prompt
    lines = prompt.splitlines()
    for block in ("<think>", "<type>", "</type>", "<table>", "</table>", "</think>", "<answer>", "</answer>"):
        assert block in lines  # newline-separated blocks
    assert "<step-1>: Provide a description of reasoning" in lines and "<step-n>: Do the final calculation or " \
        "reasoning to derive the answer" in lines
    assert "Final answer on a single line" in lines
    assert ("one word from line, bar, stacked bar, pie, histogram, scatterplot, area, stacked area, bubble, "
            "treemap.") in prompt
    # The package's one-line example is what the original format reward scored 0.
    assert R.format_reward([get_preset("package").example]) == [0.0]


def test_presets_cover_the_same_reward_names_and_the_run_records_its_preset():
    for preset in PRESETS.values():
        assert tuple(preset.funcs) == REWARD_NAMES
        # the same function names too: TRL logs rewards/<function name>/mean, and runs are compared by it
        assert [f.__name__ for f in preset.funcs.values()] == [f.__name__ for f in rewards.REWARD_FUNCS.values()]
    cfg = RunConfig(dataset_name="chart-rvr")
    assert cfg.reward_preset == "chart-rvr" and cfg.to_dict()["reward_preset"] == "chart-rvr"  # run.json
    assert RunConfig().reward_preset == "package"  # the embedded synthetic charts keep the short prompt
    assert [f.__module__ for f in get_reward_funcs(cfg.rewards, cfg.reward_preset)] == ["chartrl_colab.rewards.chart_rvr"] * 7
    assert get_reward_funcs(["format"], "package") == [rewards.format_reward]
    with pytest.raises(ConfigError, match=r"^reward_preset='rvr' is not valid; choose one of: chart-rvr, package$"):
        RunConfig(reward_preset="rvr")
    with pytest.raises(ConfigError, match="reward='acc' is not valid"):
        get_reward_funcs(["acc"], "chart-rvr")
