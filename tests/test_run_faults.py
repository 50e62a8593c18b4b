"""Issue 12 with real training runs: a finished run rerun changes nothing, changed settings are refused, --resume
never says what it deletes, Ctrl-C and a full disk are one line. The first runs are processes of their own (through
tests/resume_worker.py), the reruns of a finished run the same command in this process."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("resume_worker.py")
T = ["--mode", "nsr", "--vlm-name", "tiny", "--dataset-name", "synthetic", "--subset-size", "8",
     "--num-generations", "2", "--batch-size", "1", "--max-completion-length", "16", "--report-to", "tensorboard",
     "--logging-steps", "1", "--save-steps", "1"]


def start(root: Path, *extra: str, when: str = "none", step: int = 0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(WORKER), when, str(step), "--", *T, "--output-root", str(root), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def rerun(capsys, root: Path, *extra: str) -> subprocess.CompletedProcess:
    """The command run again in this process (its imports are warm): its exit code and what it printed."""
    from chartrl_colab.train import main

    capsys.readouterr()
    code = main([*T, "--output-root", str(root), *extra])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["chartrl_colab.train", *extra], code, out, err)


@pytest.fixture(scope="module")
def first_runs(tmp_path_factory):
    """The training run each test begins with, all started at once (each process uses one core):
    name -> (output root, its process)."""
    plans = {"finished": (["--max-steps", "2"], "none", 0), "interrupted": (["--max-steps", "4"], "interrupt", 2),
             "full": (["--max-steps", "3"], "full", 2)}
    runs = {}
    for name, (extra, when, step) in plans.items():
        root = tmp_path_factory.mktemp(name)
        runs[name] = (root, start(root, *extra, when=when, step=step))
    yield runs
    for _, proc in runs.values():  # a test that failed before reading its run's end
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.replace("\r", "\n").strip().splitlines()[-1]


@pytest.mark.slow
def test_a_finished_run_rerun_changes_nothing_and_other_settings_are_refused(first_runs, capsys):
    tmp_path, started = first_runs["finished"]  # --max-steps 2
    run = tmp_path / "nsr-tiny-synthetic-8-2025"
    proc = finish(started)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = snapshot(run)

    for extra in (["--max-steps", "2"], ["--max-steps", "2", "--logging-steps", "5", "--save-steps", "9"]):
        proc = rerun(capsys, tmp_path, *extra)
        assert proc.returncode == 0 and f"Run {run} is finished at step 2" in proc.stdout, proc.stderr[-3000:]
        assert snapshot(run) == before

    proc = rerun(capsys, tmp_path, "--max-steps", "2", "--learning-rate", "1e-3", "--reward-threshold", "0.9")
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    for words in ("learning_rate 1e-05 -> 0.001", "reward_threshold 0.5 -> 0.9", "--resume never"):
        assert words in line, line
    assert snapshot(run) == before

    proc = rerun(capsys, tmp_path, "--max-steps", "1", "--resume", "never", "--learning-rate", "1e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"--resume never: deleting the earlier run in {run}: checkpoint-1, checkpoint-2" in proc.stdout
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["learning_rate"] == 1e-3 and record["global_step"] == 1


@pytest.mark.slow
def test_ctrl_c_is_one_line_naming_the_step_and_the_checkpoint(first_runs):
    tmp_path, started = first_runs["interrupted"]  # --max-steps 4, Ctrl-C after checkpoint-2
    proc = finish(started)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert one_line(proc.stderr) == "interrupted at step 2; rerun to resume from checkpoint-2"
    assert (tmp_path / "nsr-tiny-synthetic-8-2025" / ".lock").read_text() == ""  # released


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes(first_runs):
    _, started = first_runs["full"]  # --max-steps 3, the disk full when checkpoint-2 is written
    proc = finish(started)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("error: writing to ") and "the disk is probably full" in line, line
    assert "rerun to resume from checkpoint-1" in line
