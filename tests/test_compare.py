"""Paired differences and means over seeds (chartrl_colab.evaluation.compare), with values worked out by hand, and
their use by evaluate (the differences table and plot) and by the per-mode comparison of a batch."""

import json
from pathlib import Path

import numpy as np
import pytest

from chartrl_colab import evaluate as ev
from chartrl_colab.colab import seeds
from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation import compare
from chartrl_colab.evaluation.passk import bootstrap_ci

B = 4000  # resamples: the percentiles below sit on atoms of the bootstrap distribution, far from their edges


def test_paired_difference_of_a_model_better_on_three_questions_of_four():
    # differences 0.1, 0.1, 0, 0.1: a resample's mean is 0.025 x (how many of its 4 picks are non-zero), a
    # Binomial(4, 3/4): P(0) = 0.4% < 2.5% < P(<=1) = 5.1%, so the 2.5% point is 0.025; P(4) = 32% > 2.5%: 0.1
    d = compare.difference([0.0, 0.5, 1.0, 0.2], [0.1, 0.6, 1.0, 0.3], n_bootstrap=B)
    assert d["diff"][0] == pytest.approx(0.075)
    assert (d["ci_low"][0], d["ci_high"][0]) == pytest.approx((0.025, 0.1))
    assert d["significant"][0]


def test_pairing_sees_a_shift_that_the_two_unpaired_intervals_hide():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.8, 30)
    other = base + 0.1  # every question 0.1 better
    d = compare.difference(base, other, n_bootstrap=B)
    assert (d["diff"][0], d["ci_low"][0], d["ci_high"][0]) == pytest.approx((0.1, 0.1, 0.1))
    assert d["significant"][0]
    lo_other, _ = bootstrap_ci(other, n_bootstrap=B)
    _, hi_base = bootstrap_ci(base, n_bootstrap=B)
    assert lo_other < hi_base  # side by side, the intervals overlap


def test_a_difference_that_goes_both_ways_is_not_significant():
    d = compare.difference([0.0, 1.0] * 20, [1.0, 0.0] * 20, n_bootstrap=B)
    assert d["diff"][0] == 0.0
    assert d["ci_low"][0] < 0 < d["ci_high"][0] and not d["significant"][0]


def test_a_model_worse_on_every_question_is_significantly_worse_at_each_k():
    base = np.array([[0.5, 0.9], [0.25, 0.6], [0.75, 1.0]])  # questions x k
    d = compare.difference(base, base - [[0.25, 0.5]], n_bootstrap=B)
    assert d["diff"] == pytest.approx([-0.25, -0.5])
    assert d["ci_high"] == pytest.approx([-0.25, -0.5]) and d["significant"].all()


def test_mean_over_seeds_resamples_the_seeds():
    # Two seeds, each the same on both questions: only the seed resample moves the mean, 0.2/0.4/0.6 with
    # chances 1/4, 1/2, 1/4, so the 95% interval is [0.2, 0.6].
    s = compare.seed_mean([[[0.2], [0.2]], [[0.6], [0.6]]], n_bootstrap=B)  # seeds x questions x k
    assert s["seeds"] == 2 and s["mean"][0] == pytest.approx(0.4)
    assert (s["ci_low"][0], s["ci_high"][0]) == pytest.approx((0.2, 0.6))
    assert s["per_seed"][:, 0] == pytest.approx([0.2, 0.6])


def test_mean_over_one_seed_is_the_bootstrap_over_questions():
    values = np.random.default_rng(3).uniform(size=(25, 3))
    s = compare.seed_mean(values, n_bootstrap=500, seed=7)
    low, high = bootstrap_ci(values, n_bootstrap=500, seed=7)  # the same resamples of the questions
    assert s["mean"] == pytest.approx(values.mean(axis=0))
    assert s["ci_low"] == pytest.approx(low) and s["ci_high"] == pytest.approx(high)


def test_seeds_of_a_mode_against_one_base_run():
    base = np.array([[0.1], [0.3], [0.5], [0.7]])  # questions x k
    d = compare.difference(base, np.stack([base + 0.1, base + 0.3]), n_bootstrap=B)  # two seeds: +0.1 and +0.3
    assert d["diff"][0] == pytest.approx(0.2)
    assert (d["ci_low"][0], d["ci_high"][0]) == pytest.approx((0.1, 0.3))  # the seed resample: 1/4, 1/2, 1/4


def test_pairs_put_the_base_first_and_bad_shapes_are_config_errors():
    rows = compare.differences({"Base": [[0.0]], "PSR": [[1.0]], "NSR": [[0.5]]}, [1], n_bootstrap=10)
    assert [(d["reference"], d["other"]) for d in rows] == [("Base", "PSR"), ("Base", "NSR"), ("PSR", "NSR")]
    assert rows[0]["k"]["1"] == {"diff": 1.0, "ci_low": 1.0, "ci_high": 1.0, "significant": True}
    assert compare.difference_cell(rows[2]["k"]["1"]) == "-0.500 [-0.500, -0.500] *"
    with pytest.raises(ConfigError, match="same questions"):
        compare.difference([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="confidence"):
        compare.seed_mean([0.1], confidence=1.5)


def write_samples(path, ids, correct_counts, n=4):
    with path.open("w") as f:
        for qid, c in zip(ids, correct_counts):
            correct = [True] * c + [False] * (n - c)
            f.write(json.dumps({"id": qid, "question": "?", "answer": "1", "n": n, "num_correct": c, "correct": correct,
                                "completions": ["<answer>1</answer>" if ok else "<answer>2</answer>" for ok in correct],
                                "generation": {"verifier": "accuracy", "reward_threshold": 0.5}}) + "\n")
    return path


def test_evaluate_reports_paired_differences_in_the_table_the_json_and_a_plot(tmp_path, capsys):
    ids = [f"q{i}" for i in range(6)]
    base = write_samples(tmp_path / "base.jsonl", ids, [0, 1, 2, 0, 1, 4])
    better = write_samples(tmp_path / "psr.jsonl", ids, [1, 2, 3, 1, 2, 4])  # +1 correct of 4 on 5 questions
    report = ev.evaluate([base, better], labels=["Base", "PSR"], output_dir=tmp_path / "eval", n_bootstrap=B)
    (d,) = report.metrics["differences"]
    assert (d["reference"], d["other"]) == ("Base", "PSR")
    assert d["k"]["1"]["diff"] == pytest.approx(5 / 24)  # mean of (0.25 x 5 + 0) / 6
    assert d["k"]["1"]["significant"] and not (d["k"]["4"]["ci_low"] > 0)  # pass@4 rose on 2 questions of 6 only
    table = report.table_md.read_text()
    assert "| PSR - Base | +0.208 [" in table and "paired bootstrap" in table
    assert (tmp_path / "eval" / "passk_differences.png").is_file()
    assert json.loads(report.metrics_json.read_text())["differences"][0]["k"]["1"]["significant"] is True


def test_modes_of_a_batch_compare_as_one_line_each(tmp_path):
    ids = [f"q{i}" for i in range(5)]
    runs, samples = [], {"Base": write_samples(tmp_path / "Base.jsonl", ids, [0, 1, 2, 1, 0])}
    for mode, seed, counts in (("psr", 1, [1, 2, 3, 2, 1]), ("psr", 2, [1, 2, 3, 2, 1]), ("nsr", 1, [0, 1, 2, 1, 0])):
        run = tmp_path / f"{mode}-{seed}"
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"config": {"mode": mode, "seed": seed}}))
        runs.append(run)
        samples[run.name] = write_samples(tmp_path / f"{run.name}.jsonl", ids, counts)
    out = seeds.compare_modes(samples, runs, tmp_path / "eval", n_bootstrap=500)
    assert list(out["modes"]) == ["Base", "PSR", "NSR"]
    assert out["modes"]["PSR"]["seeds"] == [1, 2] and out["modes"]["PSR"]["mean"][0] == pytest.approx(9 / 20)
    diff = {d["other"]: d["k"]["1"] for d in out["differences"]}
    assert diff["PSR"]["diff"] == pytest.approx(0.25) and diff["PSR"]["significant"]  # +1 of 4 on every question
    assert diff["NSR"] == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "significant": False}
    assert "| PSR | 2 | 0.450 [" in out["table_markdown"]
    assert all(Path(p).is_file() for p in out["figures"])


