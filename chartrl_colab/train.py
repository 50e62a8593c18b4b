"""Train a vision-language model on chart QA with one of the four objectives.

    python -m chartrl_colab.train --mode nsr --vlm-name tiny --dataset-name synthetic --seed 2025 \\
        --subset-size 100 --num-epochs 1 --num-generations 4 --batch-size 2 --reward-threshold 0.5

``main()`` reads top to bottom: settings, model, data, rewards, trainer, resume, train, save. Notebooks
call :func:`train` with a :class:`RunConfig`. Multi-GPU: ``accelerate launch --config_file=...
-m chartrl_colab.train`` with the same flags.
"""

from __future__ import annotations

import argparse
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
    print(f"  Rewards: {', '.join(cfg.rewards)} (preset {cfg.reward_preset})")
    if cfg.mode == "grpo":
        print(f"  GRPO advantage from: {'the verifier alone' if cfg.grpo_rewards == 'verifier' else 'the sum of all rewards'}"
              f" (grpo_rewards={cfg.grpo_rewards})")
    spg = cfg.steps_per_generation or cfg.gradient_accumulation_steps
    print(f"  Updates per generation batch: {spg} micro-steps x {cfg.num_iterations} iteration(s), "
          f"{cfg.gradient_accumulation_steps} micro-step(s) per optimizer step")
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
        # None: TRL's default, one generation batch per optimizer step (ratio 1: the update is REINFORCE).
        steps_per_generation=cfg.steps_per_generation,
        num_iterations=cfg.num_iterations,
        # grpo_rewards="verifier": TRL's summed reward is the verifier's alone (grpo's advantage and the logged
        # `reward`); the other rewards are still computed and logged per function.
        reward_weights=[float(cfg.grpo_rewards == "all" or name == cfg.verifier) for name in cfg.rewards],
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
    import torch
    from transformers import set_seed
    from transformers.integrations import TensorBoardCallback

    from chartrl_colab import storage
    from chartrl_colab.callbacks import CheckpointMirror
    from chartrl_colab.data import load_chart_dataset
    from chartrl_colab.models import add_lora, load_model_and_processor
    from chartrl_colab.reward_presets import get_reward_funcs
    from chartrl_colab.trainer import ModeTrainer

    cfg = storage.with_output_root(cfg)
    set_seed(cfg.seed)
    print_banner(cfg)

    # Where checkpoints are written: in place, or on local disk first when the run dir is on Drive.
    on_drive = storage.on_drive(cfg.run_dir) or bool(cfg.staging_dir)
    local_dir = (cfg.staging_dir or str(storage.staging_dir(cfg.run_name))) if on_drive else cfg.run_dir
    if on_drive:
        where = "Run directory is on Google Drive" if storage.on_drive(cfg.run_dir) else "Staging"
        print(f"{where}: checkpoints are written to {local_dir} and copied to {cfg.run_dir} when complete")

    # Which checkpoint to continue from: the newest complete one, wherever it is.
    checkpoint = storage.find_resume_checkpoint(cfg.resume, [cfg.run_dir, local_dir])
    step = storage.checkpoint_step(checkpoint) if checkpoint else 0
    # One process owns the run dir's files; under accelerate/torchrun the others only read them.
    main_process = os.environ.get("RANK", "0") == "0"
    if main_process:
        storage.remove_incomplete(local_dir, newer_than=step)
    if checkpoint:
        print(f"Resuming from {checkpoint} (step {step})")
    else:
        print(f"No checkpoint to resume from in {cfg.run_dir}: starting fresh" if cfg.resume == "auto"
              else "Starting fresh (--resume never)")
    record = storage.start_run_record(cfg.run_dir, cfg.to_dict(), checkpoint, step) if main_process else {}

    # Data before the model: a missing file should fail in seconds, not after loading a 3B model.
    dataset = load_chart_dataset(cfg.dataset_name, split="train", subset_size=cfg.subset_size, seed=cfg.seed,
                                 data_dir=cfg.data_dir, preset=cfg.reward_preset)
    reward_funcs = get_reward_funcs(list(cfg.rewards), cfg.reward_preset)

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

    try:
        with warnings.catch_warnings():
            # TRL 1.16 still calls transformers' old gradient-checkpointing names; not the user's to fix.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*gradient_checkpointing.* is deprecated")
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer.save_model(local_dir)
        trainer.save_state()  # the final trainer_state.json beside the adapter, for monitor and eval
    finally:
        if mirror is not None:
            mirror.finish()  # whatever happened, finish the copies already under way
    if main_process:
        storage.finish_run_record(cfg.run_dir, record, trainer.state.global_step)
    print("✓ Training completed successfully")
    print(f"✓ Model saved to {cfg.run_dir}")
    return trainer


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: train(config_from_argv(argv)))


if __name__ == "__main__":
    sys.exit(main())
