"""The pipelines the notebooks run: train one run, summarise it, find runs, evaluate several.

Each step is a function a notebook cell calls with plain settings; :mod:`chartrl_colab.poc` builds the
four-mode comparison on top of :func:`train_run`. Nothing here displays: :mod:`chartrl_colab.notebook` does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chartrl_colab.cli import argv_for
from chartrl_colab.config import RunConfig
from chartrl_colab.errors import ConfigError
from chartrl_colab.storage import (
    TRAINER_STATE,
    checkpoint_step,
    latest_checkpoint_state,
    list_checkpoints,
    safe_name,
    with_output_root,
)

# Numbers of the last logged training step worth a line in a results file.
KEY_METRICS = ("loss", "reward", "reward_std", "mode/num_positive", "mode/num_negative", "mode/positive_fraction",
               "entropy", "grad_norm", "learning_rate")


# ------------------------------------------------------------------------------------------ training
def train_run(cfg: RunConfig, accelerate_config: str = "", echo=print) -> dict:
    """Train one run (resuming automatically) and return its summary (:func:`run_summary`).

    With ``accelerate_config`` (e.g. ``deepspeed_zero3.yaml``) the run goes through ``accelerate launch``
    on every visible GPU, its output streamed here; otherwise it runs in this kernel.
    """
    cfg = with_output_root(cfg)
    if not accelerate_config:
        from chartrl_colab.train import train

        trainer = train(cfg)  # None: the run had finished already
        return run_summary(cfg.run_dir, trainer.state.log_history if trainer is not None else None)
    cmd = accelerate_command(cfg, accelerate_config)
    echo("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        echo(line, end="")
        lines = (lines + [line])[-20:]
    if proc.wait() != 0:
        raise RuntimeError(f"accelerate launch exited with {proc.returncode}; last output:\n{''.join(lines)}")
    return run_summary(cfg.run_dir)


def accelerate_command(cfg: RunConfig, accelerate_config: str, num_processes: int | None = None) -> list[str]:
    """``accelerate launch --config_file FILE --num_processes N -m chartrl_colab.train <flags of cfg>``.

    ``num_processes`` defaults to the visible GPU count (the config file's own value otherwise).
    """
    if num_processes is None:
        import torch

        num_processes = torch.cuda.device_count() or None
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    return cmd + ["-m", "chartrl_colab.train", *argv_for(cfg)]


def run_summary(run_dir: str | Path, log_history: list[dict] | None = None) -> dict:
    """Where a run's files are and its last logged numbers.

    ``log_history`` defaults to the newest complete checkpoint's ``trainer_state.json``.
    """
    run_dir = Path(run_dir)
    found = latest_checkpoint_state(run_dir)
    ckpt, state = found if found else (None, {})
    if log_history is None:
        log_history = state.get("log_history", [])
    steps = [entry for entry in log_history if "loss" in entry]
    last = steps[-1] if steps else {}
    return {
        "run_name": run_dir.name,
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt) if ckpt else None,
        "trainer_state": str(ckpt / TRAINER_STATE) if ckpt else None,
        "global_step": int(last.get("step", 0)),
        "logged_steps": len(steps),
        "final": {k: last[k] for k in KEY_METRICS if k in last},
        "totals": {k: sum(e.get(k, 0) for e in steps) for k in ("mode/num_positive", "mode/num_negative")},
    }


def find_runs(output_root: str | Path, run_dirs=(), required: bool = True) -> list[Path]:
    """``run_dirs`` if any are given, else the run directories under ``output_root`` (by name).

    A run directory holds checkpoints or ``logs/``; when there is none: ConfigError if ``required``, else [].
    """
    if run_dirs:
        return [Path(p) for p in run_dirs]
    root = Path(output_root)
    found = sorted(p for p in root.iterdir() if p.is_dir() and (list_checkpoints(p) or (p / "logs").is_dir())) \
        if root.is_dir() else []
    if not found and required:
        raise ConfigError(f"no run directories under output_root={str(root)!r}; train one first (02_train) or "
                          "list them in run_dirs")
    return found


def run_label(path: str | Path) -> str:
    """A short label for a run directory or checkpoint folder.

    >>> run_label("runs/nsr-tiny-synthetic-8-1"), run_label("runs/nsr-tiny-synthetic-8-1/checkpoint-4")
    ('nsr-tiny-synthetic-8-1', 'nsr-tiny-synthetic-8-1@4')
    """
    path = Path(path)
    step = checkpoint_step(path)
    return path.name if step is None else f"{path.parent.name}@{step}"


def evaluate_runs(checkpoints=(), labels=(), include_base: bool = True, output_dir: str | Path = "eval", ks=(),
                  **generate_settings) -> dict:
    """Sample every checkpoint (and the base model) on the same questions, then compare their pass@k.

    ``generate_settings`` are :class:`chartrl_colab.generate.GenerateConfig` fields shared by all (data
    set, split, subset size, samples per question, temperature, ...). Each sample file goes to
    ``output_dir/<label>.jsonl`` (rerunning resumes it); the curves, bars and tables to ``output_dir``.
    """
    from chartrl_colab.evaluate import evaluate
    from chartrl_colab.generate import GenerateConfig, generate_samples

    checkpoints = [str(c) for c in checkpoints]
    labels = list(labels) or [run_label(c) for c in checkpoints]
    if len(labels) != len(checkpoints):
        raise ConfigError(f"labels has {len(labels)} name(s) for {len(checkpoints)} checkpoint(s); give one per checkpoint")
    sources = ([("Base", "")] if include_base else []) + list(zip(labels, checkpoints))
    if not sources:
        raise ConfigError("nothing to evaluate: give checkpoints, or include_base=True")
    out = Path(output_dir)
    files = {}
    for i, (label, ckpt) in enumerate(sources, 1):
        print(f"\n[{i}/{len(sources)}] {label}: {ckpt or 'base model ' + generate_settings.get('vlm_name', '')}")
        cfg = GenerateConfig(checkpoint=ckpt, output=str(out / f"{safe_name(label)}.jsonl"), **generate_settings)
        files[label] = generate_samples(cfg)
    report = evaluate(list(files.values()), labels=list(files), ks=list(ks) or None, output_dir=out)
    models = report.metrics["models"]
    return {"samples": files, "figures": report.figures, "table_md": report.table_md, "table_csv": report.table_csv,
            "metrics_json": report.metrics_json,
            "pass_at_1": {label: m["pass_at_1"]["mean"] for label, m in models.items()},
            "pass_at_n": {label: m["pass_at_n"]["mean"] for label, m in models.items()},
            "n": {label: m["n"] for label, m in models.items()}, "notes": report.metrics.get("notes", [])}
