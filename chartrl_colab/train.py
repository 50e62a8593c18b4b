"""Train a vision-language model on chart QA with one of the four objectives.

    python -m chartrl_colab.train --mode nsr --vlm-name tiny --dataset-name synthetic --seed 2025 \\
        --subset-size 100 --num-epochs 1 --num-generations 4 --batch-size 2 --reward-threshold 0.5

``main()`` reads top to bottom: settings, resume plan (settings match run.json? finished?), data and rewards
(nothing written yet), the run lock, run.json, model, trainer, train, save. Notebooks
call :func:`train` with a :class:`RunConfig`. Multi-GPU: ``accelerate launch --config_file=...
-m chartrl_colab.train`` with the same flags.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import warnings

from chartrl_colab.cli import parser_for, run_cli
from chartrl_colab.config import RunConfig

BANNER_WIDTH = 60


# ---------------------------------------------------------------------------------------------- flags
def build_parser() -> argparse.ArgumentParser:
    """One flag per RunConfig field, same name with dashes, the field's help text and default."""
    return parser_for(RunConfig, "python -m chartrl_colab.train", __doc__.split("\n")[0])


def config_from_argv(argv: list[str] | None = None) -> RunConfig:
    args = build_parser().parse_args(argv)
    return RunConfig(**vars(args))


# ------------------------------------------------------------------------------------ pieces of a run
def print_banner(cfg: RunConfig) -> None:
    from chartrl_colab.config import MODE_DESCRIPTIONS

    line = "=" * BANNER_WIDTH
    print(line)
    print(f"{cfg.mode.upper()} TRAINING CONFIGURATION:")
    print(f"  Training mode: {cfg.mode}")
    print(f"  Model: {cfg.vlm_name} (init: {cfg.init})")
    print(f"  Dataset: {cfg.dataset_name}")
    print(f"  Training samples: {cfg.subset_size if cfg.subset_size is not None else 'all'}")
    print(f"  Epochs: {cfg.num_epochs:g}" + (f" (max steps: {cfg.max_steps})" if cfg.max_steps > 0 else ""))
    print(f"  Batch size: {cfg.batch_size} prompts x {cfg.num_generations} generations")
    print(f"  Generations per sample: {cfg.num_generations}")
    print(f"  Reward threshold: {cfg.reward_threshold} (verifier: {cfg.verifier})")
    if cfg.mode == "w-reinforce":
        print(f"  Lambda PSR: {cfg.lambda_psr}")
    print(f"  Rewards: {', '.join(cfg.rewards)}")
    print(f"  Learning rate: {cfg.learning_rate:g} | temperature: {cfg.temperature} | clip: {cfg.epsilon} | "
          f"beta: {cfg.beta} | loss: {cfg.loss_type}")
    print(f"  Run directory: {cfg.run_dir}")
    print(line)
    print(f"✓ {MODE_DESCRIPTIONS[cfg.mode]}")


def grpo_args(cfg: RunConfig, output_dir: str | None = None, save_total_limit: int | None = -1):
    """TRL's GRPOConfig for a run: the paper's recipe, the seed's logging and checkpoint cadence.

    ``output_dir`` is where the Trainer writes checkpoints (the run dir, or local staging for a Drive run);
    ``save_total_limit=None`` turns the Trainer's own rotation off (the Drive mirror rotates instead).
    """
    import torch
    from trl import GRPOConfig

    cuda = torch.cuda.is_available()
    return GRPOConfig(
        output_dir=output_dir or cfg.run_dir,
        run_name=cfg.run_name,
        seed=cfg.seed,
        # TRL counts completions per device; a user counts prompts.
        per_device_train_batch_size=cfg.batch_size * cfg.num_generations,
        num_generations=cfg.num_generations,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        temperature=cfg.temperature,
        max_completion_length=cfg.max_completion_length,
        epsilon=cfg.epsilon,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit if save_total_limit == -1 else save_total_limit,
        # wandb gets our own guarded callback (see callbacks.py), not the Trainer's.
        report_to=[r for r in cfg.report_to if r != "wandb"] or "none",
        activation_checkpointing=not cfg.disable_gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        remove_unused_columns=False,  # the rewards read the gold columns
    )


def wandb_callback(cfg: RunConfig, local_dir: str):
    """The guarded wandb logger for a run, or None when wandb is not asked for or not installed."""
    if "wandb" not in cfg.report_to:
        return None
    if importlib.util.find_spec("wandb") is None:
        print("wandb is not installed: logging to TensorBoard only (pip install wandb)")
        return None
    from chartrl_colab.callbacks import SafeWandbCallback, wandb_run_id
    from chartrl_colab.storage import read_run_json

    record = read_run_json(cfg.run_dir) or {}
    run_id = record.get("wandb_id") or wandb_run_id(cfg.run_dir)
    tags = [cfg.mode, cfg.vlm_name, cfg.dataset_name, f"seed-{cfg.seed}"]
    return SafeWandbCallback(cfg.run_name, cfg.to_dict(), tags, run_id, local_dir)


# ------------------------------------------------------------------------------------------------ run
def train(cfg: RunConfig):
    """Run one training job; returns the trainer (its ``state.log_history`` holds the metrics).

    A run directory on Google Drive is written through local staging: checkpoints land on local disk and
    each complete one is copied to Drive in the background (see :mod:`chartrl_colab.storage`).
    """
    from transformers import set_seed

    from chartrl_colab import storage
    from chartrl_colab.data import load_chart_dataset
    from chartrl_colab.rewards import get_reward_funcs
    from chartrl_colab.run_lock import RunLock

    cfg = storage.with_output_root(cfg)
    set_seed(cfg.seed)
    print_banner(cfg)

    # Where checkpoints are written: in place, or on local disk first when the run dir is on Drive.
    on_drive = storage.on_drive(cfg.run_dir) or bool(cfg.staging_dir)
    local_dir = (cfg.staging_dir or str(storage.staging_dir(cfg.run_name))) if on_drive else cfg.run_dir
    if on_drive:
        where = "Run directory is on Google Drive" if storage.on_drive(cfg.run_dir) else "Staging"
        print(f"{where}: checkpoints are written to {local_dir} and copied to {cfg.run_dir} when complete")

    # Settings and data first, reading only: a mistake there leaves nothing written.
    main_process = os.environ.get("RANK", "0") == "0"  # under accelerate/torchrun the others only read
    if (done := resume_plan(cfg, local_dir)[2]) is not None:
        print(f"Run {cfg.run_dir} is {done}")
        return None
    dataset = load_chart_dataset(cfg.dataset_name, split="train", subset_size=cfg.subset_size, seed=cfg.seed,
                                 data_dir=cfg.data_dir)
    reward_funcs = get_reward_funcs(list(cfg.rewards))

    # One writer per run directory, from here until the run ends, however it ends.
    with RunLock(cfg.run_dir) if main_process else contextlib.nullcontext():
        return _train_locked(cfg, local_dir, on_drive, main_process, dataset, reward_funcs)


def resume_plan(cfg: RunConfig, local_dir: str, warn=print):
    """``(run.json record, checkpoint to resume from or None, why the run is finished or None)``.

    Refuses (ConfigError) to continue a run recorded with other settings (see :mod:`chartrl_colab.resume_rules`).
    """
    from chartrl_colab import resume_rules, storage

    record = storage.read_run_json(cfg.run_dir)
    checkpoint = storage.find_resume_checkpoint(cfg.resume, [cfg.run_dir, local_dir], warn=warn)
    if cfg.resume == "never" or not record:
        return record, checkpoint, None
    current = cfg.to_dict()
    if checkpoint is not None or record.get("ended") is not None:
        resume_rules.check_same_settings(cfg.run_dir, record.get("config") or {}, current)
    # A finished run stays finished under "auto"; a checkpoint given by path is an explicit request to go back.
    return record, checkpoint, resume_rules.finished(record, current) if cfg.resume == "auto" else None


def _train_locked(cfg: RunConfig, local_dir: str, on_drive: bool, main_process: bool, dataset, reward_funcs):
    import torch
    from transformers.integrations import TensorBoardCallback

    from chartrl_colab import storage
    from chartrl_colab.callbacks import CheckpointMirror
    from chartrl_colab.models import add_lora, load_model_and_processor
    from chartrl_colab.trainer import ModeTrainer

    # Read again under the lock: another writer may have finished the run meanwhile.
    record, checkpoint, done = resume_plan(cfg, local_dir, warn=lambda *a: None)
    if done is not None:
        print(f"Run {cfg.run_dir} is {done}")
        return None
    step = storage.checkpoint_step(checkpoint) if checkpoint else 0
    if main_process:
        os.makedirs(local_dir, exist_ok=True)  # a file in the way is one line here, not deep in the Trainer
        if cfg.resume == "never":
            storage.clear_run(cfg.run_dir, local_dir)
        storage.remove_incomplete(local_dir, newer_than=step)
    if checkpoint:
        print(f"Resuming from {checkpoint} (step {step})")
    else:
        print(f"No checkpoint to resume from in {cfg.run_dir}: starting fresh" if cfg.resume == "auto"
              else "Starting fresh (--resume never)")
    record = storage.start_run_record(cfg.run_dir, cfg.to_dict(), checkpoint, step) if main_process else {}

    args = grpo_args(cfg, output_dir=local_dir, save_total_limit=None if on_drive else -1)
    model, processor = load_model_and_processor(
        cfg.vlm_name, init=cfg.init, load_in_4bit=cfg.load_in_4bit, seed=cfg.seed,
        dtype=torch.bfloat16 if args.bf16 else torch.float32,
    )
    if cfg.use_lora:
        # The Trainer turns gradient checkpointing on from GRPOConfig; don't do it twice.
        model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                         gradient_checkpointing=False)
        model.print_trainable_parameters()

    mirror = CheckpointMirror(local_dir, cfg.run_dir, cfg.save_total_limit) if on_drive else None
    wandb_cb = wandb_callback(cfg, local_dir)
    if wandb_cb is not None and main_process:
        record["wandb_id"] = wandb_cb.run_id  # a restart on another machine continues the same wandb run
        storage.write_run_json(cfg.run_dir, record)
    trainer = ModeTrainer(
        model=model,
        processing_class=processor,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        callbacks=[cb for cb in (mirror, wandb_cb) if cb is not None],
        mode=cfg.mode,
        reward_threshold=cfg.reward_threshold,
        lambda_psr=cfg.lambda_psr,
        verifier=cfg.verifier,
    )
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = os.path.join(local_dir, "logs")  # events beside the checkpoints

    stopped_at = None
    try:
        with warnings.catch_warnings():
            # TRL 1.16 still calls transformers' old gradient-checkpointing names; not the user's to fix.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*gradient_checkpointing.* is deprecated")
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer.save_model(local_dir)
        trainer.save_state()  # the final trainer_state.json beside the adapter, for monitor and eval
    except KeyboardInterrupt:
        stopped_at = trainer.state.global_step
    except Exception as err:
        if not any(sign in str(err) for sign in WRITE_FAILED):
            raise
        stopped_at = err
    finally:
        for callback in trainer.callback_handler.callbacks:  # the progress bar ends above the one line
            if getattr(callback, "training_bar", None) is not None:
                callback.training_bar.close()
                callback.training_bar = None
        if mirror is not None:
            mirror.finish()  # whatever happened, finish the copies already under way
    if stopped_at is not None:
        raise _stopped(cfg, local_dir, stopped_at)
    if main_process:
        storage.finish_run_record(cfg.run_dir, record, trainer.state.global_step)
    print("✓ Training completed successfully")
    print(f"✓ Model saved to {cfg.run_dir}")
    return trainer


# What PyTorch and safetensors say when a write fails for want of space (torch.save: "[enforce fail at
# inline_container.cc:...] ... unexpected pos"; safetensors: "No space left on device (os error 28)").
WRITE_FAILED = ("inline_container", "No space left on device", "os error 28", "file write failed")


def _stopped(cfg: RunConfig, local_dir: str, why) -> BaseException:
    """The one line for a run stopped by Ctrl-C (a KeyboardInterrupt) or a failed write (a ConfigError)."""
    from chartrl_colab import storage
    from chartrl_colab.errors import ConfigError

    newest = storage.find_resume_checkpoint("auto", [cfg.run_dir, local_dir], warn=lambda *a: None)
    then = (f"rerun to resume from {newest.name}" if newest is not None
            else "no checkpoint was saved yet: rerun to start again")
    if isinstance(why, int):
        return KeyboardInterrupt(f"interrupted at step {why}; {then}")
    first = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
    return ConfigError(f"writing to {local_dir} failed ({first}); the disk is probably full: free space there (or "
                       f"choose another --output-root/--staging-dir) and {then}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: train(config_from_argv(argv)))


if __name__ == "__main__":
    sys.exit(main())
