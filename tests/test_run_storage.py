"""Training runs end to end with a (fake) Drive root, TensorBoard, run.json and wandb (offline)."""

import json
import tempfile
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from chartrl_colab.config import RunConfig
from chartrl_colab.runs import record as run_record
from chartrl_colab.runs import storage
from chartrl_colab.train import train

SMALL = dict(vlm_name="tiny", dataset_name="synthetic", subset_size=4, batch_size=2, num_generations=4,
             max_completion_length=16, logging_steps=1, seed=0)


def scalars(logs: Path) -> dict[str, list[float]]:
    out = {}
    for events in sorted(logs.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return out


@pytest.mark.slow
def test_a_drive_run_is_written_through_local_staging_and_resumes_from_drive(tmp_path, monkeypatch, capsys):
    mount = tmp_path / "drive"
    (mount / "MyDrive").mkdir(parents=True)
    monkeypatch.setattr(storage, "DRIVE_MOUNT", mount)
    (tmp_path / "local-disk").mkdir()  # a library imported first in this test (wandb) makes its temp dir there
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "local-disk"))
    root = mount / "MyDrive" / "chartrl" / "runs"
    cfg = RunConfig(mode="nsr", max_steps=4, save_steps=1, save_total_limit=2, output_root=str(root),
                    report_to=("tensorboard",), **SMALL)
    run_dir, local = Path(cfg.run_dir), storage.staging_dir(cfg.run_name)
    assert local.is_relative_to(tmp_path / "local-disk")

    train(cfg)
    out = capsys.readouterr().out
    assert "on Google Drive" in out and str(local) in out
    # Drive holds exactly save_total_limit complete checkpoints, the logs, run.json and the final adapter.
    assert [p.name for p in storage.list_checkpoints(run_dir)] == ["checkpoint-3", "checkpoint-4"]
    assert all(storage.checkpoint_problem(p) is None for p in storage.list_checkpoints(run_dir))
    assert not list(run_dir.glob(".partial-*"))
    assert (run_dir / "adapter_model.safetensors").exists() and (run_dir / "trainer_state.json").exists()
    assert scalars(run_dir / "logs")["train/loss"]
    assert run_record.read_run_json(run_dir)["global_step"] == 4
    # Local disk keeps only the newest checkpoint.
    assert [p.name for p in storage.list_checkpoints(local)] == ["checkpoint-4"]

    # A new machine: local disk is gone, Drive is not. The run continues from Drive.
    import shutil
    shutil.rmtree(local)
    cfg2 = RunConfig(**{**cfg.to_dict(), "max_steps": 6})
    trainer = train(cfg2)
    out = capsys.readouterr().out
    assert f"Resuming from {run_dir / 'checkpoint-4'} (step 4)" in out
    assert trainer.state.global_step == 6
    assert [p.name for p in storage.list_checkpoints(run_dir)] == ["checkpoint-5", "checkpoint-6"]
    steps = [h["step"] for h in json.loads((run_dir / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_tensorboard_run_json_and_offline_wandb_hold_the_run_and_no_secret(tmp_path, monkeypatch, capsys):
    import wandb

    secrets = {"WANDB_API_KEY": "wandbsecret0123456789abcdef0123456789abcd", "HF_TOKEN": "hf_secretTOKEN987654321"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("WANDB_MODE", "offline")
    inits = []
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: inits.append(kw) or real_init(**kw))

    cfg = RunConfig(mode="w-reinforce", max_steps=2, save_steps=2, output_root=str(tmp_path), **SMALL)
    assert cfg.report_to == ["tensorboard", "wandb"]  # both by default
    trainer = train(cfg)
    out = capsys.readouterr()
    run_dir = Path(cfg.run_dir)

    # TensorBoard: the run's scalars, mode metrics included, as logged in trainer_state.json.
    tb = scalars(run_dir / "logs")
    history = [h for h in trainer.state.log_history if "loss" in h]
    for key in ("loss", "reward", "mode/num_positive", "mode/num_negative", "learning_rate"):
        assert tb[f"train/{key}"] == pytest.approx([h[key] for h in history], rel=1e-6), key

    # run.json: config, versions, commit, times, resume history.
    record = run_record.read_run_json(run_dir)
    assert record["config"] == json.loads(json.dumps(cfg.to_dict()))
    assert record["versions"]["transformers"] and record["versions"]["trl"]
    assert "git_commit" in record and record["started"] and record["ended"]
    assert record["resumes"] == [{"at": record["resumes"][0]["at"], "from_checkpoint": None, "step": 0}]
    assert record["global_step"] == 2

    # wandb: project, run name, full config, tags; offline files in the run dir; the id kept for resumes.
    (kw,) = inits
    assert kw["project"] == "chartrl-nsr" and kw["name"] == cfg.run_name and kw["mode"] == "offline"
    assert kw["config"] == cfg.to_dict()
    assert kw["tags"] == ["w-reinforce", "tiny", "synthetic", "seed-0"]
    assert kw["id"] == record["wandb_id"]
    assert list((run_dir / "wandb").glob(f"offline-run-*-{kw['id']}"))

    # No secret anywhere: console or files.
    for secret in secrets.values():
        assert secret not in out.out + out.err
        for f in run_dir.rglob("*"):
            if f.is_file():
                assert secret.encode() not in f.read_bytes(), f


@pytest.mark.slow
def test_a_wandb_failure_never_stops_training(tmp_path, monkeypatch, capsys):
    import wandb

    def broken(**kw):
        raise RuntimeError("wandb servers unreachable")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", broken)
    cfg = RunConfig(mode="nsr", max_steps=2, save_steps=2, output_root=str(tmp_path), **SMALL)
    trainer = train(cfg)
    assert trainer.state.global_step == 2
    out = capsys.readouterr().err
    assert "warning: wandb init failed (RuntimeError: wandb servers unreachable); continuing without wandb" in out
    assert (Path(cfg.run_dir) / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_resume_never_and_resume_from_a_given_checkpoint(tmp_path, capsys):
    cfg = RunConfig(mode="nsr", max_steps=2, save_steps=1, output_root=str(tmp_path), report_to=("tensorboard",),
                    **SMALL)
    train(cfg)
    run_dir = Path(cfg.run_dir)
    capsys.readouterr()

    train(RunConfig(**{**cfg.to_dict(), "resume": "never"}))
    assert "Starting fresh (--resume never)" in capsys.readouterr().out
    first = run_dir / "checkpoint-1"
    trainer = train(RunConfig(**{**cfg.to_dict(), "resume": str(first)}))
    assert f"Resuming from {first} (step 1)" in capsys.readouterr().out
    assert trainer.state.global_step == 2
    resumes = run_record.read_run_json(run_dir)["resumes"]
    assert [(r["from_checkpoint"], r["step"]) for r in resumes] == [(None, 0), (None, 0), (str(first), 1)]


def test_a_resume_path_that_is_not_a_folder_is_refused(tmp_path):
    from chartrl_colab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"resume='.*nope' is not valid; choose 'auto', 'never' or an existing"):
        RunConfig(resume=str(tmp_path / "nope"), output_root=str(tmp_path))
