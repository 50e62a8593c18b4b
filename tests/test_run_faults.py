"""Issue 12 with real training runs: a finished run rerun changes nothing, changed settings are refused, --resume
never says what it deletes, Ctrl-C and a full disk are one line (subprocesses through tests/resume_worker.py)."""

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


def go(root: Path, *extra: str, when: str = "none", step: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(WORKER), when, str(step), "--", *T, "--output-root", str(root), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.replace("\r", "\n").strip().splitlines()[-1]


@pytest.mark.slow
def test_a_finished_run_rerun_changes_nothing_and_other_settings_are_refused(tmp_path):
    run = tmp_path / "nsr-tiny-synthetic-8-2025"
    proc = go(tmp_path, "--max-steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = snapshot(run)

    for extra in (["--max-steps", "2"], ["--max-steps", "2", "--logging-steps", "5", "--save-steps", "9"]):
        proc = go(tmp_path, *extra)
        assert proc.returncode == 0 and f"Run {run} is finished at step 2" in proc.stdout, proc.stderr[-3000:]
        assert snapshot(run) == before

    proc = go(tmp_path, "--max-steps", "2", "--learning-rate", "1e-3", "--reward-threshold", "0.9")
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    for words in ("learning_rate 1e-05 -> 0.001", "reward_threshold 0.5 -> 0.9", "--resume never"):
        assert words in line, line
    assert snapshot(run) == before

    proc = go(tmp_path, "--max-steps", "1", "--resume", "never", "--learning-rate", "1e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"--resume never: deleting the earlier run in {run}: checkpoint-1, checkpoint-2" in proc.stdout
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["learning_rate"] == 1e-3 and record["global_step"] == 1


@pytest.mark.slow
def test_ctrl_c_is_one_line_naming_the_step_and_the_checkpoint(tmp_path):
    proc = go(tmp_path, "--max-steps", "4", when="interrupt", step=2)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert one_line(proc.stderr) == "interrupted at step 2; rerun to resume from checkpoint-2"
    assert (tmp_path / "nsr-tiny-synthetic-8-2025" / ".lock").read_text() == ""  # released


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path):
    proc = go(tmp_path, "--max-steps", "3", when="full", step=2)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("error: writing to ") and "the disk is probably full" in line, line
    assert "rerun to resume from checkpoint-1" in line
