"""The pipelines the notebooks run: train one run, summarise it, find runs, evaluate several (no display: that
is :mod:`chartrl_colab.colab.notebook`)."""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chartrl_colab.cli import argv_for
from chartrl_colab.config import RunConfig
from chartrl_colab.errors import ConfigError
from chartrl_colab.runs.record import read_run_json
from chartrl_colab.runs.storage import (
    TRAINER_STATE,
    checkpoint_step,
    latest_checkpoint_state,
    list_checkpoints,
    safe_name,
    with_output_root,
)

log = logging.getLogger(__name__)

# The last logged step's numbers a summary keeps.
KEY_METRICS = ("loss", "reward", "reward_std", "mode/num_positive", "mode/num_negative", "mode/positive_fraction",
               "entropy", "grad_norm", "learning_rate")


# ------------------------------------------------------------------------------------------ training
def train_run(cfg: RunConfig, accelerate_config: str = "") -> dict:
    """Train one run (resuming automatically) in this kernel, or with ``accelerate_config`` (e.g.
    ``deepspeed_zero3.yaml``) through ``accelerate launch`` on every visible GPU; its :func:`run_summary`."""
    cfg = with_output_root(cfg)
    if accelerate_config:
        run_processes({"accelerate launch": accelerate_command(cfg, accelerate_config)})
        return run_summary(cfg.run_dir)
    from chartrl_colab.train import train

    trainer = train(cfg)  # None: the run had finished already
    summary = run_summary(cfg.run_dir, trainer.state.log_history if trainer is not None else None)
    free_memory(trainer)  # the next run of a POC or batch starts with an empty GPU
    return summary


def check_parallel(parallel) -> int:
    """``parallel`` (runs at once) when it is a whole number >= 1; else :class:`ConfigError` naming it."""
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ConfigError(f"parallel_runs={parallel!r} is not valid; a whole number >= 1 (1: one run at a time)")
    return parallel


def run_processes(commands: dict[str, list[str]], parallel: int = 1) -> dict[str, float]:
    """Run each command (label -> argv) as its own process, at most ``parallel`` at a time; label -> seconds.

    Each line a process prints is logged as ``[label] line`` (progress bars off: through a pipe each redraw
    would be a line). Ctrl-C stops every process with SIGINT, as it stops one (a training run saves its step
    first). RuntimeError naming each command that failed, with its last lines.
    """
    check_parallel(parallel)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    running: dict[str, subprocess.Popen] = {}
    seconds, failed, stopping = {}, [], threading.Event()

    def one(label: str, cmd: list[str]) -> None:
        if stopping.is_set():  # interrupted: start nothing more
            return
        began = time.monotonic()
        log.info(f"[{label}] $ " + " ".join(cmd))
        proc = running[label] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                                 bufsize=1, env=env)
        tail: collections.deque[str] = collections.deque(maxlen=20)
        for line in proc.stdout:
            if line.strip():
                log.info(f"[{label}] {line.rstrip()}")
                tail.append(line)
        if proc.wait() != 0:
            failed.append(f"{label} exited with {proc.returncode}; last output:\n{''.join(tail)}")
        seconds[label] = round(time.monotonic() - began, 1)

    pool = ThreadPoolExecutor(max_workers=parallel)
    try:
        for future in [pool.submit(one, label, cmd) for label, cmd in commands.items()]:
            future.result()
    except BaseException:
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        started = list(running.values())
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in started:
            proc.wait()
        raise
    pool.shutdown()
    if failed:
        raise RuntimeError("\n".join(failed))
    return seconds


def free_memory(*trainers) -> None:
    """Release what finished runs hold on the GPU; the trainers and their ``state`` stay usable."""
    from chartrl_colab.models.device import release_memory
    from chartrl_colab.train import release_trainer

    for trainer in trainers:
        release_trainer(trainer)
    release_memory()


def accelerate_command(cfg: RunConfig, accelerate_config: str, num_processes: int | None = None) -> list[str]:
    """``accelerate launch --config_file FILE --num_processes N -m chartrl_colab.train <flags of cfg>``;
    ``num_processes`` defaults to the visible GPU count (the config file's own value otherwise)."""
    if num_processes is None:
        import torch

        num_processes = torch.cuda.device_count() or None
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    return cmd + ["-m", "chartrl_colab.train", *argv_for(cfg)]


def run_summary(run_dir: str | Path, log_history: list[dict] | None = None) -> dict:
    """Where a run's files are and its last logged numbers (``log_history``: by default the newest complete
    checkpoint's ``trainer_state.json``)."""
    run_dir = Path(run_dir)
    ckpt, state = latest_checkpoint_state(run_dir) or (None, {})
    history = state.get("log_history", []) if log_history is None else log_history
    steps = [entry for entry in history if "loss" in entry]
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


# ------------------------------------------------------------------------------------------ after a run
def run_costs(run_dir: str | Path) -> dict:
    """What a run cost: every number in run.json (or one level down) named for seconds, time or memory; missing
    ones worked out: ``train_seconds`` from the logged step times, ``seconds_per_step``, and ``wall_seconds`` from
    run.json's first start to its end (pauses included)."""
    from datetime import datetime

    from chartrl_colab.monitor import training_seconds

    try:
        record = read_run_json(run_dir) or {}
    except ValueError:  # a torn run.json: the logs still tell the time
        record = {}
    words = ("second", "time", "memory", "_gb", "_mb")
    costs = {}
    for key, value in record.items():
        for name, number in (value.items() if isinstance(value, dict) else [(key, value)]):
            if isinstance(number, (int, float)) and not isinstance(number, bool) and any(w in name for w in words):
                costs.setdefault(name, number)
    _, state = latest_checkpoint_state(run_dir) or (None, {})
    history = state.get("log_history", [])
    steps = max([int(e.get("step", 0)) for e in history] + [int(record.get("global_step") or 0)])
    seconds, _ = training_seconds(history) if history else (None, None)
    if seconds is not None:
        costs.setdefault("train_seconds", round(seconds, 2))
        if steps:
            costs.setdefault("seconds_per_step", round(seconds / steps, 3))
    if record.get("started") and record.get("ended"):
        fmt = "%Y-%m-%dT%H:%M:%S%z"
        wall = datetime.strptime(record["ended"], fmt) - datetime.strptime(record["started"], fmt)
        costs.setdefault("wall_seconds", wall.total_seconds())
    costs["steps"] = steps
    return costs


def sample_answers(run_dir: str | Path, count: int = 2, seed: int = 0) -> list[dict]:
    """``count`` questions of the run's training data answered once by its final model, scored with the run's
    rewards and verifier: dicts of ``id``, ``image`` (PIL), ``question``, ``answer``, ``completion``, ``rewards``
    (name -> score) and ``correct``."""
    from chartrl_colab import generate
    from chartrl_colab.data.loading import load_chart_dataset
    from chartrl_colab.models import samplers
    from chartrl_colab.models.device import release_memory
    from chartrl_colab.rewards.completions import completion_text, last_user_text

    config = (read_run_json(run_dir) or {}).get("config") or {}
    if not config:
        raise ConfigError(f"{run_dir} has no run.json with the run's settings; train it with chartrl_colab first")
    cfg = generate.GenerateConfig(
        checkpoint=str(run_dir), dataset_name=config["dataset_name"], data_dir=config.get("data_dir"), split="train",
        subset_size=count, num_samples=1, seed=seed, max_new_tokens=config["max_completion_length"],
        temperature=config.get("temperature", 1.0), rewards=tuple(config["rewards"]), verifier=config["verifier"],
        reward_threshold=config["reward_threshold"])
    data = load_chart_dataset(config["dataset_name"], split="train", subset_size=config.get("subset_size"),
                              seed=config["seed"], data_dir=config.get("data_dir"))
    rows = [data[i] for i in range(min(count, len(data)))]
    release_memory()  # the trainer's model may still hold the GPU; a T4 has no room for two
    model, processor = samplers.load_for_generation(generate.resolve_source(cfg))
    sampler = samplers.TransformersSampler(model, processor, cfg)
    prompts = generate.build_prompts(rows)
    answers = []
    for row, prompt, ids in zip(rows, prompts, sampler.sample(prompts, 1, seed)):
        completions = generate.decode(processor, ids)
        rewards, correct = generate.score(cfg.rewards, prompt, completions, ids, row, cfg.verifier,
                                          cfg.reward_threshold)
        answers.append({"id": row["id"], "image": row["image"], "question": last_user_text(row["prompt"]),
                        "answer": row["answer"], "completion": completion_text(completions[0]),
                        "rewards": {name: values[0] for name, values in rewards.items()}, "correct": correct[0]})
    del model, sampler
    release_memory()
    return answers


def find_runs(output_root: str | Path, run_dirs=(), required: bool = True) -> list[Path]:
    """``run_dirs`` if any are given, else the run directories (holding checkpoints or ``logs/``) under
    ``output_root``, by name. None there: ConfigError if ``required``, else a note and []; both say where it looked
    and whether Google Drive is mounted."""
    from chartrl_colab.runs.storage import DRIVE_MOUNT, drive_mounted, in_colab

    if run_dirs:
        return [Path(p) for p in run_dirs]
    root = Path(output_root)
    found = sorted(p for p in root.iterdir() if p.is_dir() and (list_checkpoints(p) or (p / "logs").is_dir())) \
        if root.is_dir() else []
    if not found:
        if drive_mounted():
            drive = f"Google Drive is mounted at {DRIVE_MOUNT}"
        elif in_colab():
            drive = ("Google Drive is not mounted: each Colab notebook is a fresh machine, so runs of another "
                     "notebook are only seen here when both mount Drive (mount_drive='auto' or 'yes')")
        else:
            drive = "not in Colab; Google Drive is not mounted"
        message = f"no run directories under {str(root.absolute())!r} ({drive})"
        if required:
            raise ConfigError(f"{message}; train one first (02_train) or list them in run_dirs")
        log.info(f"Note: {message}.")
    return found


def run_label(path: str | Path) -> str:
    """A run directory's or checkpoint folder's label.

    >>> run_label("runs/nsr-tiny-synthetic-8-1"), run_label("runs/nsr-tiny-synthetic-8-1/checkpoint-4")
    ('nsr-tiny-synthetic-8-1', 'nsr-tiny-synthetic-8-1@4')
    """
    path = Path(path)
    step = checkpoint_step(path)
    return path.name if step is None else f"{path.parent.name}@{step}"


def evaluate_runs(checkpoints=(), labels=(), include_base: bool = True, output_dir: str | Path = "eval", ks=(),
                  parallel: int = 1, **generate_settings) -> dict:
    """Sample every checkpoint (and the base model) on the same questions, then compare their pass@k.

    ``generate_settings``: :class:`chartrl_colab.generate.GenerateConfig` fields shared by all. Samples go to
    ``output_dir/<label>.jsonl`` (rerunning resumes them), the evaluation's files to ``output_dir``. ``parallel``
    > 1 samples that many models at once, a process each; the samples are those of one at a time.
    """
    from chartrl_colab.evaluate import evaluate
    from chartrl_colab.generate import GenerateConfig, generate_samples

    checkpoints = [str(c) for c in checkpoints]
    labels = list(labels) or [run_label(c) for c in checkpoints]
    if len(labels) != len(checkpoints):
        raise ConfigError(f"labels has {len(labels)} name(s) for {len(checkpoints)} checkpoint(s); give one per "
                          "checkpoint")
    sources = ([("Base", "")] if include_base else []) + list(zip(labels, checkpoints))
    if not sources:
        raise ConfigError("nothing to evaluate: give checkpoints, or include_base=True")
    out = Path(output_dir)
    configs = {label: GenerateConfig(checkpoint=ckpt, output=str(out / f"{safe_name(label)}.jsonl"),
                                     **generate_settings) for label, ckpt in sources}
    files = {label: Path(cfg.output).expanduser() for label, cfg in configs.items()}
    if check_parallel(parallel) > 1:
        run_processes({label: [sys.executable, "-m", "chartrl_colab.generate", *argv_for(cfg)]
                       for label, cfg in configs.items()}, parallel)
    else:
        for i, (label, cfg) in enumerate(configs.items(), 1):
            log.info(f"\n[{i}/{len(sources)}] {label}: {cfg.checkpoint or 'base model ' + cfg.vlm_name}")
            began = time.monotonic()
            generate_samples(cfg)
            log.info(f"[{i}/{len(sources)}] {label}: sampled in {time.monotonic() - began:.0f} s")
    report = evaluate(list(files.values()), labels=list(files), ks=list(ks) or None, output_dir=out)
    models = report.metrics["models"]
    return {"samples": files, "figures": report.figures, "table_md": report.table_md, "table_csv": report.table_csv,
            "metrics_json": report.metrics_json,
            "pass_at_1": {label: m["pass_at_1"]["mean"] for label, m in models.items()},
            "pass_at_n": {label: m["pass_at_n"]["mean"] for label, m in models.items()},
            "n": {label: m["n"] for label, m in models.items()},
            "mean_entropy": {label: m.get("mean_entropy") for label, m in models.items()},
            "models": models, "notes": report.metrics.get("notes", [])}
