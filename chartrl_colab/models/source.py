"""Which weights :mod:`chartrl_colab.generate` samples: a base model, or a trained run's checkpoint on its base.

A run directory stands for its newest complete weights (:func:`newest_weights`). A checkpoint's base model comes
from the run's ``run.json``, else from the adapter's ``base_model_name_or_path`` (an embedded model's cache folder,
or a hub id); a checkpoint of full weights is the model itself.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from chartrl_colab.config import DEFAULT_MAX_PIXELS
from chartrl_colab.errors import ConfigError
from chartrl_colab.files import read_json

log = logging.getLogger(__name__)


@dataclass
class ModelSource:
    """What to load: a base model, optionally with a checkpoint (LoRA adapter or full weights) on top."""

    vlm_name: str
    init: str
    seed: int
    checkpoint: Path | None = None
    run_dir: Path | None = None
    cache_dir: str | None = None  # the embedded model's cache (tiny, tiny-warm), as recorded by the adapter
    load_in_4bit: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    reward_preset: str | None = None  # the preset the run trained with (its prompt and rewards), when known

    def describe(self) -> str:
        base = f"{self.vlm_name} ({self.init}, seed {self.seed})"
        return f"{self.checkpoint} on {base}" if self.checkpoint else base


def embedded_cache_dir(name: str, embedded) -> re.Match | None:
    """``name`` read as a cache folder ``<name>-<version>-<seed>`` of one of the ``embedded`` models, else None.

    >>> embedded_cache_dir("tiny-warm-v1.3-2025", {"tiny", "tiny-warm"}).group("name", "seed")
    ('tiny-warm', '2025')
    """
    names = "|".join(map(re.escape, sorted(embedded, key=len, reverse=True)))  # tiny-warm before tiny
    return re.match(rf"^(?P<name>{names})-(?P<version>[^-]+)-(?P<seed>\d+)$", name)


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """``(checkpoint dir, run dir)`` for a run directory (newest complete checkpoint) or a checkpoint-N folder."""
    from chartrl_colab.runs.storage import checkpoint_problem, checkpoint_step

    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"checkpoint={str(path)!r} is not a directory; pass a run directory or a checkpoint-N folder")
    if checkpoint_step(p) is not None:
        problem = checkpoint_problem(p)
        if problem is not None:
            raise ConfigError(f"checkpoint {p} is incomplete ({problem}); pass its run directory to use the "
                              "newest complete checkpoint")
        return p.resolve(), p.parent.resolve()
    ckpt = newest_weights(p)
    if ckpt is None:
        raise ConfigError(f"{p} holds no complete checkpoint-N folder and no complete final model; pass a run "
                          "directory of chartrl_colab.train or a checkpoint folder")
    return ckpt.resolve(), p.resolve()


def newest_weights(run_dir: Path) -> Path | None:
    """The newest complete weights of a run directory: its newest complete ``checkpoint-N``, or the final model
    at the run root (with the ``trainer_state.json`` written when training ends) when it is complete and of a later
    step (a tie keeps the checkpoint). Logs which, when newer ones were passed or it is the final model."""
    from chartrl_colab.runs.storage import checkpoint_step, inspect_checkpoint, latest_checkpoint_state

    found = latest_checkpoint_state(run_dir, warn=True)
    best, step = (found[0], checkpoint_step(found[0])) if found else (None, -1)
    newest = max((checkpoint_step(c) for c in run_dir.glob("checkpoint-*") if checkpoint_step(c) is not None),
                 default=None)
    if (run_dir / "trainer_state.json").exists():
        problem, state = inspect_checkpoint(run_dir)
        final = state.get("global_step") if problem is None else None
        if isinstance(final, int) and final > step:
            best, step = run_dir, final
        elif problem is not None and found is None:
            log.warning(f"the final model in {run_dir} is incomplete: {problem}")
    if best == run_dir or (best is not None and newest is not None and step < newest):
        what = "the run's final model" if best == run_dir else best.name
        log.info(f"Using {what} ({best}, step {step}): the newest complete weights of {run_dir}")
    return best


def resolve_source(cfg) -> ModelSource:
    """The base model and checkpoint to sample, from the flags (a :class:`chartrl_colab.generate.GenerateConfig`),
    the run's run.json or the adapter config."""
    if not cfg.checkpoint:
        return ModelSource(cfg.vlm_name, cfg.init, cfg.seed, load_in_4bit=cfg.load_in_4bit, max_pixels=cfg.max_pixels)
    from chartrl_colab.models.loading import EMBEDDED_MODELS, MODELS
    from chartrl_colab.runs.record import read_run_json

    ckpt, run_dir = resolve_checkpoint(cfg.checkpoint)
    adapter_file = ckpt / "adapter_config.json"
    base_path = read_json(adapter_file).get("base_model_name_or_path") if adapter_file.exists() else None
    tiny = embedded_cache_dir(Path(base_path).name, EMBEDDED_MODELS) if base_path else None
    cache_dir = str(Path(base_path).parent) if tiny else None
    try:
        run = read_run_json(run_dir) or {}
    except ValueError:  # a torn run.json: fall back to the adapter's record
        run = {}
    run_cfg = {**(run.get("config") or {}), **(run.get("resolved") or {})}  # "auto" as it ran
    if run_cfg.get("vlm_name"):
        return ModelSource(run_cfg["vlm_name"], run_cfg.get("init", "pretrained"), int(run_cfg.get("seed", cfg.seed)),
                           ckpt, run_dir, cache_dir, run_cfg.get("load_in_4bit") is True or cfg.load_in_4bit,
                           run_cfg.get("max_pixels", cfg.max_pixels), reward_preset=run_cfg.get("reward_preset"))
    if tiny:
        return ModelSource(tiny.group("name"), "pretrained", int(tiny.group("seed")), ckpt, run_dir, cache_dir,
                           cfg.load_in_4bit)
    by_hub_id = {hub: name for name, hub in MODELS.items() if hub}
    if base_path in by_hub_id:
        return ModelSource(by_hub_id[base_path], "pretrained", cfg.seed, ckpt, run_dir, None, cfg.load_in_4bit)
    if not adapter_file.exists() and (ckpt / "config.json").exists():  # full weights: the checkpoint is the model
        return ModelSource(cfg.vlm_name, cfg.init, cfg.seed, ckpt, run_dir, None, cfg.load_in_4bit)
    raise ConfigError(f"cannot tell the base model of {ckpt}: {run_dir} has no run.json and the adapter names "
                      f"{base_path!r}; valid bases: the embedded tiny or tiny-warm model or {', '.join(by_hub_id)}")
