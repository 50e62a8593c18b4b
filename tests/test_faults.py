"""A careless or unlucky user (issue 12): each mistake or machine fault is one line naming the value or path and
what to do, exit code 2 (130 for Ctrl-C), no traceback, and nothing written that misleads ``--resume auto``.
Fast tests: nothing here trains (the training ones are in tests/test_run_faults.py)."""

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chartrl_colab import batch, monitor
from chartrl_colab.cli import run_cli
from chartrl_colab.colab.notebook import check_injected
from chartrl_colab.errors import ConfigError
from chartrl_colab.runs import storage
from chartrl_colab.runs.lock import RunLock
from chartrl_colab.runs.resume_rules import changed_settings, check_same_settings, finished
from chartrl_colab.train import main as train_main

T = ["--vlm-name", "tiny", "--dataset-name", "synthetic", "--subset-size", "8", "--num-generations", "2",
     "--batch-size", "1", "--max-completion-length", "16", "--report-to", "tensorboard"]


def make_checkpoint(run_dir: Path, step: int, history=()) -> Path:
    """A complete checkpoint as transformers writes it (adapter, trainer state)."""
    import numpy as np
    from safetensors.numpy import save_file

    ckpt = run_dir / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(ckpt / "adapter_model.safetensors"))
    state = {"global_step": step, "train_batch_size": 2, "log_history": list(history)}
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    return ckpt


def one_error_line(err: str, *words) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])


# --------------------------------------------------------------------------------- settings (fault 5, 6)
@pytest.mark.parametrize("flags, words", [
    (["--num-epochs", "0"], ["num_epochs=0", "max_steps"]),
    (["--reward-threshold", "-3"], ["reward_threshold=-3.0", "[0, 1]"]),
    (["--reward-threshold", "1.5"], ["reward_threshold=1.5", "[0, 1]"]),
    (["--lora-alpha", "-8"], ["lora_alpha=-8"]),
    (["--lora-dropout", "1.5"], ["lora_dropout=1.5", "< 1"]),
    (["--rewards", "accuracy", "accuracy"], ["accuracy twice"]),
    (["--dataset-name", "evochart"], ["unknown split 'train' for evochart"]),
])
def test_bad_settings_are_one_line_before_anything_is_written(tmp_path, capsys, flags, words):
    root = tmp_path / "runs"
    assert train_main(["--mode", "nsr", *T, "--output-root", str(root), *flags]) == 2
    one_error_line(capsys.readouterr().err, *words)
    assert not root.exists()  # no run directory, no run.json


def test_a_threshold_inside_the_format_rewards_range_is_fine():
    from chartrl_colab.config import RunConfig

    RunConfig(verifier="format", reward_threshold=2.0)
    with pytest.raises(ConfigError, match=r"verifier 'format'.*\[0, 2\]"):
        RunConfig(verifier="format", reward_threshold=0)


def test_batch_gpus_empty_is_refused():  # batch --gpus "" end to end: tests/test_batch.py
    with pytest.raises(ConfigError, match="gpus=''"):
        batch.parse_gpus("")
    assert batch.parse_gpus(None) == []


def test_a_misspelt_papermill_parameter_names_the_close_match():
    history = ["", 'mode = "nsr"\nresults_json = "r.json"\n', "# Parameters\nreward_treshold = 0.9\n"]
    with pytest.raises(ConfigError, match="'reward_treshold' is not a parameter of this notebook; did you mean "
                                          "'reward_threshold'"):
        check_injected(history, ["mode", "reward_threshold"])
    check_injected(["", 'results_json = "r.json"', "# Parameters\nresults_json = 'x'\nmode = 'psr'\n"], ["mode"])
    assert ConfigError("x")._render_traceback_() == ["error: x"]  # what Jupyter and papermill show


# -------------------------------------------------------------------------------- machine faults (fault 5)
def test_an_output_root_that_is_a_file_is_one_line(tmp_path, capsys):
    root = tmp_path / "runs"
    root.write_text("not a folder")
    assert train_main(["--mode", "nsr", *T, "--output-root", str(root)]) == 2
    one_error_line(capsys.readouterr().err, str(root))


def test_a_staging_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    staging = tmp_path / "staging"
    staging.write_text("not a folder")
    assert train_main(["--mode", "nsr", *T, "--output-root", str(tmp_path / "runs"), "--staging-dir",
                       str(staging)]) == 2
    one_error_line(capsys.readouterr().err, str(staging))


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, ["no space left", "/r/x", "free space"]),
    (errno.EROFS, ["read-only", "/r/x", "choose a folder"]),
    (errno.ENOTDIR, ["/r/x", "file"]),
    (errno.EISDIR, ["/r/x", "is a folder where a file is expected"]),
])
def test_machine_faults_are_one_line_naming_the_path(capsys, code, words):
    def job():
        raise OSError(code, os.strerror(code), "/r/x")

    assert run_cli(job) == 2
    one_error_line(capsys.readouterr().err, *words)


def test_ctrl_c_is_one_line_and_130(capsys):
    def job():
        raise KeyboardInterrupt("interrupted at step 3; rerun to resume from checkpoint-2")

    assert run_cli(job) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted at step 3; rerun to resume from checkpoint-2"


def test_monitor_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    run = make_checkpoint(tmp_path / "nsr-tiny-synthetic-8-1", 1, history=[{"step": 1, "loss": 0.5}]).parent
    out = tmp_path / "plots"
    out.write_text("a file")
    assert monitor.main(["--checkpoint-dir", str(run), "--output-dir", str(out)]) == 2
    one_error_line(capsys.readouterr().err, str(out))


# ------------------------------------------------------------------------------------- broken data (fault 5)
def test_a_corrupt_parquet_is_one_line_naming_it(tmp_path):
    from chartrl_colab.data.loading import load_chart_dataset

    (tmp_path / "data").mkdir()
    bad = tmp_path / "data" / "train-00000-of-00001.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ConfigError, match=rf"chartqa: cannot read {bad}.*download the files again"):
        load_chart_dataset("chartqa", split="train", subset_size=2, data_dir=str(tmp_path))


def test_evochart_json_that_does_not_parse_and_no_usable_rows(tmp_path):
    from chartrl_colab.data.loading import load_chart_dataset

    qa = tmp_path / "evochart_qa.json"
    qa.write_text('[{"imgname": "a.png", "query": "q"')
    with pytest.raises(ConfigError, match=rf"{qa} does not parse as JSON"):
        load_chart_dataset("evochart", split="test", data_dir=str(tmp_path))
    qa.write_text(json.dumps([{"imgname": "missing.png", "query": "q", "label": "1"}] * 3))
    with pytest.raises(ConfigError, match=r"no usable rows in evochart/test: .*3 unreadable images"):
        load_chart_dataset("evochart", split="test", data_dir=str(tmp_path))


# --------------------------------------------------------------------------------- completeness (fault 4)
def test_an_empty_trainer_state_is_incomplete_for_resume_and_monitor(tmp_path):
    good = make_checkpoint(tmp_path / "run", 2)
    bad = make_checkpoint(tmp_path / "run", 4)
    (bad / "trainer_state.json").write_text("{}")
    assert "lacks global_step, train_batch_size, log_history" in storage.checkpoint_problem(bad)
    assert storage.find_resume_checkpoint("auto", [tmp_path / "run"], warn=False) == good
    with pytest.raises(ConfigError, match="lacks global_step"):
        storage.find_resume_checkpoint(str(bad), [])
    with pytest.raises(ConfigError, match="lacks global_step"):
        monitor.load_history(bad)
    (bad / "trainer_state.json").write_text(json.dumps({"global_step": 3, "train_batch_size": 2, "log_history": []}))
    assert "global_step 3, not 4" in storage.checkpoint_problem(bad)


def test_a_garbage_adapter_config_makes_a_checkpoint_incomplete(tmp_path):
    ckpt = make_checkpoint(tmp_path, 2)
    (ckpt / "adapter_config.json").write_text("garbage{")
    assert "adapter_config.json does not parse" in storage.checkpoint_problem(ckpt)


# ------------------------------------------------------------------------------- changed settings (fault 3)
def test_changed_settings_name_both_values_and_the_way_out():
    old = {"learning_rate": 1e-6, "reward_threshold": 0.5, "num_generations": 4, "logging_steps": 1,
           "max_steps": 2, "num_epochs": 1.0, "rewards": ["format", "accuracy"], "output_root": "a"}
    same = {**old, "logging_steps": 5, "save_steps": 9, "output_root": "b", "max_steps": 4, "rewards": ("format", "accuracy"),
            "grpo_rewards": "new field"}  # a field the older run.json does not record is not compared
    assert changed_settings(old, same) == []
    new = {**old, "learning_rate": 1e-5, "reward_threshold": 0.9, "max_steps": 1}
    assert [name for name, _, _ in changed_settings(old, new)] == ["learning_rate", "reward_threshold", "max_steps"]
    with pytest.raises(ConfigError) as err:
        check_same_settings("runs/x", old, new)
    for words in ("learning_rate 1e-06 -> 1e-05", "reward_threshold 0.5 -> 0.9", "max_steps 2 -> 1",
                  "--resume never", "another --output-root"):
        assert words in str(err.value)


def test_a_finished_run_is_finished_unless_it_is_taken_further():
    record = {"ended": "2025-01-01T00:00:00", "global_step": 2, "config": {"max_steps": 2, "num_epochs": 1.0}}
    assert "finished at step 2" in finished(record, {"max_steps": 2, "num_epochs": 1.0})
    assert finished(record, {"max_steps": 3, "num_epochs": 1.0}) is None
    assert finished({**record, "ended": None}, {"max_steps": 2}) is None
    epochs = {"ended": "t", "global_step": 8, "config": {"max_steps": -1, "num_epochs": 1.0}}
    assert finished(epochs, {"max_steps": -1, "num_epochs": 1.0}) is not None
    assert finished(epochs, {"max_steps": -1, "num_epochs": 2.0}) is None


# ------------------------------------------------------------------------------------- one writer (fault 2)
def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "nsr-tiny-synthetic-8-2025"
    with RunLock(run_dir):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run([sys.executable, "-m", "chartrl_colab.train", "--mode", "nsr", *T, "--output-root",
                               str(root)], capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 2, proc.stderr[-2000:]
        one_error_line(proc.stderr, f"{run_dir} is in use by process {os.getpid()} on {socket.gethostname()}")
        with pytest.raises(ConfigError, match="in use by process"):
            RunLock(run_dir).acquire()  # another open file in this very process is refused too
    assert not (run_dir / "run.json").exists()
    with RunLock(run_dir):  # released: free again
        pass


def test_a_lock_left_by_a_dead_process_or_a_gone_machine_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = run_dir / ".lock"
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "t"}))
    with RunLock(run_dir):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert "no longer runs" in capsys.readouterr().out

    lock.write_text(json.dumps({"pid": 1, "host": "colab-vm-gone", "started": "t"}))
    with pytest.raises(ConfigError, match="process 1 on colab-vm-gone .*another machine, last seen"):
        RunLock(run_dir).acquire()  # fresh: that machine may still be writing
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with RunLock(run_dir):
        assert json.loads(lock.read_text())["host"] == socket.gethostname()


def test_generate_output_that_is_a_folder_is_one_line(tmp_path, capsys):
    from chartrl_colab import generate

    assert generate.main(["--vlm-name", "tiny", "--dataset-name", "synthetic", "--split", "test", "--subset-size",
                          "2", "--num-samples", "2", "--max-new-tokens", "4", "--output", str(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, str(tmp_path), "is a folder where a file is expected")
