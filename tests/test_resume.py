"""Kill-and-resume exactness: a run SIGKILLed after (or while writing) a checkpoint and restarted ends where
an uninterrupted run ends: same LoRA weights, same logged values for every step after the checkpoint.
w-reinforce is killed once after and once while writing a checkpoint (what the resume says and records);
nsr at three random moments of all three kinds, ending bit-identical.

The runs cross epoch boundaries (6 prompts, 2 per step: an epoch every 3 steps) and resume in the middle
of the second epoch or before it, so the data order of a resumed epoch is checked too, and use a large learning rate so a wrong resume cannot hide in rounding.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chartrl_colab.runs.storage import checkpoint_problem, latest_checkpoint

WORKER = Path(__file__).with_name("resume_worker.py")
TIME_KEYS = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second"}
MAX_STEPS, SAVE_STEPS, KILL_STEP = 5, 2, 4


def flags(mode: str, root: Path) -> list[str]:
    return ["--mode", mode, "--vlm-name", "tiny", "--dataset-name", "synthetic", "--subset-size", "6",
            "--batch-size", "2", "--num-generations", "4", "--max-steps", str(MAX_STEPS),
            "--save-steps", str(SAVE_STEPS), "--save-total-limit", "5", "--max-completion-length", "24",
            "--logging-steps", "1", "--learning-rate", "0.01", "--seed", "0", "--report-to", "tensorboard",
            "--output-root", str(root)]


def start(mode: str, root: Path, when: str = "none", step: int = 0, extra=()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(WORKER), when, str(step), "--", *flags(mode, root), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(mode: str, root: Path, when: str = "none", step: int = 0, extra=()) -> subprocess.CompletedProcess:
    return finish(start(mode, root, when, step, extra))


def run_dir(mode: str, root: Path) -> Path:
    return root / f"{mode}-tiny-synthetic-6-0"


def step_logs(path: Path) -> dict[int, dict]:
    history = json.loads((path / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: {k: v for k, v in h.items() if k not in TIME_KEYS} for h in history if "loss" in h}


def assert_same_run(resumed: Path, baseline: Path, after_step: int) -> None:
    a, b = load_file(resumed / "adapter_model.safetensors"), load_file(baseline / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    la, lb = step_logs(resumed), step_logs(baseline)
    assert sorted(la) == sorted(lb) == list(range(1, MAX_STEPS + 1))
    for s in range(after_step + 1, MAX_STEPS + 1):
        assert la[s] == lb[s], f"step {s} differs"


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """One uninterrupted run per mode (side by side: each process uses one core)."""
    roots = {mode: tmp_path_factory.mktemp(f"baseline-{mode}") for mode in ("nsr", "w-reinforce")}
    procs = {mode: start(mode, root) for mode, root in roots.items()}
    for mode, proc in procs.items():
        done = finish(proc)
        assert done.returncode == 0, done.stderr[-3000:]
    return {mode: run_dir(mode, root) for mode, root in roots.items()}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["w-reinforce"])  # nsr: in the random kills below
def test_killed_after_a_checkpoint_resumes_exactly(mode, baselines, tmp_path):
    baseline = baselines[mode]
    # The weights after the checkpoint differ from the final ones: the steps after it really train.
    first = load_file(baseline / f"checkpoint-{KILL_STEP}" / "adapter_model.safetensors")
    final = load_file(baseline / "adapter_model.safetensors")
    assert any((first[k] - final[k]).abs().max() > 1e-4 for k in first)

    proc = run(mode, tmp_path, "after", KILL_STEP)
    assert proc.returncode == -signal.SIGKILL
    d = run_dir(mode, tmp_path)
    assert latest_checkpoint(d).name == f"checkpoint-{KILL_STEP}"
    assert not (d / "adapter_model.safetensors").exists()  # it really died before the end

    proc = run(mode, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Resuming from {d / f'checkpoint-{KILL_STEP}'}" in proc.stdout
    assert_same_run(d, baseline, KILL_STEP)
    record = json.loads((d / "run.json").read_text())
    assert [r["from_checkpoint"] for r in record["resumes"]] == [None, str(d / f"checkpoint-{KILL_STEP}")]
    assert record["ended"] is not None and record["global_step"] == MAX_STEPS


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["w-reinforce"])  # nsr: in the random kills below
def test_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(mode, baselines, tmp_path):
    proc = run(mode, tmp_path, "during", KILL_STEP)
    assert proc.returncode == -signal.SIGKILL
    d = run_dir(mode, tmp_path)
    partial = d / f"checkpoint-{KILL_STEP}"
    assert partial.is_dir() and checkpoint_problem(partial) is not None  # weights written, state not
    assert latest_checkpoint(d).name == f"checkpoint-{SAVE_STEPS}"

    proc = run(mode, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"incomplete checkpoint {partial}" in proc.stderr  # a warning
    assert f"Resuming from {d / f'checkpoint-{SAVE_STEPS}'}" in proc.stdout
    assert checkpoint_problem(partial) is None  # written again, whole this time
    assert_same_run(d, baselines[mode], SAVE_STEPS)


@pytest.mark.slow
def test_killed_at_random_moments_several_times_ends_bit_identical(baselines, tmp_path):
    """A run written through staging to a (fake) Drive, SIGKILLed three times at moments drawn at random
    (after a checkpoint, while writing one, while copying one to the Drive folder), then rerun to the end,
    ends with the same bytes of weights and the same log as one run never interrupted (the nsr baseline:
    where and how often a run saves does not change what it trains)."""
    import random

    def go(root: Path, when: str = "none", step: int = 0) -> subprocess.CompletedProcess:
        return run("nsr", root / "drive", when, step, extra=["--save-steps", "1", "--staging-dir", str(root / "local")])

    killed = tmp_path / "killed"
    rng = random.Random(12)
    steps = sorted(rng.sample(range(1, MAX_STEPS), 3))
    plan = list(zip(rng.sample(["after", "during", "copy"], 3), steps, strict=True))
    for when, step in plan:
        proc = go(killed, when, step)
        assert proc.returncode == -signal.SIGKILL, (when, step, proc.stderr[-3000:])
    proc = go(killed)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = run_dir("nsr", killed / "drive"), baselines["nsr"]
    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), plan
    assert step_logs(a) == step_logs(b)
    assert not list(a.glob(".partial-*")) and all(checkpoint_problem(c) is None for c in a.glob("checkpoint-*"))
    record = json.loads((a / "run.json").read_text())
    assert len(record["resumes"]) == len(plan) + 1 and record["global_step"] == MAX_STEPS
    assert (a / ".lock").read_text() == ""  # released
