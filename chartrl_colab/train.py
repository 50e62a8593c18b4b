"""Train a vision-language model on chart QA with one of the four objectives, as open-r1's ``grpo.py`` does.

    python -m chartrl_colab.train --config recipes/poc.yaml [--mode nsr ...]
    python -m chartrl_colab.train --mode nsr --vlm-name tiny --dataset-name synthetic --seed 2025 \\
        --subset-size 100 --num-epochs 1 --num-generations 4 --batch-size 2 --reward-threshold 0.5

Every TRL ``GRPOConfig``/``ModelConfig`` field is a flag (:mod:`chartrl_colab.config`); notebooks call
:func:`train` with a :class:`RunConfig`. Multi-GPU: ``accelerate launch --config_file=... -m chartrl_colab.train``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

from chartrl_colab.cli import parser_for, run_cli, training_faults
from chartrl_colab.config import MODE_DESCRIPTIONS, RunConfig
from chartrl_colab.errors import ConfigError

log = logging.getLogger(__name__)
BANNER_WIDTH = 60
_DETECT = object()  # "ask torch which GPU this is" (tests pass a made-up device.Gpu or None instead)


def build_parser() -> argparse.ArgumentParser:
    """TRL's parser over RunConfig: every GRPOConfig/ModelConfig field and the package's, ``--config`` a recipe."""
    return parser_for(RunConfig, "python -m chartrl_colab.train", __doc__.split("\n")[0])


def config_from_argv(argv: list[str] | None = None) -> RunConfig:
    return build_parser().parse(argv)


def print_banner(cfg: RunConfig) -> None:
    spg = cfg.steps_per_generation or cfg.gradient_accumulation_steps
    lines = [
        f"{cfg.mode.upper()} TRAINING CONFIGURATION:",
        f"  Training mode: {cfg.mode}",
        f"  Model: {cfg.vlm_name} (init: {cfg.init})",
        f"  Dataset: {cfg.dataset_name}",
        f"  Training samples: {cfg.subset_size if cfg.subset_size is not None else 'all'}",
        f"  Epochs: {cfg.num_train_epochs:g}" + (f" (max steps: {cfg.max_steps})" if cfg.max_steps > 0 else ""),
        f"  Batch size: {cfg.batch_size} prompts x {cfg.num_generations} generations",
        f"  Generations per sample: {cfg.num_generations}",
        f"  Reward threshold: {cfg.reward_threshold} (verifier: {cfg.verifier})",
        *([f"  Lambda PSR: {cfg.lambda_psr}"] if cfg.mode == "w-reinforce" else []),
        f"  Rewards: {', '.join(cfg.rewards)} (preset {cfg.reward_preset})",
        *([f"  GRPO advantage from: "
           f"{'the verifier alone' if cfg.grpo_rewards == 'verifier' else 'the sum of all rewards'}"
           f" (grpo_rewards={cfg.grpo_rewards})"] if cfg.mode == "grpo" else []),
        f"  Updates per generation batch: {spg} micro-steps x {cfg.num_iterations} iteration(s), "
        f"{cfg.gradient_accumulation_steps} micro-step(s) per optimizer step",
        f"  Learning rate: {cfg.learning_rate:g} | temperature: {cfg.temperature} | clip: {cfg.epsilon}"
        + (f"/{cfg.epsilon_high}" if cfg.epsilon_high is not None else "")
        + f" | beta: {cfg.beta} | loss: {cfg.loss_type}",
        f"  Precision: {cfg.precision} | 4-bit: {cfg.load_in_4bit} | gradient checkpointing: "
        f"{cfg.gradient_checkpointing} | vLLM: {cfg.use_vllm} | max pixels: {cfg.max_pixels}",
        f"  Run directory: {cfg.run_dir}",
    ]
    log.info("\n".join(["=" * BANNER_WIDTH, *lines, "=" * BANNER_WIDTH, f"✓ {MODE_DESCRIPTIONS[cfg.mode]}"]))


def grpo_args(cfg: RunConfig, output_dir: str | None = None, save_total_limit: int | None = -1, gpu=_DETECT):
    """TRL's GRPOConfig (TRL's own checks run here) of :func:`grpo_kwargs`."""
    from trl import GRPOConfig

    with warnings.catch_warnings():
        # transformers 5 warns of its own deprecated aliases while it resolves them; not the user's to fix.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*gradient_checkpointing.* is deprecated")
        return GRPOConfig(**grpo_kwargs(cfg, output_dir, save_total_limit, gpu))


def grpo_kwargs(cfg: RunConfig, output_dir: str | None = None, save_total_limit: int | None = -1,
                gpu=_DETECT) -> dict:
    """GRPOConfig arguments: ``cfg``'s GRPOConfig fields and what the package derives, its ``"auto"`` settings
    decided for ``gpu`` (a :class:`chartrl_colab.models.device.Gpu`, None for a CPU; default: this machine's).

    ``output_dir``: where checkpoints go (default the run dir); ``save_total_limit=None``: no Trainer rotation.
    """
    from trl import GRPOConfig

    from chartrl_colab.models import device

    gpu = device.detect() if gpu is _DETECT else gpu
    cfg = device.resolve_run(cfg, gpu, quiet=True)
    checkpointing = cfg.gradient_checkpointing if cfg.activation_checkpointing is None else cfg.activation_checkpointing
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(GRPOConfig) if f.init}
    kwargs.update(
        output_dir=output_dir or cfg.run_dir,
        run_name=cfg.run_name,
        # TRL counts completions per device; a user counts prompts.
        per_device_train_batch_size=cfg.batch_size * cfg.num_generations,
        # grpo_rewards="verifier": TRL's summed reward (grpo's advantage) is the verifier's; all are still logged.
        reward_weights=cfg.reward_weights if cfg.reward_weights is not None else
        [float(cfg.grpo_rewards == "all" or name == cfg.verifier) for name in cfg.rewards],
        save_total_limit=cfg.save_total_limit if save_total_limit == -1 else save_total_limit,
        # wandb gets our own guarded callback (see callbacks.py), not the Trainer's.
        report_to=[r for r in cfg.report_to if r != "wandb"] or "none",
        activation_checkpointing=checkpointing,
        gradient_checkpointing=checkpointing,  # transformers 5's old name mirrors the new one
        activation_checkpointing_kwargs=cfg.activation_checkpointing_kwargs or {"use_reentrant": False},
        # The compute capability decides (device.precision_for): torch calls a T4 bf16-capable, emulating it.
        **device.trainer_flags(cfg.precision),
        use_cpu=gpu is None or cfg.use_cpu,
        use_vllm=bool(cfg.use_vllm),
    )
    if cfg.use_vllm:
        kwargs["vllm_mode"] = "colocate"  # vLLM inside this process, sharing the GPU
    return kwargs


def wandb_callback(cfg: RunConfig, local_dir: str):
    """The guarded wandb logger for a run, or None when wandb is not asked for or not installed."""
    if "wandb" not in cfg.report_to:
        return None
    if importlib.util.find_spec("wandb") is None:
        log.info("wandb is not installed: logging to TensorBoard only (pip install wandb)")
        return None
    from chartrl_colab.runs.record import read_run_json
    from chartrl_colab.training.callbacks import SafeWandbCallback, wandb_run_id

    run_id = (read_run_json(cfg.run_dir) or {}).get("wandb_id") or wandb_run_id(cfg.run_dir)
    tags = [cfg.mode, cfg.vlm_name, cfg.dataset_name, f"seed-{cfg.seed}"]
    return SafeWandbCallback(cfg.run_name, cfg.to_dict(), tags, run_id, local_dir)


class ResumePlan(NamedTuple):
    """Where a run stands: its ``run.json`` record, the checkpoint to resume from, why it needs no training."""

    record: dict | None
    checkpoint: Path | None
    finished: str | None

    @property
    def step(self) -> int:
        from chartrl_colab.runs.storage import checkpoint_step

        return checkpoint_step(self.checkpoint) if self.checkpoint else 0


def resume_plan(cfg: RunConfig, local_dir: str, warn: bool = True) -> ResumePlan:
    """The :class:`ResumePlan` of ``cfg`` (the run's settings as asked: run.json's ``config``). Refuses
    (ConfigError) to continue a run recorded with other settings (see :mod:`chartrl_colab.runs.resume_rules`)."""
    from chartrl_colab.runs import record as run_record
    from chartrl_colab.runs import resume_rules, storage

    record = run_record.read_run_json(cfg.run_dir)
    checkpoint = storage.find_resume_checkpoint(cfg.resume, [cfg.run_dir, local_dir], warn=warn)
    if cfg.resume == "never" or not record:
        return ResumePlan(record, checkpoint, None)
    current = cfg.to_dict()
    if checkpoint is not None or record.get("ended") is not None:
        resume_rules.check_same_settings(cfg.run_dir, record.get("config") or {}, current)
    # A finished run stays finished under "auto"; a checkpoint given by path is an explicit request to go back.
    return ResumePlan(record, checkpoint, resume_rules.finished(record, current) if cfg.resume == "auto" else None)


def load_model(cfg: RunConfig):
    """The model (with its LoRA adapter when ``use_peft``) and processor of a resolved config."""
    from chartrl_colab.models import device
    from chartrl_colab.models.loading import add_lora, load_model_and_processor

    model, processor = load_model_and_processor(
        cfg.vlm_name, init=cfg.init, load_in_4bit=cfg.load_in_4bit, seed=cfg.seed, max_pixels=cfg.max_pixels,
        dtype=device.torch_dtype(device.model_precision(cfg.precision, cfg.use_peft, cfg.load_in_4bit)),
    )
    if cfg.use_peft:
        # The Trainer turns gradient checkpointing on from GRPOConfig; don't do it twice.
        model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                         target_modules=cfg.lora_target_modules, modules_to_save=cfg.lora_modules_to_save,
                         use_rslora=cfg.use_rslora, use_dora=cfg.use_dora,
                         gradient_checkpointing=False)
        model.print_trainable_parameters()
    return model, processor


def train(cfg: RunConfig):
    """Run one training job; returns the trainer (``state.log_history`` holds the metrics), or None when the
    run had finished already. A run directory on Google Drive is written through local staging."""
    from transformers import set_seed

    from chartrl_colab.data.loading import load_chart_dataset
    from chartrl_colab.files import file_in_the_way
    from chartrl_colab.models import device
    from chartrl_colab.rewards.presets import get_reward_funcs
    from chartrl_colab.runs import record as run_record
    from chartrl_colab.runs import storage
    from chartrl_colab.runs.lock import RunLock

    # Settings: what was asked (run.json's config, compared on a resume), and what "auto" becomes on this card.
    requested = storage.with_output_root(cfg)
    gpu = device.detect()
    cfg = device.resolve_run(requested, gpu)
    set_seed(cfg.seed)
    print_banner(cfg)
    staged = storage.on_drive(cfg.run_dir) or bool(cfg.staging_dir)
    local_dir = (cfg.staging_dir or str(storage.staging_dir(cfg.run_name))) if staged else cfg.run_dir
    if staged:
        where = "Run directory is on Google Drive" if storage.on_drive(cfg.run_dir) else "Staging"
        log.info(f"{where}: checkpoints are written to {local_dir} and copied to {cfg.run_dir} when complete")
    main_process = os.environ.get("RANK", "0") == "0"  # under accelerate/torchrun the others only read

    # Resume plan, data and rewards first, reading only: a mistake there leaves nothing written.
    if (done := resume_plan(requested, local_dir).finished) is not None:
        log.info(f"Run {cfg.run_dir} is {done}")
        return None
    dataset = load_chart_dataset(cfg.dataset_name, split="train", subset_size=cfg.subset_size, seed=cfg.seed,
                                 data_dir=cfg.data_dir, preset=cfg.reward_preset)
    reward_funcs = get_reward_funcs(list(cfg.rewards), cfg.reward_preset)

    trainer, mirror = None, None

    def cleanup():
        for callback in trainer.callback_handler.callbacks if trainer is not None else ():
            if getattr(callback, "training_bar", None) is not None:  # the progress bar ends above the one line
                callback.training_bar.close()
                callback.training_bar = None
        if mirror is not None:
            mirror.finish()  # whatever happened, finish the copies already under way

    def out_of_memory():
        release_trainer(trainer)
        device.release_memory()
        return device.OutOfMemory(device.oom_message(cfg, gpu))

    def resume_hint():
        newest = storage.find_resume_checkpoint("auto", [cfg.run_dir, local_dir], warn=False)
        return (f"rerun to resume from {newest.name}" if newest is not None
                else "no checkpoint was saved yet: rerun to start again")

    for flag, folder in (("output_root", cfg.run_dir), ("staging_dir", local_dir)):  # before the run dir is made
        if (blocker := file_in_the_way(folder)) is not None:
            raise ConfigError(f"{flag}: {blocker} is a file where the folder {folder} goes; move it or choose another "
                              f"--{flag.replace('_', '-')}")

    # One writer per run directory, from here until the run ends, however it ends.
    with training_faults(local_dir, lambda: trainer.state.global_step if trainer else 0, resume_hint, out_of_memory,
                         cleanup, hold=RunLock(cfg.run_dir) if main_process else None):
        from transformers.integrations import TensorBoardCallback

        from chartrl_colab.training.callbacks import CheckpointMirror, LogLastStep
        from chartrl_colab.training.trainer import ModeTrainer

        plan = resume_plan(requested, local_dir, warn=False)  # again: another writer may have finished it
        if plan.finished is not None:
            log.info(f"Run {cfg.run_dir} is {plan.finished}")
            return None
        record = start_record(cfg, requested, plan, local_dir) if main_process else {}

        model, processor = load_model(cfg)
        mirror = CheckpointMirror(local_dir, cfg.run_dir, cfg.save_total_limit) if staged else None
        wandb_cb = wandb_callback(requested, local_dir)  # its config as run.json's: what was asked
        if wandb_cb is not None and main_process:
            record["wandb_id"] = wandb_cb.run_id  # a restart on another machine continues the same wandb run
            run_record.write_run_json(cfg.run_dir, record)
        device.reset_peak_memory()
        trainer = ModeTrainer(
            model=model,
            processing_class=processor,
            reward_funcs=reward_funcs,
            args=grpo_args(cfg, output_dir=local_dir, save_total_limit=None if staged else -1, gpu=gpu),
            train_dataset=dataset,
            callbacks=[cb for cb in (mirror, wandb_cb, LogLastStep()) if cb is not None],
            mode=cfg.mode,
            reward_threshold=cfg.reward_threshold,
            lambda_psr=cfg.lambda_psr,
            verifier=cfg.verifier,
        )
        del model  # the trainer holds it; an out-of-memory error releases it through the trainer
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback):
                callback.logging_dir = os.path.join(local_dir, "logs")  # events beside the checkpoints

        with warnings.catch_warnings():
            # TRL 1.16 still calls transformers' old gradient-checkpointing names; not the user's to fix.
            warnings.filterwarnings("ignore", category=FutureWarning,
                                    message=r".*gradient_checkpointing.* is deprecated")
            output = trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
        trainer.save_model(local_dir)
        trainer.save_state()  # the final trainer_state.json beside the adapter, for monitor and eval

    figures = run_figures(output.metrics.get("train_runtime"), trainer.state.global_step - plan.step, gpu)
    if main_process:
        record.update(figures)
        run_record.finish_run_record(cfg.run_dir, record, trainer.state.global_step)
    log.info("✓ Training completed successfully")
    log.info(f"✓ {figures['steps']} steps, {_fmt(figures['seconds_per_step'], 's/step')}; peak GPU memory "
             + (f"{figures['peak_gpu_memory_gb']} GiB ({figures['peak_gpu_reserved_gb']} GiB reserved) on "
                f"{gpu.describe()}" if gpu else "n/a (no GPU)"))
    log.info(f"✓ Model saved to {cfg.run_dir}")
    return trainer


def start_record(cfg: RunConfig, requested: RunConfig, plan: ResumePlan, local_dir: str) -> dict:
    """Prepare the run directory (clear it for ``resume=never``, drop checkpoints newer than the one resumed)
    and write run.json: the request, this start, and what ``"auto"`` became on this card."""
    from chartrl_colab.models import device
    from chartrl_colab.runs import record as run_record
    from chartrl_colab.runs import storage

    os.makedirs(local_dir, exist_ok=True)  # a file in the way is one line here, not deep in the Trainer
    if cfg.resume == "never":
        storage.clear_run(cfg.run_dir, local_dir)
    storage.remove_incomplete(local_dir, newer_than=plan.step)
    if plan.checkpoint:
        log.info(f"Resuming from {plan.checkpoint} (step {plan.step})")
    else:
        log.info(f"No checkpoint to resume from in {cfg.run_dir}: starting fresh" if cfg.resume == "auto"
                 else "Starting fresh (--resume never)")
    record = run_record.start_run_record(cfg.run_dir, requested.to_dict(), plan.checkpoint, plan.step)
    record["resolved"] = {name: getattr(cfg, name) for name in device.RESOLVED}
    run_record.write_run_json(cfg.run_dir, record)
    return record


def run_figures(runtime: float | None, steps: int, gpu) -> dict:
    """What a finished run costs, as run.json records it: steps this session, seconds per step, peak GPU
    memory (GiB of tensors, None on a CPU) and the card.

    >>> run_figures(30.0, 3, None)
    {'steps': 3, 'seconds_per_step': 10.0, 'peak_gpu_memory_gb': None, 'peak_gpu_reserved_gb': None, 'gpu': None}
    """
    from chartrl_colab.models import device

    per_step = round(runtime / steps, 3) if runtime and steps > 0 else None
    return {"steps": steps, "seconds_per_step": per_step, **device.peak_memory(),
            "gpu": gpu.describe() if gpu else None}


def _fmt(value, unit: str) -> str:
    return f"{value:g} {unit}" if value is not None else f"? {unit}"


def release_trainer(trainer) -> None:
    """Drop every reference a trainer holds to the model, optimizer and vLLM engine, so their GPU memory can
    be freed while the trainer lives on (a notebook keeps the one train() returned)."""
    for owner in (trainer, getattr(trainer, "callback_handler", None)):
        for name in ("model", "model_wrapped", "ref_model", "optimizer", "lr_scheduler", "vllm_generation", "llm"):
            if owner is not None and getattr(owner, name, None) is not None:
                setattr(owner, name, None)
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None:
        accelerator.free_memory()  # its own lists of prepared models and optimizers


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: train(config_from_argv(argv)))


if __name__ == "__main__":
    sys.exit(main())
