"""When a run directory may be continued: the settings that must match its ``run.json``, and when it is finished.

A new learning rate, threshold or number of generations would make one run of two; where the run is stored, how
often it logs and saves, and how far it goes may change (README, "Settings are checked on resume"). Pure.
"""

from __future__ import annotations

import json

from chartrl_colab.errors import ConfigError

# Settings that do not change what a run is: where it is stored, how often it logs and saves, how it resumes.
FREE = ("output_root", "staging_dir", "data_dir", "logging_steps", "save_steps", "save_total_limit", "report_to",
        "resume", "output_dir", "logging_dir", "logging_first_step", "logging_strategy", "save_strategy",
        "log_completions", "num_completions_to_print", "disable_tqdm", "dataloader_num_workers", "push_to_hub")
# How far a run goes: may be raised (num_epochs: the name older run.json files use).
EXTENT = ("max_steps", "num_train_epochs", "num_epochs")


def _raised(name: str, old, new) -> bool:
    if name == "max_steps":  # -1: run the epochs
        return old != -1 and (new == -1 or new > old)
    return isinstance(old, (int, float)) and new > old


def changed_settings(recorded: dict, current: dict) -> list[tuple[str, object, object]]:
    """``(name, recorded value, new value)`` for each setting that differs and may not.

    >>> changed_settings({"learning_rate": 1e-6, "max_steps": 2, "logging_steps": 1},
    ...                  {"learning_rate": 1e-5, "max_steps": 4, "logging_steps": 5, "lora_r": 8})
    [('learning_rate', 1e-06, 1e-05)]
    """
    out = []
    for name, new in current.items():
        if name in FREE or name not in recorded:  # an older run.json's missing setting is not compared
            continue
        old, new = recorded[name], json.loads(json.dumps(new))  # tuples as the JSON lists run.json holds
        if old != new and not (name in EXTENT and _raised(name, old, new)):
            out.append((name, old, new))
    return out


def check_same_settings(run_dir, recorded: dict, current: dict) -> None:
    """Raise ConfigError naming each changed setting with both values and the ways out."""
    if changed := changed_settings(recorded, current):
        diffs = ", ".join(f"{name} {old!r} -> {new!r}" for name, old, new in changed)
        raise ConfigError(f"run directory {run_dir} was trained with other settings ({diffs}); rerun with the run's "
                          "settings to resume it, or start it over with --resume never, or give the new settings "
                          "their own run (another --output-root or --seed)")


def extends(recorded: dict, current: dict, step: int) -> bool:
    """True when ``current`` trains past a run that ended at ``step`` (``max_steps``/``num_epochs`` raised)."""
    max_steps = current.get("max_steps", -1)
    if max_steps > 0:
        return max_steps > step
    if recorded.get("max_steps", -1) != -1:
        return True  # was cut at a step count, now runs its epochs
    epochs = current.get("num_train_epochs", current.get("num_epochs", 0))
    return epochs > recorded.get("num_train_epochs", recorded.get("num_epochs", epochs))


def finished(record: dict | None, current: dict) -> str | None:
    """Why a run needs no more training (its ``run.json`` says it ended, and ``current`` goes no further), or None."""
    if not record or record.get("ended") is None:
        return None
    step = record.get("global_step", 0)
    if extends(record.get("config", {}), current, step):
        return None
    return (f"finished at step {step} ({record['ended']}); nothing to do. To train further raise --max-steps or "
            "--num-epochs; to train it again from scratch use --resume never")
