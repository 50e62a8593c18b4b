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
_DETECT = object()  # "ask torch which GPU this is" (tests pass a made-up device.Gpu or None instead)


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
    print(f"  Precision: {cfg.precision} | 4-bit: {cfg.load_in_4bit} | gradient checkpointing: "
          f"{not cfg.disable_gradient_checkpointing} | vLLM: {cfg.use_vllm} | max pixels: {cfg.max_pixels}")
    print(f"  Run directory: {cfg.run_dir}")
    print(line)
    print(f"✓ {MODE_DESCRIPTIONS[cfg.mode]}")


def grpo_args(cfg: RunConfig, output_dir: str | None = None, save_total_limit: int | None = -1, gpu=_DETECT):
    """TRL's GRPOConfig for a run: the paper's recipe, the seed's logging and checkpoint cadence.

    ``output_dir`` is where the Trainer writes checkpoints (the run dir, or local staging for a Drive run);
    ``save_total_limit=None`` turns the Trainer's own rotation off (the Drive mirror rotates instead).
    """
    from trl import GRPOConfig

    return GRPOConfig(**grpo_kwargs(cfg, output_dir, save_total_limit, gpu))


def grpo_kwargs(cfg: RunConfig, output_dir: str | None = None, save_total_limit: int | None = -1,
                gpu=_DETECT) -> dict:
    """The GRPOConfig arguments of :func:`grpo_args` for ``gpu`` (a :class:`chartrl_colab.models.device.Gpu`, None for
    a CPU; default: this machine's), its ``"auto"`` settings decided by :func:`chartrl_colab.models.device.resolve_run`."""
    from chartrl_colab.models import device

    gpu = device.detect() if gpu is _DETECT else gpu
    cfg = device.resolve_run(cfg, gpu, quiet=True)
    vllm = {"use_vllm": True, "vllm_mode": "colocate",  # vLLM inside this process, sharing the GPU
            "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization} if cfg.use_vllm else {}
    return dict(
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
        # The compute capability decides (device.precision_for): torch calls a T4 bf16-capable, emulating it.
        **device.trainer_flags(cfg.precision),
        use_cpu=gpu is None,
        remove_unused_columns=False,  # the rewards read the gold columns
        **vllm,
    )


def wandb_callback(cfg: RunConfig, local_dir: str):
    """The guarded wandb logger for a run, or None when wandb is not asked for or not installed."""
    if "wandb" not in cfg.report_to:
        return None
    if importlib.util.find_spec("wandb") is None:
        print("wandb is not installed: logging to TensorBoard only (pip install wandb)")
        return None
    from chartrl_colab.runs.storage import read_run_json
    from chartrl_colab.training.callbacks import SafeWandbCallback, wandb_run_id

    record = read_run_json(cfg.run_dir) or {}
    run_id = record.get("wandb_id") or wandb_run_id(cfg.run_dir)
    tags = [cfg.mode, cfg.vlm_name, cfg.dataset_name, f"seed-{cfg.seed}"]
    return SafeWandbCallback(cfg.run_name, cfg.to_dict(), tags, run_id, local_dir)


# ------------------------------------------------------------------------------------------------ run
def train(cfg: RunConfig):
    """Run one training job; returns the trainer (its ``state.log_history`` holds the metrics), or None when
    the run had finished already (a rerun of a finished run changes nothing).

    A run directory on Google Drive is written through local staging: checkpoints land on local disk and
    each complete one is copied to Drive in the background (see :mod:`chartrl_colab.runs.storage`).
    """
    from transformers import set_seed

    from chartrl_colab.data.loading import load_chart_dataset
    from chartrl_colab.errors import ConfigError
    from chartrl_colab.files import file_in_the_way
    from chartrl_colab.models import device
    from chartrl_colab.rewards.presets import get_reward_funcs
    from chartrl_colab.runs import storage
    from chartrl_colab.runs.lock import RunLock

    requested = storage.with_output_root(cfg)  # what was asked: run.json's config, compared on a resume
    gpu = device.detect()
    cfg = device.resolve_run(requested, gpu)  # precision, 4-bit, vLLM for this card
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
    if (done := resume_plan(requested, local_dir)[2]) is not None:
        print(f"Run {cfg.run_dir} is {done}")
        return None
    dataset = load_chart_dataset(cfg.dataset_name, split="train", subset_size=cfg.subset_size, seed=cfg.seed,
                                 data_dir=cfg.data_dir, preset=cfg.reward_preset)
    reward_funcs = get_reward_funcs(list(cfg.rewards), cfg.reward_preset)

    for flag, folder in (("output_root", cfg.run_dir), ("staging_dir", local_dir)):  # before the run dir is made
        if (blocker := file_in_the_way(folder)) is not None:
            raise ConfigError(f"{flag}: {blocker} is a file where the folder {folder} goes; move it or choose another "
                              f"--{flag.replace('_', '-')}")

    # One writer per run directory, from here until the run ends, however it ends.
    with RunLock(cfg.run_dir) if main_process else contextlib.nullcontext():
        return _train_locked(cfg, requested, gpu, local_dir, on_drive, main_process, dataset, reward_funcs)


def resume_plan(cfg: RunConfig, local_dir: str, warn=print):
    """``(run.json record, checkpoint to resume from or None, why the run is finished or None)``.

    ``cfg`` is the run's settings as asked (run.json's ``config``). Refuses (ConfigError) to continue a run
    recorded with other settings (see :mod:`chartrl_colab.runs.resume_rules`).
    """
    from chartrl_colab.runs import resume_rules, storage

    record = storage.read_run_json(cfg.run_dir)
    checkpoint = storage.find_resume_checkpoint(cfg.resume, [cfg.run_dir, local_dir], warn=warn)
    if cfg.resume == "never" or not record:
        return record, checkpoint, None
    current = cfg.to_dict()
    if checkpoint is not None or record.get("ended") is not None:
        resume_rules.check_same_settings(cfg.run_dir, record.get("config") or {}, current)
    # A finished run stays finished under "auto"; a checkpoint given by path is an explicit request to go back.
    return record, checkpoint, resume_rules.finished(record, current) if cfg.resume == "auto" else None


def _train_locked(cfg: RunConfig, requested: RunConfig, gpu, local_dir: str, on_drive: bool, main_process: bool,
                  dataset, reward_funcs):
    import torch
    from transformers.integrations import TensorBoardCallback

    from chartrl_colab.models import device
    from chartrl_colab.models.loading import add_lora, load_model_and_processor
    from chartrl_colab.runs import storage
    from chartrl_colab.training.callbacks import CheckpointMirror
    from chartrl_colab.training.log_last_step import LogLastStep
    from chartrl_colab.training.trainer import ModeTrainer

    # Read again under the lock: another writer may have finished the run meanwhile.
    record, checkpoint, done = resume_plan(requested, local_dir, warn=False)
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
    record = storage.start_run_record(cfg.run_dir, requested.to_dict(), checkpoint, step) if main_process else {}
    if main_process:  # what "auto" became on this card: generate loads the model the way it trained
        record["resolved"] = {name: getattr(cfg, name) for name in device.RESOLVED}
        storage.write_run_json(cfg.run_dir, record)

    args = grpo_args(cfg, output_dir=local_dir, save_total_limit=None if on_drive else -1, gpu=gpu)
    device.reset_peak_memory()
    model, processor = load_model_and_processor(
        cfg.vlm_name, init=cfg.init, load_in_4bit=cfg.load_in_4bit, seed=cfg.seed, max_pixels=cfg.max_pixels,
        dtype=device.torch_dtype(device.model_precision(cfg.precision, cfg.use_lora, cfg.load_in_4bit)),
    )
    if cfg.use_lora:
        # The Trainer turns gradient checkpointing on from GRPOConfig; don't do it twice.
        model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                         gradient_checkpointing=False)
        model.print_trainable_parameters()

    mirror = CheckpointMirror(local_dir, cfg.run_dir, cfg.save_total_limit) if on_drive else None
    wandb_cb = wandb_callback(requested, local_dir)  # its config as run.json's: what was asked
    if wandb_cb is not None and main_process:
        record["wandb_id"] = wandb_cb.run_id  # a restart on another machine continues the same wandb run
        storage.write_run_json(cfg.run_dir, record)
    trainer = ModeTrainer(
        model=model,
        processing_class=processor,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        callbacks=[cb for cb in (mirror, wandb_cb, LogLastStep()) if cb is not None],
        mode=cfg.mode,
        reward_threshold=cfg.reward_threshold,
        lambda_psr=cfg.lambda_psr,
        verifier=cfg.verifier,
    )
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = os.path.join(local_dir, "logs")  # events beside the checkpoints

    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    oom, stopped_at, output = False, None, None
    try:
        try:
            with warnings.catch_warnings():
                # TRL 1.16 still calls transformers' old gradient-checkpointing names; not the user's to fix.
                warnings.filterwarnings("ignore", category=FutureWarning, message=r".*gradient_checkpointing.* is deprecated")
                output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except out_of_memory:
            oom = True  # raised below, outside this handler, so the traceback does not pin the model's memory
        if not oom:
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
    if oom:
        release_trainer(trainer)
        del trainer, model
        device.release_memory()
        raise device.OutOfMemory(device.oom_message(cfg, gpu))
    if stopped_at is not None:
        raise _stopped(cfg, local_dir, stopped_at)
    figures = run_figures(output.metrics.get("train_runtime"), trainer.state.global_step - step, gpu)
    if main_process:
        record.update(figures)
        storage.finish_run_record(cfg.run_dir, record, trainer.state.global_step)
    print("✓ Training completed successfully")
    print(f"✓ {figures['steps']} steps, {_fmt(figures['seconds_per_step'], 's/step')}; peak GPU memory "
          + (f"{figures['peak_gpu_memory_gb']} GiB ({figures['peak_gpu_reserved_gb']} GiB reserved) on {gpu.describe()}"
             if gpu else "n/a (no GPU)"))
    print(f"✓ Model saved to {cfg.run_dir}")
    return trainer


def run_figures(runtime: float | None, steps: int, gpu) -> dict:
    """What a finished run costs, as run.json records it: steps this session, seconds per step, peak GPU
    memory (GiB of tensors, None on a CPU) and the card.

    >>> run_figures(30.0, 3, None)
    {'steps': 3, 'seconds_per_step': 10.0, 'peak_gpu_memory_gb': None, 'peak_gpu_reserved_gb': None, 'gpu': None}
    """
    from chartrl_colab.models import device

    per_step = round(runtime / steps, 3) if runtime and steps > 0 else None
    return {"steps": steps, "seconds_per_step": per_step, "peak_gpu_memory_gb": device.peak_memory_gb(),
            "peak_gpu_reserved_gb": device.peak_reserved_gb(), "gpu": gpu.describe() if gpu else None}


def _fmt(value, unit: str) -> str:
    return f"{value:g} {unit}" if value is not None else f"? {unit}"


def release_trainer(trainer) -> None:
    """Drop every reference a trainer holds to the model, optimizer and vLLM engine, so the GPU memory they use
    can be freed although the trainer object itself lives on (a notebook keeps the one train() returned)."""
    for owner in (trainer, getattr(trainer, "callback_handler", None)):
        for name in ("model", "model_wrapped", "ref_model", "optimizer", "lr_scheduler", "vllm_generation", "llm"):
            if owner is not None and getattr(owner, name, None) is not None:
                setattr(owner, name, None)
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None:
        accelerator.free_memory()  # its own lists of prepared models and optimizers


# What PyTorch and safetensors say when a write fails for want of space (torch.save: "[enforce fail at
# inline_container.cc:...] ... unexpected pos"; safetensors: "No space left on device (os error 28)").
WRITE_FAILED = ("inline_container", "No space left on device", "os error 28", "file write failed")


def _stopped(cfg: RunConfig, local_dir: str, why) -> BaseException:
    """The one line for a run stopped by Ctrl-C (a KeyboardInterrupt) or a failed write (a ConfigError)."""
    from chartrl_colab.errors import ConfigError
    from chartrl_colab.runs import storage

    newest = storage.find_resume_checkpoint("auto", [cfg.run_dir, local_dir], warn=False)
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
