"""Monitoring: plots, summary and comparison, on real short runs of the trainer and on hand-made run dirs."""

import contextlib
import io
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation.monitor_plots import decimate, plot_metric, smooth, write_figures
from chartrl_colab.monitor import (
    CONVERGENCE_THRESHOLD,
    MIN_WINDOW,
    format_summary,
    load_history,
    main,
    monitor,
    summarize,
    training_seconds,
)

PNGS = {"loss.png", "learning_rate.png", "grad_norm.png", "rewards.png", "positive_fraction.png", "entropy.png"}
FIGURE_KEYS = {"loss.png": "loss", "learning_rate.png": "learning_rate", "grad_norm.png": "grad_norm",
               "rewards.png": "reward", "positive_fraction.png": "mode/positive_fraction", "entropy.png": "entropy"}
C0, C1 = (31, 119, 180), (255, 127, 14)  # matplotlib's first two cycle colours: run 1 and run 2


# ------------------------------------------------------------------------------------------- helpers
def make_history(steps, seed=0, loss_end=1.0):
    """A log history shaped like TRL's: decaying noisy loss, rising reward, mode counts."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(1, steps + 1):
        pos = int(rng.integers(0, 9))
        out.append({"loss": loss_end + math.exp(-s / 5) + 0.01 * rng.standard_normal(), "grad_norm": 0.1 + rng.random(),
                    "learning_rate": 1e-6 * (1 - s / steps), "reward": s / steps + 0.1 * rng.random(),
                    "rewards/format_reward/mean": 0.5, "rewards/accuracy_reward/mean": s / steps,
                    "mode/num_positive": float(pos), "mode/num_negative": float(8 - pos),
                    "mode/positive_fraction": pos / 8, "entropy": 6.9 - s / 100, "step_time": 1.5 + rng.random(),
                    "epoch": s / steps, "step": s})
    return out


def fake_run(root, name, history, step=None):
    """A run directory holding one complete checkpoint with this log history."""
    step = step if step is not None else (history[-1]["step"] if history else 0)
    ckpt = root / name / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    state = {"global_step": step, "train_batch_size": 8, "log_history": history}
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(ckpt / "adapter_model.safetensors"))
    return root / name


def state_of(checkpoint):
    return json.loads((checkpoint / "trainer_state.json").read_text())


def colour_pixels(png, rgb, tol=12):
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).max(axis=2) <= tol).sum())


def assert_real_image(png):
    with Image.open(png) as im:
        im.verify()  # a whole, readable PNG
    pixels = np.asarray(Image.open(png).convert("L"))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300, pixels.shape
    assert (pixels < 128).mean() > 0.005, f"{png.name} is (nearly) blank"  # text, axes and lines drawn
    assert colour_pixels(png, C0) > 20, f"{png.name} has no line of the first run"


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = fn(*args, **kwargs)
    return result, out.getvalue()


def expected_summary(history, window=None):
    """The summary numbers, recomputed here straight from a log history."""
    logged = [e for e in history if "loss" in e]
    losses = [e["loss"] for e in logged]
    rewards = [e["reward"] for e in history if "reward" in e]
    w = min(len(losses), window or max(MIN_WINDOW, len(losses) // 10))
    tail = np.array(losses[-w:])
    seconds, prev = 0.0, 0
    for e in history:
        if "step_time" in e:
            seconds += e["step_time"] * (e["step"] - prev)
            prev = e["step"]
    out = {"total_steps": max(e["step"] for e in history), "logged_steps": len(losses),
           "first_loss": losses[0], "final_loss": losses[-1],
           "final_learning_rate": [e["learning_rate"] for e in history if "learning_rate" in e][-1],
           "first_reward": rewards[0], "final_reward": rewards[-1], "reward_change": rewards[-1] - rewards[0],
           "training_seconds": seconds, "training_hours": seconds / 3600}
    # Only a loss that stays positive has a relative reduction (psr with nothing correct logs 0; grpo's crosses 0).
    out["loss_reduction_pct"] = (100 * (losses[0] - losses[-1]) / losses[0] if losses[0] > 0 and losses[-1] >= 0
                                 else None)
    cv = tail.std() / abs(tail.mean()) if tail.mean() != 0 else None
    out["convergence"] = {"window": w, "loss_cv": cv, "converged": cv is not None and bool(cv < CONVERGENCE_THRESHOLD)}
    for key in ("num_positive", "num_negative", "positive_fraction"):
        out[f"mean_{key}"] = float(np.mean([e[f"mode/{key}"] for e in history if f"mode/{key}" in e]))
    return out


def assert_summary_matches(summary, expected):
    for key, value in expected.items():
        if key == "convergence":
            assert summary["convergence"]["window"] == value["window"]
            assert summary["convergence"]["loss_cv"] == (None if value["loss_cv"] is None else
                                                         pytest.approx(value["loss_cv"], rel=1e-9, abs=1e-12))
            assert summary["convergence"]["converged"] == value["converged"]
        else:
            assert summary[key] == (None if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)), key


# -------------------------------------------------------------------------------- real trainer runs
@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, finished_run):
    """Two short runs of the trainer on the embedded default: nsr and psr, 2 steps each (nsr, the session's
    finished run, checkpoints every step, psr at the end). Small settings: on 2 shared CPU cores each run takes
    ~10-20 s."""
    from chartrl_colab.config import RunConfig
    from chartrl_colab.train import train

    root = tmp_path_factory.mktemp("runs")
    cfg = RunConfig(mode="psr", vlm_name="tiny", dataset_name="synthetic", subset_size=8, num_generations=2,
                    batch_size=2, max_steps=2, max_completion_length=8, logging_steps=1, save_steps=2,
                    output_root=str(root), seed=0, gradient_checkpointing=False)
    quiet(train, cfg)
    return {"nsr": finished_run, "psr": root / cfg.run_name}


@pytest.mark.slow
def test_real_run_plots_and_summary_match_trainer_state(real_runs, tmp_path, capsys):
    run = real_runs["nsr"]
    report = monitor(run, output_dir=tmp_path / "plots")
    printed = capsys.readouterr().out

    assert {p.name for p in report.figures} == PNGS
    for png in report.figures:
        assert png.parent == tmp_path / "plots"
        assert_real_image(png)
    assert report.errors == []

    state = state_of(run / "checkpoint-2")  # the newest complete checkpoint
    label = run.name
    summary = report.summaries[label]
    assert summary["mode"] == "nsr" and summary["source"].endswith("checkpoint-2/trainer_state.json")
    assert summary["total_steps"] == state["global_step"] == 2
    assert_summary_matches(summary, expected_summary(state["log_history"]))
    assert set(summary["rewards"]) == {k[len("rewards/"):-len("/mean")] for k in state["log_history"][0]
                                       if k.startswith("rewards/") and k.endswith("/mean")}

    saved = json.loads(report.summary_json.read_text())
    assert saved["errors"] == [] and set(saved["runs"]) == {label}
    assert_summary_matches(saved["runs"][label], expected_summary(state["log_history"]))

    text = report.summary_txt.read_text()
    assert text in printed  # the same summary is printed
    last = state["log_history"][-1]
    for line in ("TRAINING SUMMARY", f"{label}:", f"  Total steps: {state['global_step']}",
                 f"  Final loss: {last['loss']:.3f}", f"  Final LR: {last['learning_rate']:.2e}",
                 f"  Mean per step: {summary['mean_num_positive']:.2f} positive / "
                 f"{summary['mean_num_negative']:.2f} negative samples"):
        assert line in text.splitlines(), line
    assert f"  Training time: {summary['training_hours']:.2f} hours (" in text  # plus seconds for short runs
    # nsr's on-policy loss is 1 at every step: its verdict reads the verifier accuracy and entropy (from run.json).
    assert summary["verdict"]["signal"] == "verifier accuracy (rewards/accuracy_reward/mean) and entropy"
    assert "  Judged by: verifier accuracy (rewards/accuracy_reward/mean) and entropy, not the loss (" in text
    assert "Loss reduction" not in text and f"  {summary['verdict']['text']}" in text.splitlines()
    assert summary["verdict"]["text"].startswith("⚠ Nothing to judge: verifier accuracy 0 at every logged step")


@pytest.mark.slow
def test_run_dir_reads_newest_complete_checkpoint(real_runs, tmp_path, capsys):
    run = real_runs["nsr"]
    assert load_history(run) == state_of(run / "checkpoint-2")["log_history"]
    assert load_history(run / "checkpoint-1") == state_of(run / "checkpoint-1")["log_history"]
    assert len(state_of(run / "checkpoint-1")["log_history"]) == 1

    broken = shutil.copytree(run, tmp_path / run.name)
    weights = broken / "checkpoint-2" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # cut short, as by a dead kernel
    capsys.readouterr()
    assert load_history(broken) == state_of(run / "checkpoint-1")["log_history"]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and "checkpoint-2" in warnings[0]


@pytest.mark.slow
def test_run_with_events_only(real_runs, tmp_path):
    """Before the first checkpoint only TensorBoard events exist: the history comes from them."""
    run = real_runs["nsr"]
    fresh = tmp_path / run.name
    shutil.copytree(run / "logs", fresh / "logs")
    history = load_history(fresh)

    logged = state_of(run / "checkpoint-2")["log_history"]
    by_step = {e["step"]: e for e in history}
    assert sorted(by_step) == [e["step"] for e in logged]
    for entry in logged:  # every number of trainer_state.json, as TensorBoard stored it (float32)
        for key, value in entry.items():
            if key != "step" and isinstance(value, float):
                assert by_step[entry["step"]][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert by_step[2]["train_runtime"] > 0  # logged at the end of training, in the events only

    report, _ = quiet(monitor, fresh, output_dir=tmp_path / "plots")
    assert {p.name for p in report.figures} == PNGS
    summary = report.summaries[run.name]
    assert summary["source"] == str(fresh / "logs")
    expected = expected_summary(logged)
    for key in ("total_steps", "final_loss", "final_learning_rate", "reward_change", "training_seconds"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_compare_two_modes(real_runs, tmp_path, capsys):
    paths = [real_runs["nsr"], real_runs["psr"]]
    report = monitor(paths, labels=["NSR", "PSR"], output_dir=tmp_path / "cmp", compare=True)
    text = capsys.readouterr().out

    assert {p.name for p in report.figures} == PNGS
    psr_keys = {k for e in load_history(paths[1]) for k, v in e.items() if isinstance(v, float)}
    for png in report.figures:
        assert_real_image(png)
        # PSR with no correct sample has an empty loss mask: TRL logs its masked metrics (entropy) as null.
        if FIGURE_KEYS[png.name] in psr_keys:
            assert colour_pixels(png, C1) > 20, f"{png.name} has no line of the second run"
    assert list(report.summaries) == ["NSR", "PSR"]
    assert [s["mode"] for s in report.summaries.values()] == ["nsr", "psr"]
    for label, path, ckpt in (("NSR", paths[0], "checkpoint-2"), ("PSR", paths[1], "checkpoint-2")):
        assert_summary_matches(report.summaries[label], expected_summary(state_of(path / ckpt)["log_history"]))
    assert text.index("NSR:") < text.index("PSR:")

    # Each figure holds every run, labelled, with its logged values.
    histories = {"NSR": load_history(paths[0]), "PSR": load_history(paths[1])}
    fig = plot_metric(histories, "loss")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["NSR", "PSR"]
    raw = [line for line in ax.get_lines() if line.get_alpha() == 0.25]
    for line, label in zip(raw, ["NSR", "PSR"]):
        logged = [e for e in histories[label] if "loss" in e]
        assert list(line.get_xdata()) == [e["step"] for e in logged]
        assert list(line.get_ydata()) == [e["loss"] for e in logged]


# ------------------------------------------------------------------------- compare with missing metrics
def test_missing_metrics_in_one_run_leave_the_others_drawn(tmp_path):
    full = make_history(30)
    plain = [{k: v for k, v in e.items() if not k.startswith("mode/") and k not in ("entropy",
             "rewards/accuracy_reward/mean")} for e in make_history(20, seed=1)]

    fig = plot_metric({"A": full, "B": plain}, "entropy")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["A"]
    rewards = plot_metric({"A": full, "B": plain}, "rewards")
    panels = {ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()] for ax in rewards.axes
              if ax.get_visible()}
    assert panels == {"total reward": ["A", "B"], "accuracy_reward": ["A"], "format_reward": ["A", "B"]}
    assert plot_metric({"B": plain}, "entropy") is None  # nobody logged it: no figure

    paths = [fake_run(tmp_path, "grpo-a", full), fake_run(tmp_path, "grpo-b", plain)]
    report, _ = quiet(monitor, paths, labels=["A", "B"], output_dir=tmp_path / "cmp")
    assert {p.name for p in report.figures} == PNGS and report.errors == []
    assert "mean_num_positive" in report.summaries["A"] and "mean_num_positive" not in report.summaries["B"]

    report, out = quiet(monitor, paths[1], output_dir=tmp_path / "b-only")
    assert {p.name for p in report.figures} == PNGS - {"entropy.png", "positive_fraction.png"}
    assert "no run logged entropy" in out


def test_compare_false_writes_each_run_apart(tmp_path):
    paths = [fake_run(tmp_path, "nsr-x", make_history(12)), fake_run(tmp_path, "psr-x", make_history(12, seed=2))]
    report, _ = quiet(monitor, paths, labels=["run one", "run/two"], output_dir=tmp_path / "out", compare=False)
    assert {p.relative_to(tmp_path / "out").as_posix() for p in report.figures} == (
        {f"run_one/{n}" for n in PNGS} | {f"run_two/{n}" for n in PNGS})
    assert report.summary_txt == tmp_path / "out" / "summary.txt"
    assert [s["mode"] for s in report.summaries.values()] == ["nsr", "psr"]


# --------------------------------------------------------------------------------------- bad input
def test_path_with_no_run(tmp_path):
    with pytest.raises(ConfigError, match="is not a directory"):
        load_history(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no run: no checkpoint-N folder and no TensorBoard events"):
        load_history(tmp_path / "empty")


def test_run_with_empty_log(tmp_path):
    run = fake_run(tmp_path, "nsr-empty", [], step=1)
    with pytest.raises(ConfigError, match="has an empty log"):
        load_history(run)
    with pytest.raises(ConfigError, match="has an empty log"):
        load_history(run / "checkpoint-1")


def test_labels_must_match_runs(tmp_path):
    paths = [fake_run(tmp_path, "a", make_history(5)), fake_run(tmp_path, "b", make_history(5))]
    with pytest.raises(ConfigError, match=r"labels has 3 name\(s\) \(X, Y, Z\) for 2 run\(s\)"):
        monitor(paths, labels=["X", "Y", "Z"], output_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="repeat a name"):
        monitor(paths, labels=["X", "X"], output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_bad_run_is_reported_and_the_others_processed(tmp_path):
    good = fake_run(tmp_path, "nsr-good", make_history(15))
    empty = fake_run(tmp_path, "nsr-empty", [], step=1)
    report, out = quiet(monitor, [good, tmp_path / "missing", empty], labels=["good", "missing", "empty"],
                        output_dir=tmp_path / "out")
    assert list(report.summaries) == ["good"]
    assert len(report.errors) == 2
    assert report.errors[0].startswith("missing: ") and "is not a directory" in report.errors[0]
    assert report.errors[1].startswith("empty: ") and "empty log" in report.errors[1]
    assert {p.name for p in report.figures} == PNGS
    assert json.loads(report.summary_json.read_text())["errors"] == report.errors
    assert report.summary_txt.read_text().endswith("Not included:\n" + "".join(f"  {e}\n" for e in report.errors))

    with pytest.raises(ConfigError, match="no run could be read"):
        monitor([tmp_path / "missing", empty], output_dir=tmp_path / "none")


def test_cli(tmp_path, capsys):
    good = fake_run(tmp_path, "grpo-good", make_history(15))
    other = fake_run(tmp_path, "psr-other", make_history(15, seed=4))

    assert main(["--checkpoint-dir", str(good), "--output-dir", str(tmp_path / "one")]) == 0
    assert {p.name for p in (tmp_path / "one").glob("*.png")} == PNGS
    assert "TRAINING SUMMARY" in capsys.readouterr().out

    assert main(["--compare", "--checkpoints", str(good), str(other), "--labels", "GRPO", "PSR",
                 "--output-dir", str(tmp_path / "cmp")]) == 0
    assert set(json.loads((tmp_path / "cmp" / "summary.json").read_text())["runs"]) == {"GRPO", "PSR"}
    capsys.readouterr()

    for argv, message in (
        (["--checkpoint-dir", str(tmp_path / "nowhere")], "is not a directory"),
        (["--compare", "--checkpoints", str(good), str(other), "--labels", "GRPO"], "labels has 1 name(s)"),
        ([], "no run given"),
        (["--checkpoint-dir", str(good), "--checkpoints", str(other)], "not both"),
        (["--checkpoint-dir", str(good), "--window", "1"], "window=1 is not valid"),
    ):
        assert main(argv + ["--output-dir", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err
        assert err.count("\n") == 1  # one line

    # One bad run among good ones: outputs written, the error printed, a non-zero exit for scripts.
    assert main(["--compare", "--checkpoints", str(good), str(tmp_path / "nowhere"), "--output-dir",
                 str(tmp_path / "part")]) == 2
    assert "error: nowhere: " in capsys.readouterr().err
    assert (tmp_path / "part" / "loss.png").exists()


# ------------------------------------------------------------------------------------------ numbers
def test_summary_of_a_synthetic_history():
    history = make_history(200)
    history.append({"train_runtime": 123.0, "train_loss": 1.2, "epoch": 1.0, "step": 200})  # the final entry
    assert_summary_matches(summarize(history), expected_summary(history))
    assert summarize(history)["convergence"]["window"] == 20  # the last 10%
    assert_summary_matches(summarize(history, window=50), expected_summary(history, window=50))
    with pytest.raises(ConfigError, match="window=1 is not valid"):
        summarize(history, window=1)


def test_convergence_verdict():
    rng = np.random.default_rng(0)
    flat = [{"loss": 2.0 + 0.001 * rng.standard_normal(), "step": s} for s in range(1, 101)]
    falling = [{"loss": 10.0 / s, "step": s} for s in range(1, 101)]
    assert summarize(flat)["convergence"]["converged"] is True
    assert summarize(falling)["convergence"]["converged"] is False
    diverged = flat[:-1] + [{"loss": float("nan"), "step": 100}]
    s = summarize(diverged)
    assert math.isnan(s["final_loss"]) and s["convergence"]["converged"] is False  # not silently the last finite
    assert "  ⚠ Not converged yet (loss std/mean = nan over the last 10 logged steps" in format_summary({"x": s})
    zero = summarize([{"loss": 0.0, "step": 1}, {"loss": 0.0, "step": 2}])  # psr with nothing correct
    assert zero["loss_reduction_pct"] is None and zero["convergence"]["loss_cv"] is None
    text = format_summary({"psr": zero})
    assert "  Loss reduction: n/a (0.000 → 0.000, change +0.000)" in text
    crossing = summarize([{"loss": 0.005, "step": 1}, {"loss": -0.002, "step": 2}])  # grpo's on-policy loss
    assert crossing["loss_reduction_pct"] is None
    assert "n/a (0.005 → -0.002, change -0.007)" in format_summary({"grpo": crossing})
    assert "  ? Convergence unknown (the mean loss over the last 2 logged steps is 0)" in text


def on_policy_history(mode, accuracy, entropy, steps=40):
    """What TRL logs for psr/nsr on-policy: a loss fixed by the kept class, the verifier's mean, the entropy."""
    loss = {"psr": -1.0, "nsr": 1.0, "grpo": 0.0}[mode]
    return [{"loss": loss, "reward": accuracy(s), "rewards/accuracy_reward/mean": accuracy(s), "entropy": entropy(s),
             "mode/positive_fraction": accuracy(s), "learning_rate": 1e-5, "step": s} for s in range(1, steps + 1)]


@pytest.mark.parametrize("mode", ["psr", "nsr", "w-reinforce"])
def test_verifier_modes_are_judged_by_accuracy_and_entropy_not_their_fixed_loss(mode):
    rng = np.random.default_rng(3)
    noise = {s: 0.05 * rng.standard_normal() for s in range(1, 41)}
    rising = on_policy_history("psr" if mode == "psr" else "nsr", lambda s: min(1.0, 0.02 * s), lambda s: 2.0 - 0.02 * s)
    settled = on_policy_history("psr" if mode == "psr" else "nsr", lambda s: 0.5 + noise[s], lambda s: 1.5)
    moving, flat = summarize(rising, mode=mode), summarize(settled, mode=mode)
    for s in (moving, flat):
        assert s["verdict"]["signal"] == "verifier accuracy (rewards/accuracy_reward/mean) and entropy"
    # The loss never moves, so the seed's loss verdict would call both converged; the accuracy verdict does not.
    assert moving["convergence"]["converged"] is True
    assert moving["verdict"]["converged"] is False
    assert moving["verdict"]["text"] == ("⚠ Not converged yet (over the last 10 logged steps, second half against "
                                          "first: verifier accuracy +0.100, entropy -0.100 nats)")
    assert flat["verdict"]["converged"] is True
    assert flat["verdict"]["text"] == ("✓ Converged (verifier accuracy and entropy flat within their noise over the "
                                       "last 10 logged steps)")
    assert moving["accuracy"] == {"key": "rewards/accuracy_reward/mean", "first": pytest.approx(0.11),
                                  "last": pytest.approx(0.71), "change": pytest.approx(0.6), "window": 10}
    text = format_summary({mode.upper(): moving})
    assert "Loss reduction" not in text
    assert f"  Judged by: verifier accuracy (rewards/accuracy_reward/mean) and entropy, not the loss (on-policy, {mode}'s loss" in text
    assert "  Verifier accuracy: 0.110 → 0.710 (+0.600; mean of the first / last 10 logged steps)" in text
    assert "  Entropy: 1.890 → 1.290 nats (-0.600; mean of the first / last 10 logged steps)" in text


def test_verifier_verdict_when_nothing_is_correct_or_not_logged():
    none_right = summarize(on_policy_history("nsr", lambda s: 0.0, lambda s: 6.9), mode="nsr")
    assert none_right["verdict"]["converged"] is None
    assert none_right["verdict"]["text"] == ("⚠ Nothing to judge: verifier accuracy 0 at every logged step (no correct "
                                             "completion); entropy 6.900 → 6.900 nats")
    unlogged = summarize([{"loss": 1.0, "step": s} for s in range(1, 20)], mode="nsr")
    assert unlogged["verdict"]["text"].startswith("? Convergence unknown (the log holds no verifier accuracy")
    short = summarize(on_policy_history("psr", lambda s: 0.5, lambda s: 1.0, steps=3), mode="psr")
    assert short["verdict"]["text"].startswith("? Convergence unknown (fewer than 4 logged steps")
    # Another verifier: its own reward function's mean is read.
    other = [{**e, "rewards/format_reward/mean": e.pop("rewards/accuracy_reward/mean")}
             for e in on_policy_history("psr", lambda s: 0.5, lambda s: 1.0)]
    assert summarize(other, mode="psr", verifier="format")["accuracy"]["key"] == "rewards/format_reward/mean"


def test_grpo_and_unknown_modes_keep_the_loss_verdict():
    rng = np.random.default_rng(0)
    flat = [{"loss": 2.0 + 0.001 * rng.standard_normal(), "rewards/accuracy_reward/mean": 0.5, "entropy": 1.0,
             "step": s} for s in range(1, 101)]
    for mode in ("grpo", None):
        s = summarize(flat, mode=mode)
        assert s["verdict"]["signal"] == "loss" and s["verdict"]["converged"] is True
        text = format_summary({"GRPO": s})
        assert "  Loss reduction: " in text and "Judged by" not in text
        assert f"  ✓ Converged (loss std/mean = {s['convergence']['loss_cv']:.4f} over the last 10 logged steps)" in text
        assert "  Verifier accuracy: 0.500 → 0.500 (+0.000; mean of the first / last 10 logged steps)" in text


def test_training_time_sources():
    # step_time is the mean over the steps since the previous log: weighted by them.
    assert training_seconds([{"step_time": 2.0, "step": 1}, {"step_time": 4.0, "step": 10}]) == (2.0 + 9 * 4.0,
                                                                                                  "step_time")
    assert training_seconds([{"loss": 1.0, "step": 1}, {"train_runtime": 30.0, "step": 1}]) == (30.0, "train_runtime")
    assert training_seconds([{"loss": 1.0, "step": 1}]) == (None, None)


def test_smooth_is_a_centred_moving_average():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(101)
    got = smooth(values, window=7)
    want = [values[max(0, i - 3):i + 4].mean() for i in range(101)]
    np.testing.assert_allclose(got, want)
    np.testing.assert_array_equal(smooth(values[:20]), values[:20])  # short series: no smoothing by default
    with_gap = values.copy()
    with_gap[50] = np.nan
    assert np.isfinite(smooth(with_gap, window=7)).all()


def test_decimate_keeps_extremes_in_order():
    rng = np.random.default_rng(2)
    y = rng.standard_normal(100_000)
    y[31_337] = 50.0  # one spike
    x = np.arange(len(y), dtype=float)
    dx, dy = decimate(x, y, max_points=2000)
    assert len(dx) <= 2000 and np.all(np.diff(dx) > 0)
    assert dy.max() == 50.0 and dy.min() == y.min()
    np.testing.assert_array_equal(y[dx.astype(int)], dy)  # a subsequence of the series
    short_x, short_y = decimate(x[:10], y[:10])
    np.testing.assert_array_equal(short_y, y[:10])  # short series: drawn whole


def test_write_figures_for_a_long_history(tmp_path):
    """Long histories are drawn decimated but every figure is written."""
    figures, _ = quiet(write_figures, {"long": make_history(20_000)}, tmp_path)
    assert {p.name for p in figures} == PNGS
    for png in figures:
        assert_real_image(png)


def test_events_of_a_resumed_run_keep_the_last_value_of_each_step(tmp_path):
    """A run resumed from checkpoint-2 after dying at step 3 logs step 3 again (new events file)."""
    import time

    from torch.utils.tensorboard import SummaryWriter

    logs = tmp_path / "nsr-resumed" / "logs"
    first = SummaryWriter(str(logs), filename_suffix=".first")
    for step, loss in ((1, 3.0), (2, 2.0), (3, 9.0)):
        first.add_scalar("train/loss", loss, step)
    first.close()
    time.sleep(0.01)  # later wall time for the second session
    second = SummaryWriter(str(logs), filename_suffix=".second")
    for step, loss in ((3, 1.5), (4, 1.0)):
        second.add_scalar("train/loss", loss, step)
    second.add_scalar("train/train_runtime", 12.0, 4)
    second.close()

    history = load_history(logs.parent)
    assert [(e["step"], e.get("loss")) for e in history] == [(1, 3.0), (2, 2.0), (3, 1.5), (4, 1.0)]
    assert history[-1]["train_runtime"] == 12.0
