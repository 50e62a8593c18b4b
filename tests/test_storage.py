"""Where runs live, which checkpoints are complete, and the Drive copy: fast tests on hand-made checkpoints."""

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from chartrl_colab.errors import ConfigError
from chartrl_colab.runs import record as run_record
from chartrl_colab.runs import storage


def make_checkpoint(run_dir: Path, step: int, adapter: bool = True) -> Path:
    """A checkpoint folder shaped like transformers' (weights, optimizer, scheduler, RNG, trainer state)."""
    ckpt = run_dir / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    name = "adapter_model.safetensors" if adapter else "model.safetensors"
    save_file({"w": torch.full((64, 64), float(step))}, str(ckpt / name))
    torch.save({"state": {0: torch.zeros(64)}}, ckpt / "optimizer.pt")
    torch.save({"last_epoch": step}, ckpt / "scheduler.pt")
    torch.save({"cpu": torch.random.get_rng_state()}, ckpt / "rng_state.pth")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "train_batch_size": 8, "log_history": []}))
    return ckpt


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ------------------------------------------------------------------------------------------- complete
def test_a_whole_checkpoint_is_complete(tmp_path):
    assert storage.checkpoint_problem(make_checkpoint(tmp_path, 5)) is None
    assert storage.checkpoint_problem(make_checkpoint(tmp_path, 6, adapter=False)) is None


@pytest.mark.parametrize("damage, words", [
    (lambda c: (c / "trainer_state.json").unlink(), "no trainer_state.json"),
    (lambda c: (c / "trainer_state.json").write_text('{"global_step": 1'), "does not parse"),
    (lambda c: truncate(c / "adapter_model.safetensors"), "adapter_model.safetensors"),
    (lambda c: truncate(c / "adapter_model.safetensors", keep=0.001), "adapter_model.safetensors"),
    (lambda c: (c / "adapter_model.safetensors").unlink(), "no weights"),
    (lambda c: truncate(c / "optimizer.pt"), "optimizer.pt is not whole"),
    (lambda c: truncate(c / "rng_state.pth", keep=0.9), "rng_state.pth is not whole"),
])
def test_a_damaged_checkpoint_says_what_is_wrong(tmp_path, damage, words):
    ckpt = make_checkpoint(tmp_path, 5)
    damage(ckpt)
    assert words in storage.checkpoint_problem(ckpt)


def test_resume_skips_a_partial_newest_checkpoint_and_warns(tmp_path, capsys):
    for step in (10, 20, 30):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-30" / "trainer_state.json").unlink()   # killed before the state was written
    make_checkpoint(tmp_path, 40)
    truncate(tmp_path / "checkpoint-40" / "adapter_model.safetensors")  # killed mid-weights
    found = storage.find_resume_checkpoint("auto", [tmp_path])
    assert found == tmp_path / "checkpoint-20"
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert "checkpoint-40" in warnings[0] and "truncated" in warnings[0]
    assert "checkpoint-30" in warnings[1] and "no trainer_state.json" in warnings[1]
    # Removing what the resumed run will write again leaves the complete ones alone.
    storage.remove_incomplete(tmp_path, newer_than=20)
    assert [p.name for p in storage.list_checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-20"]


def test_resume_choices(tmp_path):
    assert storage.find_resume_checkpoint("auto", [tmp_path / "none-yet"]) is None
    make_checkpoint(tmp_path / "drive", 4)
    make_checkpoint(tmp_path / "local", 6)  # staging is ahead of Drive: take the newer one
    assert storage.find_resume_checkpoint("auto", [tmp_path / "drive", tmp_path / "local"]) == \
        tmp_path / "local" / "checkpoint-6"
    assert storage.find_resume_checkpoint("never", [tmp_path / "local"]) is None
    given = tmp_path / "drive" / "checkpoint-4"
    assert storage.find_resume_checkpoint(str(given), []) == given
    (given / "trainer_state.json").unlink()
    with pytest.raises(ConfigError, match="not a checkpoint to resume from: no trainer_state.json"):
        storage.find_resume_checkpoint(str(given), [])


# ------------------------------------------------------------------------------------ Colab and Drive
@pytest.fixture
def fake_colab(tmp_path, monkeypatch):
    """A google.colab module and Colab's hostname file, and a temp folder standing in for the Drive mount."""
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    marker = tmp_path / "var-colab-hostname"
    marker.write_text("colab-vm")
    mount = tmp_path / "drive"
    return marker, mount


def test_colab_needs_both_the_module_and_the_hostname_file(tmp_path, fake_colab, monkeypatch):
    marker, _ = fake_colab
    assert storage.in_colab(marker)
    assert not storage.in_colab(tmp_path / "missing")      # a pip-installed google.colab elsewhere
    monkeypatch.delitem(sys.modules, "google.colab")
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda name: None)
    assert not storage.in_colab(marker)                     # Kaggle-like: no google.colab


def test_default_output_root(tmp_path, fake_colab):
    marker, mount = fake_colab
    assert storage.default_output_root({}, mount, tmp_path / "not-colab") == Path("runs")
    assert storage.default_output_root({}, mount, marker) == Path("/content/runs")  # Drive not mounted
    (mount / "MyDrive").mkdir(parents=True)
    assert storage.default_output_root({}, mount, marker) == mount / "MyDrive" / "chartrl" / "runs"
    assert storage.default_output_root({"CHARTRL_ROOT": "/x"}, mount, marker) == Path("/x")
    assert storage.on_drive(mount / "MyDrive" / "chartrl" / "runs" / "r", mount)
    assert not storage.on_drive(tmp_path / "runs", mount)
    assert storage.mount_drive(mount, marker)               # already mounted


def test_mount_drive_outside_colab_says_no(tmp_path, capsys):
    assert not storage.mount_drive(tmp_path / "drive", tmp_path / "no-marker")
    assert "Not in Colab" in capsys.readouterr().out


def failing_copy(fail_on: int, times: int, seen: list):
    """shutil.copyfile that raises like a dropped Drive mount on its ``fail_on``-th call, ``times`` times."""
    calls = {"n": 0, "failed": 0}

    def copy(src, dst):
        calls["n"] += 1
        if calls["n"] == fail_on and calls["failed"] < times:
            calls["failed"] += 1
            # What a reader of the run dir would see at this very moment:
            seen.append(storage.latest_checkpoint(Path(dst).parent.parent))
            shutil.copyfile(src, dst)
            truncate(Path(dst))  # half the file made it
            calls["n"] = 0
            raise OSError(107, "Transport endpoint is not connected")
        return shutil.copyfile(src, dst)

    return copy


def test_a_copy_that_fails_midway_is_never_taken_for_complete(tmp_path, fake_colab, capsys):
    _, mount = fake_colab
    local, drive_run = tmp_path / "local", mount / "MyDrive" / "chartrl" / "runs" / "run"
    storage.copy_checkpoint(make_checkpoint(local, 2), drive_run, keep=3)
    seen = []
    copied = storage.copy_checkpoint(make_checkpoint(local, 4), drive_run, keep=3, copy=failing_copy(3, 1, seen),
                                     wait=0)
    warnings = capsys.readouterr().err.splitlines()
    assert seen == [drive_run / "checkpoint-2"]           # mid-copy, the newest complete one was still 2
    assert "Transport endpoint is not connected" in warnings[0] and "attempt 1/3" in warnings[0]
    assert copied == drive_run / "checkpoint-4"
    assert storage.checkpoint_problem(copied) is None
    assert (copied / "adapter_model.safetensors").read_bytes() == \
        (local / "checkpoint-4" / "adapter_model.safetensors").read_bytes()
    assert not list(drive_run.glob(".partial-*"))


def test_a_copy_that_keeps_failing_leaves_only_a_partial_folder(tmp_path, fake_colab, capsys):
    _, mount = fake_colab
    local, drive_run = tmp_path / "local", mount / "MyDrive" / "runs" / "run"
    storage.copy_checkpoint(make_checkpoint(local, 2), drive_run, keep=3)
    seen = []
    assert storage.copy_checkpoint(make_checkpoint(local, 4), drive_run, keep=3,
                                   copy=failing_copy(2, 99, seen), retries=3, wait=0) is None
    assert len(capsys.readouterr().err.splitlines()) == 3
    assert [p.name for p in storage.list_checkpoints(drive_run)] == ["checkpoint-2"]
    assert storage.find_resume_checkpoint("auto", [drive_run]) == drive_run / "checkpoint-2"
    # The next checkpoint reuses the leftover partial folder and lands whole.
    storage.copy_checkpoint(make_checkpoint(local, 6), drive_run, keep=3)
    assert [p.name for p in storage.list_checkpoints(drive_run)] == ["checkpoint-2", "checkpoint-6"]
    assert not list(drive_run.glob(".partial-*"))


def test_rotation_keeps_exactly_the_limit_by_recycling_folders(tmp_path, monkeypatch):
    local, drive_run = tmp_path / "local", tmp_path / "drive" / "run"
    removed = []
    monkeypatch.setattr(storage.shutil, "rmtree", lambda p, **k: removed.append(p))
    for step in range(1, 8):
        storage.copy_checkpoint(make_checkpoint(local, step), drive_run, keep=3)
        kept = storage.list_checkpoints(drive_run)
        assert [storage.checkpoint_step(p) for p in kept] == list(range(max(1, step - 2), step + 1))
        assert all(storage.checkpoint_problem(p) is None for p in kept)
    assert removed == []  # nothing deleted (a Drive delete fills the Trash): old folders were overwritten
    # Contents are the new checkpoint's, not leftovers of the recycled one.
    assert (drive_run / "checkpoint-7" / "adapter_model.safetensors").read_bytes() == \
        (local / "checkpoint-7" / "adapter_model.safetensors").read_bytes()


def test_mirror_files_copies_logs_but_not_checkpoints(tmp_path):
    src, dest = tmp_path / "local", tmp_path / "drive"
    make_checkpoint(src, 3)
    (src / "logs").mkdir()
    (src / "logs" / "events.out").write_text("a")
    (src / "adapter_model.safetensors").write_text("final")
    storage.mirror_files(src, dest, names=("logs",))
    assert (dest / "logs" / "events.out").read_text() == "a" and not (dest / "adapter_model.safetensors").exists()
    storage.mirror_files(src, dest)
    assert (dest / "adapter_model.safetensors").read_text() == "final"
    assert not (dest / "checkpoint-3").exists()


def test_run_json_keeps_the_resume_history(tmp_path):
    record = run_record.start_run_record(tmp_path, {"mode": "nsr"}, None)
    run_record.finish_run_record(tmp_path, record, 5)
    again = run_record.start_run_record(tmp_path, {"mode": "nsr"}, tmp_path / "checkpoint-5", 5)
    on_disk = run_record.read_run_json(tmp_path)
    assert on_disk == json.loads(json.dumps(again))
    assert on_disk["started"] == record["started"] and on_disk["ended"] is None
    assert [r["from_checkpoint"] for r in on_disk["resumes"]] == [None, str(tmp_path / "checkpoint-5")]
    assert on_disk["versions"]["torch"] == torch.__version__.split("+")[0]
