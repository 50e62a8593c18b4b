"""The evaluate command on sample files: figures, tables and metrics.json, checked against recomputation."""

import csv
import json
import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import PIL.Image
import pytest

from chartrl_colab import evaluate as ev
from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation.passk import bootstrap_ci, pass_at_k_curve

KS = [1, 2, 4, 8, 16]


def write_samples(path, ids, n, p, seed):
    """A samples file (chartrl_colab.evaluation.samples) whose question q has correct samples with chance p[q]."""
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        for qid, pq in zip(ids, p):
            correct = (rng.random(n) < pq).tolist()
            # the completions agree with the verifier, so both metrics count the same samples correct
            completions = ["<think>x</think><answer>1</answer>" if ok else "<answer>2</answer>" for ok in correct]
            f.write(json.dumps({"id": qid, "question": "?", "answer": "1", "completions": completions,
                                "rewards": {"accuracy": [float(c) for c in correct]}, "correct": correct, "n": n,
                                "num_correct": sum(correct),
                                "generation": {"verifier": "accuracy", "reward_threshold": 0.5}}) + "\n")
    return path


def counts(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["id"]: (len(r["correct"]), sum(r["correct"])) for r in rows}


def exact_mean(pairs, k):
    return float(sum(1 - Fraction(math.comb(n - c, k), math.comb(n, k)) for n, c in pairs) / len(pairs))


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    ids = [f"synthetic/test/0/{i}" for i in range(40)]
    rng = np.random.default_rng(0)
    base = write_samples(root / "base.jsonl", ids, 16, rng.beta(0.4, 1.0, len(ids)), seed=1)
    # The second file lists the same questions in another order.
    order = rng.permutation(len(ids))
    nsr = write_samples(root / "nsr.jsonl", [ids[i] for i in order], 16, rng.beta(0.8, 1.0, len(ids)), seed=2)
    return base, nsr


def test_evaluate_command_writes_figures_tables_and_metrics_that_match_recomputation(two_files, tmp_path, capsys):
    base, nsr = two_files
    out = tmp_path / "eval"
    assert ev.main(["--samples", str(base), str(nsr), "--labels", "Base", "NSR", "--k", *map(str, KS),
                    "--output-dir", str(out), "--n-bootstrap", "300", "--seed", "4"]) == 0
    printed = capsys.readouterr().out

    for name in ("passk_curves.png", "passk_bars.png"):
        with PIL.Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ks"] == KS and metrics["labels"] == ["Base", "NSR"] and metrics["num_questions"] == 40
    ids = list(counts(base))
    for label, path in (("Base", base), ("NSR", nsr)):
        m = metrics["models"][label]
        per_q = counts(path)
        pairs = [per_q[i] for i in ids]
        assert m["n"] == 16 and m["num_questions"] == 40 and m["num_correct"] == sum(c for _, c in pairs)
        # Means: exact rational pass@k averaged over questions.
        for k in KS:
            assert m["pass_at_k"][str(k)]["mean"] == pytest.approx(exact_mean(pairs, k), abs=1e-12)
        assert m["curve"]["k"] == list(range(1, 17))
        for k in (1, 3, 16):
            assert m["curve"]["mean"][k - 1] == pytest.approx(exact_mean(pairs, k), abs=1e-12)
        # Intervals: the bootstrap over questions in the first file's order, with the command's seed.
        values = pass_at_k_curve([n for n, _ in pairs], [c for _, c in pairs], range(1, 17))
        low, high = bootstrap_ci(values, n_bootstrap=300, seed=4)
        assert m["curve"]["ci_low"] == pytest.approx(low.tolist(), abs=1e-12)
        assert m["curve"]["ci_high"] == pytest.approx(high.tolist(), abs=1e-12)
        assert m["pass_at_1"]["mean"] == m["curve"]["mean"][0] and m["pass_at_n"]["mean"] == m["curve"]["mean"][-1]
        for k in KS:
            cell = m["pass_at_k"][str(k)]
            assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]

    with (out / "passk_table.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 * len(KS)
    for row in table:
        cell = metrics["models"][row["label"]]["pass_at_k"][row["k"]]
        assert (float(row["pass_at_k"]), float(row["ci_low"]), float(row["ci_high"])) == (
            cell["mean"], cell["ci_low"], cell["ci_high"])
    md = (out / "passk_table.md").read_text()
    assert "| model | n | questions | pass@1 | pass@2 | pass@4 | pass@8 | pass@16 |" in md
    one = metrics["models"]["NSR"]["pass_at_k"]["4"]
    assert f"{one['mean']:.3f} [{one['ci_low']:.3f}, {one['ci_high']:.3f}]" in md
    assert md in printed

    with (out / "per_question.csv").open() as f:
        per_question = list(csv.DictReader(f))
    assert len(per_question) == 80
    for row in per_question:
        n, c = int(row["n"]), int(row["num_correct"])
        assert (n, c) == counts(base if row["label"] == "Base" else nsr)[row["id"]]
        assert float(row["pass@2"]) == pytest.approx(exact_mean([(n, c)], 2), abs=1e-13)


def test_the_report_object(two_files, tmp_path):
    base, nsr = two_files
    report = ev.evaluate([base, nsr], ks=[1, 4], output_dir=tmp_path / "o", n_bootstrap=50)
    assert [p.name for p in report.figures] == ["passk_curves.png", "passk_bars.png", "passk_differences.png"]
    assert all(p.exists() for p in [*report.figures, report.table_md, report.table_csv, report.metrics_json])
    assert list(report.metrics["models"]) == ["base", "nsr"]  # labels default to the file names
    assert json.loads(report.metrics_json.read_text()) == report.metrics
    assert report.metrics["notes"] == []


def test_evaluate_leaves_the_matplotlib_backend_alone(two_files, tmp_path):
    """The figures are drawn on matplotlib Figures: pyplot would pick, and matplotlib.use("Agg") would switch, the
    backend of the notebook that called evaluate."""
    code = ("import sys\nfrom chartrl_colab.evaluate import evaluate\n"
            f"evaluate({[str(p) for p in two_files]!r}, ks=[1], output_dir={str(tmp_path)!r}, n_bootstrap=20)\n"
            "print('matplotlib.pyplot' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "passk_differences.png").is_file()


def test_question_order_does_not_matter(two_files, tmp_path):
    base, nsr = two_files
    lines = nsr.read_text().splitlines()
    shuffled = tmp_path / "nsr.jsonl"
    shuffled.write_text("\n".join(reversed(lines)) + "\n")
    a = ev.evaluate([base, nsr], ks=KS, output_dir=tmp_path / "a", n_bootstrap=100)
    b = ev.evaluate([base, shuffled], ks=KS, output_dir=tmp_path / "b", n_bootstrap=100)
    assert a.metrics["models"]["nsr"]["pass_at_k"] == b.metrics["models"]["nsr"]["pass_at_k"]
    assert a.metrics["models"]["nsr"]["curve"] == b.metrics["models"]["nsr"]["curve"]


def test_different_n_is_allowed_and_reported(two_files, tmp_path, capsys):
    base, _ = two_files
    small = write_samples(tmp_path / "small.jsonl", list(counts(base)), 8, [0.5] * 40, seed=3)
    report = ev.evaluate([base, small], labels=["Base", "Small"], ks=KS, output_dir=tmp_path / "o", n_bootstrap=50)
    m = report.metrics["models"]
    assert m["Base"]["n"] == 16 and m["Small"]["n"] == 8
    assert set(m["Small"]["pass_at_k"]) == {"1", "2", "4", "8"} and len(m["Small"]["curve"]["k"]) == 8
    assert any("n differs across files (Base n=16, Small n=8)" in note for note in report.metrics["notes"])
    assert "note: n differs across files" in capsys.readouterr().out
    small_row = next(line for line in report.table_md.read_text().splitlines() if line.startswith("| Small"))
    assert small_row.endswith("|  |")  # pass@16 left empty
    with pytest.raises(ConfigError, match=r"k=32 exceeds n=16"):
        ev.evaluate([base, small], ks=[1, 32], output_dir=tmp_path / "p")


def test_mismatched_questions_name_the_first_mismatch(two_files, tmp_path, capsys):
    base, nsr = two_files
    ids = list(counts(base))
    missing = write_samples(tmp_path / "missing.jsonl", ids[:5] + ids[6:], 16, [0.5] * 39, seed=5)
    with pytest.raises(ConfigError, match=rf"{ids[5]!r} \(question 6 of base.jsonl\) is not in missing.jsonl"):
        ev.evaluate([base, missing], output_dir=tmp_path / "o")
    extra = write_samples(tmp_path / "extra.jsonl", ids + ["other/9"], 16, [0.5] * 41, seed=5)
    with pytest.raises(ConfigError, match=r"'other/9' \(question 41 of extra.jsonl\) is not in base.jsonl"):
        ev.evaluate([base, extra], output_dir=tmp_path / "o")
    assert ev.main(["--samples", str(base), str(missing), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_bad_inputs_are_config_errors(two_files, tmp_path):
    base, nsr = two_files
    with pytest.raises(ConfigError, match="2 labels for 1 sample files"):
        ev.evaluate([base], labels=["a", "b"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="label 'x' is used twice"):
        ev.evaluate([base, nsr], labels=["x", "x"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        ev.evaluate([tmp_path / "none.jsonl"], output_dir=tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="holds no rows"):
        ev.evaluate([empty], output_dir=tmp_path)
    twice = tmp_path / "twice.jsonl"
    twice.write_text(base.read_text().splitlines()[0] + "\n" + base.read_text())
    with pytest.raises(ConfigError, match="appears twice"):
        ev.evaluate([twice], output_dir=tmp_path)


def test_an_interrupted_file_is_read_without_its_torn_line(two_files, tmp_path, capsys):
    base, _ = two_files
    torn = tmp_path / "torn.jsonl"
    torn.write_text(base.read_text() + '{"id": "synthetic/test/0/40", "corr')
    loaded = ev.load_samples(torn)
    err = capsys.readouterr().err
    assert loaded.ids == list(counts(base)) and "warning: " in err and "ignoring the unfinished last line 41" in err


@pytest.mark.slow
def test_generate_then_evaluate_end_to_end(tmp_path):
    """Two real sample files of the tiny model (two temperatures), then the evaluate command as a user runs it."""
    import torch

    from chartrl_colab.generate import GenerateConfig, generate_samples

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add hand-off cost
    try:
        files = [generate_samples(GenerateConfig(subset_size=3, num_samples=4, max_new_tokens=8, temperature=t,
                                                 seed=5, rewards=("format", "accuracy"),
                                                 output=str(tmp_path / f"t{t}.jsonl")))
                 for t in (1.0, 0.5)]
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "chartrl_colab.evaluate", "--samples", *map(str, files),
                           "--labels", "T1", "T05", "--k", "1", "2", "4", "--output-dir", str(out),
                           "--metric", "verifier"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for label, path in zip(("T1", "T05"), files):
        pairs = list(counts(path).values())
        assert metrics["models"][label]["pass_at_k"]["4"]["mean"] == pytest.approx(exact_mean(pairs, 4), abs=1e-12)
    assert (out / "passk_curves.png").stat().st_size > 0 and (out / "passk_bars.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------ the reported metric
# pix2struct's relaxed_correctness, worked out by hand from its definition: float() of both strings (a trailing
# % divides by 100); 5% relative tolerance when the prediction parses and the gold is a non-zero number; else
# lower-cased string equality.
REFERENCE_CASES = [
    ("1,234", "1200", False),  # float("1,234") fails: "1,234" != "1200"
    ("45%", "45", False),  # 0.45 vs 45: 99% off
    ("12 kg", "12", False),  # float("12 kg") fails: strings differ
    ("0", "0", True),  # gold 0 is falsy: string comparison, "0" == "0"
    ("-100", "-3", False),  # |-100 + 3| / 3 = 32.3
    ("1e3", "1000", True),  # float("1e3") = 1000: 0% off
    ("0.0", "0", False),  # gold 0: string comparison, "0.0" != "0"
    ("104", "100", True),  # 4% off
    ("Yes", "yes", True),  # lower-cased
]


@pytest.mark.parametrize("prediction, gold, expected", REFERENCE_CASES)
def test_relaxed_correctness_is_the_reference(prediction, gold, expected):
    from chartrl_colab.evaluation.metrics import relaxed_accuracy, relaxed_correctness
    from chartrl_colab.rewards.package import relaxed_match

    assert relaxed_correctness(gold, prediction) is expected
    assert relaxed_accuracy(prediction, ["no", gold]) is expected  # the best over a list of golds
    if prediction in ("1,234", "45%", "12 kg"):
        assert relaxed_match(prediction, gold)  # the training reward stays lenient


def _rows_file(path, rows):
    with path.open("w") as f:
        for i, (answer, completions, extra) in enumerate(rows):
            correct = [True] * len(completions)  # a lenient verifier that liked everything
            f.write(json.dumps({"id": f"q{i}", "answer": answer, "completions": completions, "correct": correct,
                                "n": len(correct), "generation": {"verifier": "accuracy", "reward_threshold": 0.5},
                                **extra}) + "\n")
    return path


def test_evaluate_reports_the_reference_metric_by_default_and_names_it(tmp_path):
    path = _rows_file(tmp_path / "s.jsonl", [
        ("1200", ["<answer>1,234</answer>", "<answer>1210</answer>"], {}),
        ("45", ["<answer>45%</answer>", "no answer tag"], {}),
    ])
    ref = ev.evaluate([path], ks=[1, 2], output_dir=tmp_path / "ref", n_bootstrap=10)
    m = ref.metrics["models"]["s"]
    assert ref.metrics["metric"] == "relaxed_correctness (pix2struct)" and m["num_correct"] == 1
    assert m["pass_at_k"]["1"]["mean"] == pytest.approx((0.5 + 0.0) / 2)
    md = ref.table_md.read_text()
    assert md.startswith("pass@k (relaxed_correctness (pix2struct))")
    assert all(r["metric"] == "relaxed_correctness (pix2struct)" for r in csv.DictReader(ref.table_csv.open()))
    lenient = ev.evaluate([path], ks=[1, 2], output_dir=tmp_path / "ver", n_bootstrap=10, metric="verifier")
    assert lenient.metrics["metric"] == "verifier accuracy >= 0.5"
    assert lenient.metrics["models"]["s"]["num_correct"] == 4
    with pytest.raises(ConfigError, match="metric='exact' is not valid; choose one of: relaxed_correctness, verifier"):
        ev.evaluate([path], output_dir=tmp_path, metric="exact")


def test_evaluate_reports_chartqa_human_augmented_overall_and_evochart_is_clear(tmp_path):
    path = _rows_file(tmp_path / "chartqa.jsonl", [
        ("7", ["<answer>7</answer>"] * 2, {"human_or_machine": "human"}),
        ("8", ["<answer>8</answer>", "<answer>9</answer>"], {"human_or_machine": "human"}),
        ("Red", ["<answer>blue</answer>"] * 2, {"human_or_machine": "augmented"}),
        ("10", ["<answer>10.2</answer>"] * 2, {"is_clear": True}),  # EvoChart: exact match wanted
        ("10", ["<answer>10.2</answer>"] * 2, {"is_clear": False}),  # 2% off: within 5%
    ])
    report = ev.evaluate([path], ks=[1], output_dir=tmp_path / "eval", n_bootstrap=10)
    origins = report.metrics["models"]["chartqa"]["by_origin"]
    assert origins["human"] == {"num_questions": 2, "accuracy": pytest.approx(0.75)}
    assert origins["augmented"] == {"num_questions": 1, "accuracy": 0.0}
    assert origins["overall"] == {"num_questions": 5, "accuracy": pytest.approx((1 + 0.5 + 0 + 0 + 1) / 5)}
    md = report.table_md.read_text()
    assert "| model | human | augmented | overall |" in md and "| chartqa | 0.7500 (2) | 0.0000 (1) | 0.5000 (5) |" in md
