"""Trainer callbacks that keep a run safe: mirroring checkpoints to Drive, wandb that cannot fail a run, and a log
of the last step."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from transformers import TrainerCallback
from transformers.integrations import WandbCallback

from chartrl_colab.runs import storage

log = logging.getLogger(__name__)

WANDB_PROJECT = "chartrl-nsr"


class LogLastStep(TrainerCallback):
    """Log the last step whatever ``logging_steps`` says, before the Trainer's log-then-save of that step.

    transformers saves at the last step but does not log it: a 3-step run with ``--logging-steps 10`` would
    log step 1 only, and its final checkpoint's ``trainer_state.json`` and plots would stop there.
    """

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_log = True
        return control


class CheckpointMirror(TrainerCallback):
    """Copy each complete checkpoint (``on_save`` runs after ``trainer_state.json`` is written) from local disk
    to the run directory on Drive in a worker thread while training goes on, then delete older local ones.
    Logs and wandb's offline files follow each checkpoint."""

    def __init__(self, local_dir: str | Path, run_dir: str | Path, keep: int | None):
        self.local_dir, self.run_dir, self.keep = Path(local_dir), Path(run_dir), keep
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-mirror")
        self._pending: list[Future] = []

    def _mirror(self, ckpt: Path) -> None:
        copied = storage.copy_checkpoint(ckpt, self.run_dir, self.keep)
        storage.mirror_files(self.local_dir, self.run_dir, names=("logs", "wandb"))
        if copied is not None:
            for old in storage.list_checkpoints(self.local_dir):
                if storage.checkpoint_step(old) < storage.checkpoint_step(ckpt):
                    shutil.rmtree(old, ignore_errors=True)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = self.local_dir / f"checkpoint-{state.global_step}"
            self._pending.append(self._pool.submit(self._mirror, ckpt))

    def join(self) -> None:
        """Block until every queued copy has finished (call before the process exits)."""
        for f in self._pending:
            f.result()
        self._pending.clear()

    def finish(self) -> None:
        """Wait for the copies, then mirror the top-level files (final adapter) and logs."""
        self.join()
        storage.mirror_files(self.local_dir, self.run_dir)


def wandb_run_id(run_dir: str | Path) -> str:
    """A stable wandb id for a run directory, so a resumed run continues the same wandb run.

    >>> wandb_run_id("runs/nsr-tiny-synthetic-16-2025") == wandb_run_id("runs/nsr-tiny-synthetic-16-2025")
    True
    """
    name = Path(run_dir).name
    digest = hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:8]
    return f"{name}-{digest}"[:64]


def wandb_logged_in() -> bool:
    """True when a wandb API key is configured (env or ~/.netrc); otherwise runs log offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return "api.wandb.ai" in Path(os.environ.get("NETRC", Path.home() / ".netrc")).read_text()
    except OSError:
        return False


class SafeWandbCallback(WandbCallback):
    """transformers' ``WandbCallback`` that starts the run our way and never stops training.

    The stock ``setup`` passes only project and name; we add the run config, tags, the stable id kept in
    run.json (``resume="allow"``) and offline unless logged in. wandb's own variables (``WANDB_PROJECT``,
    ``WANDB_MODE``, ``WANDB_RESUME``) win where set; they are read, never written, so a notebook's next run
    does not inherit this one's id. After any wandb error in a hook it warns once and switches itself off.
    """

    def __init__(self, run_name: str, config: dict, tags: list[str], run_id: str, local_dir: str | Path):
        super().__init__()
        self.run_name, self.run_config, self.tags, self.run_id = run_name, config, tags, run_id
        self.local_dir = Path(local_dir)
        self.disabled = False

    def _guard(self, what: str, fn, *args, **kwargs):
        if self.disabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - wandb must never be the reason a run dies
            self.disabled = True
            log.warning("wandb %s failed (%s: %s); continuing without wandb", what, type(err).__name__, err)
            return None

    def setup(self, args, state, model, **kwargs):
        if state.is_world_process_zero and self._wandb.run is None:
            self.local_dir.mkdir(parents=True, exist_ok=True)
            mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
            self._guard("init", self._wandb.init, project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
                        name=self.run_name, id=self.run_id, resume=os.environ.get("WANDB_RESUME", "allow"),
                        config=self.run_config, tags=self.tags, dir=str(self.local_dir), mode=mode)
        self._guard("setup", super().setup, args, state, model, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        self._guard("end", super().on_train_end, args, state, control, **kwargs)
        if state.is_world_process_zero and self._wandb.run is not None:
            self._guard("finish", self._wandb.finish)


def _guarded(what: str, hook: str):
    def call(self, *args, **kwargs):
        return self._guard(what, getattr(WandbCallback, hook), self, *args, **kwargs)

    call.__name__ = hook
    return call


for _what, _hook in (("setup", "on_train_begin"), ("log", "on_log"), ("save", "on_save"),
                     ("evaluate", "on_evaluate"), ("predict", "on_predict")):
    setattr(SafeWandbCallback, _hook, _guarded(_what, _hook))
