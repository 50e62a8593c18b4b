"""Where runs live, and which checkpoints in them are complete.

A run directory is ``{output_root}/{run_name}/`` holding ``checkpoint-N/`` folders (transformers' layout),
``logs/`` (TensorBoard) and ``run.json``. Every tool that reads runs (resume, monitor, generate) asks this
module for "the newest complete checkpoint", so a checkpoint cut short by a dead kernel is never used.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from chartrl_colab.errors import ConfigError
from chartrl_colab.files import read_json

log = logging.getLogger(__name__)

ROOT_ENV = "CHARTRL_ROOT"
COLAB_MARKER = Path("/var/colab/hostname")
DRIVE_MOUNT = Path("/content/drive")
DRIVE_RUNS = Path("MyDrive/chartrl/runs")  # relative to the mount

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
# Weights a checkpoint may hold: a LoRA adapter or a full model (single file or sharded).
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")
WEIGHT_INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
# torch.save files (zip archives) transformers writes for exact resume.
TORCH_STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")
# What a finished run leaves beside its checkpoints (trainer.save_model and save_state).
FINAL_FILES = ("adapter_model.safetensors", "adapter_config.json", "model.safetensors", WEIGHT_INDEX, TRAINER_STATE,
               "training_args.bin")


# --------------------------------------------------------------------------------------- where runs live
def in_colab(marker: str | Path | None = None) -> bool:
    """True inside a Google Colab runtime: the ``google.colab`` module *and* Colab's hostname file (Kaggle sets
    look-alike variables, and ``google.colab`` alone can be pip-installed)."""
    has_module = "google.colab" in sys.modules or importlib.util.find_spec("google.colab") is not None
    return has_module and Path(marker or COLAB_MARKER).exists()


def drive_mounted(mount: str | Path | None = None) -> bool:
    """True when Google Drive's MyDrive folder is under ``mount``."""
    return (Path(mount or DRIVE_MOUNT) / "MyDrive").is_dir()


def mount_drive(mount: str | Path | None = None, marker: str | Path | None = None) -> bool:
    """Mount Google Drive in Colab; True when mounted. Outside Colab, or with no front end to authorise the
    mount (papermill's kernel), it says so and returns False."""
    if drive_mounted(mount):
        return True
    if not in_colab(marker):
        log.info("Not in Colab: Google Drive is not mounted; runs stay on this machine.")
        return False
    try:
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount(str(mount or DRIVE_MOUNT))
    except Exception as err:  # noqa: BLE001 - any failure means "no Drive", which the caller handles
        log.warning("could not mount Google Drive (%s); runs stay on this machine", err)
        return False
    return drive_mounted(mount)


def default_output_root(env=None, mount: str | Path | None = None, marker: str | Path | None = None) -> Path:
    """Where run directories go without ``--output-root``: ``$CHARTRL_ROOT``; in Colab with Drive mounted
    ``{mount}/MyDrive/chartrl/runs``, without it ``/content/runs`` (lost at disconnect); elsewhere ``./runs``."""
    env = os.environ if env is None else env
    if env.get(ROOT_ENV):
        return Path(env[ROOT_ENV])
    if in_colab(marker):
        return Path(mount or DRIVE_MOUNT) / DRIVE_RUNS if drive_mounted(mount) else Path("/content/runs")
    return Path("runs")


def with_output_root(cfg):
    """``cfg``, or a copy with an empty ``output_root`` set to :func:`default_output_root`: the machine decides,
    so it is resolved when a run is located, not in the settings."""
    return cfg if cfg.output_root else dataclasses.replace(cfg, output_root=str(default_output_root()))


# ---------------------------------------------------------------------------------- complete checkpoints
def checkpoint_step(path: str | Path) -> int | None:
    """The step of a ``checkpoint-N`` folder, or None for any other name.

    >>> checkpoint_step("runs/x/checkpoint-150"), checkpoint_step("runs/x/logs")
    (150, None)
    """
    m = CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


# The trainer_state.json fields a resume reads (transformers divides train_batch_size; monitor reads log_history).
STATE_FIELDS = {"global_step": int, "train_batch_size": int, "log_history": list}


def state_problem(state, step: int | None = None) -> str | None:
    """Why a parsed ``trainer_state.json`` cannot be resumed from or read (None: it can); ``step``: the N of its
    ``checkpoint-N`` folder, which ``global_step`` must match.

    >>> state_problem({"global_step": 4, "train_batch_size": 8, "log_history": []}, step=4) is None
    True
    >>> state_problem({})
    'trainer_state.json lacks global_step, train_batch_size, log_history'
    """
    if not isinstance(state, dict):
        return f"{TRAINER_STATE} is not a JSON object"
    missing = [k for k, kind in STATE_FIELDS.items() if type(state.get(k)) is not kind]  # a bool is no step
    if missing:
        return f"{TRAINER_STATE} lacks {', '.join(missing)}"
    if step is not None and state["global_step"] != step:
        return f"{TRAINER_STATE} says global_step {state['global_step']}, not {step}"
    return None


def checkpoint_problem(path: str | Path) -> str | None:
    """:func:`inspect_checkpoint`'s problem alone."""
    return inspect_checkpoint(path)[0]


def inspect_checkpoint(path: str | Path) -> tuple[str | None, dict | None]:
    """``(why the checkpoint folder is incomplete, None)``, or ``(None, its parsed trainer_state.json)`` when it
    is complete as the README's "Resume" says (the state file goes first: transformers writes it last)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_dir():
        return "not a directory", None
    try:
        state = read_json(path / TRAINER_STATE)
    except FileNotFoundError:
        return f"no {TRAINER_STATE}", None
    except (OSError, ValueError) as e:
        return f"{TRAINER_STATE} does not parse ({e})", None
    if (problem := state_problem(state, checkpoint_step(path))) is not None:
        return problem, None
    if (path / ADAPTER_CONFIG).exists():
        try:
            if not isinstance(read_json(path / ADAPTER_CONFIG), dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            return f"{ADAPTER_CONFIG} does not parse ({e})", None
    weights = [path / name for name in WEIGHT_FILES if (path / name).exists()]
    index = path / WEIGHT_INDEX
    if index.exists():
        try:
            shards = set(read_json(index)["weight_map"].values())
        except (OSError, ValueError, KeyError) as e:
            return f"{WEIGHT_INDEX} does not parse ({e})", None
        weights += [path / s for s in sorted(shards)]
    if not weights:
        return "no weights (adapter_model.safetensors or model.safetensors)", None
    for w in weights:
        if not w.exists():
            return f"{w.name} is missing", None
        try:  # safetensors opens a file only when its header covers exactly the file's bytes
            with safe_open(str(w), framework="numpy") as tensors:
                tensors.keys()
        except (OSError, SafetensorError) as e:
            return f"{w.name} is truncated or damaged ({e})", None
    for f in [path / name for name in TORCH_STATE_FILES if (path / name).exists()]:
        try:
            with zipfile.ZipFile(f) as z:
                z.namelist()
        except (OSError, zipfile.BadZipFile) as e:
            return f"{f.name} is not whole ({e})", None
    return None, state


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-N`` folder in a run directory, oldest (lowest N) first."""
    run_dir = Path(run_dir)
    found = run_dir.iterdir() if run_dir.is_dir() else ()
    return sorted((p for p in found if p.is_dir() and checkpoint_step(p) is not None), key=checkpoint_step)


def latest_checkpoint(run_dir: str | Path, warn: bool = False) -> Path | None:
    """The newest complete checkpoint in a run directory, or None; ``warn``: say which newer ones are skipped."""
    found = latest_checkpoint_state(run_dir, warn)
    return found[0] if found else None


def latest_checkpoint_state(run_dir: str | Path, warn: bool = False) -> tuple[Path, dict] | None:
    """Like :func:`latest_checkpoint`, with that checkpoint's parsed ``trainer_state.json``."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem, state = inspect_checkpoint(ckpt)
        if problem is None:
            return ckpt, state
        if warn:
            log.warning("skipping incomplete checkpoint %s: %s", ckpt, problem)
    return None


def remove_incomplete(run_dir: str | Path, newer_than: int) -> None:
    """Delete incomplete ``checkpoint-N`` folders with N > ``newer_than`` (a kill mid-save): the resumed run saves
    those steps again, and transformers' rotation would count them."""
    for ckpt in list_checkpoints(run_dir):
        if checkpoint_step(ckpt) > newer_than and (problem := checkpoint_problem(ckpt)) is not None:
            log.warning("removing incomplete checkpoint %s (%s)", ckpt, problem)
            shutil.rmtree(ckpt, ignore_errors=True)


def clear_run(run_dir: str | Path, *more_dirs) -> None:
    """Start a run directory over (``--resume never``): delete its checkpoints, final model and logs, saying so
    (left there, the next ``--resume auto`` would take them for this run's)."""
    for d in dict.fromkeys(Path(p) for p in (run_dir, *more_dirs)):
        old = [*list_checkpoints(d), *sorted(d.glob(PARTIAL_PREFIX + "*")), *(d / n for n in FINAL_FILES),
               d / "logs"]
        if old := [p for p in old if p.exists()]:
            log.info("--resume never: deleting the earlier run in %s: %s", d, ", ".join(p.name for p in old))
        for p in old:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def find_resume_checkpoint(resume: str, run_dirs, warn: bool = True) -> Path | None:
    """The checkpoint a run continues from: for ``"auto"`` the newest complete one among ``run_dirs`` (the Drive
    run dir and its staging folder), None for ``"never"`` or none found, else the complete checkpoint at path
    ``resume`` (else ConfigError)."""
    if resume == "never":
        return None
    if resume != "auto":
        path = Path(resume)
        if (problem := checkpoint_problem(path)) is not None:
            raise ConfigError(f"resume={resume!r} is not a checkpoint to resume from: {problem}; "
                              "give a complete checkpoint-N folder, 'auto' or 'never'")
        return path
    found = [c for d in run_dirs if (c := latest_checkpoint(d, warn=warn)) is not None]
    return max(found, key=checkpoint_step, default=None)


# ------------------------------------------------------------------------------- Drive: copy, rotate
def on_drive(path: str | Path, mount: str | Path | None = None) -> bool:
    """True when ``path`` lies on the Google Drive mount (slow FUSE; writes there go through staging)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(mount or DRIVE_MOUNT))


def staging_dir(run_name: str) -> Path:
    """Local-disk folder where a Drive-backed run writes checkpoints before they are copied to Drive."""
    return Path(tempfile.gettempdir()) / "chartrl-staging" / run_name


PARTIAL_PREFIX = ".partial-"  # a copy in progress; never matches checkpoint-N, so never taken as complete


def _copy_files(src: Path, dest: Path, copy) -> None:
    """Copy ``src``'s files over those in ``dest`` (overwritten, not deleted: nothing goes to Drive's Trash), then
    drop the files ``src`` lacks."""
    wanted = set()
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if f.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
            continue
        wanted.add(rel)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        copy(f, dest / rel)
    for f in sorted(dest.rglob("*"), reverse=True):
        if f.is_file() and f.relative_to(dest) not in wanted:
            f.unlink()


def copy_checkpoint(src: str | Path, dest_run_dir: str | Path, keep: int | None, copy=shutil.copyfile,
                    retries: int = 3, wait: float = 2.0) -> Path | None:
    """Copy a complete local checkpoint into ``dest_run_dir``; returns the copy, or None after ``retries`` failures.

    The files go into ``.partial-checkpoint-N``, renamed to ``checkpoint-N`` once all are there, so a copy cut
    short (Drive's "Transport endpoint is not connected", a dead kernel) is never taken for a checkpoint. With
    ``keep`` checkpoints there, the oldest (or a leftover partial copy) is recycled as the target, not deleted:
    files deleted on Drive go to its Trash and keep using quota.
    """
    src, dest_run_dir = Path(src), Path(dest_run_dir)
    dest_run_dir.mkdir(parents=True, exist_ok=True)
    final = dest_run_dir / src.name
    partial = dest_run_dir / (PARTIAL_PREFIX + src.name)
    for attempt in range(1, retries + 1):
        try:
            if not partial.exists():
                leftovers = sorted(dest_run_dir.glob(PARTIAL_PREFIX + "checkpoint-*"))
                existing = [c for c in list_checkpoints(dest_run_dir) if c != final]
                if final.exists():
                    final.rename(partial)  # the same step copied again: overwrite it in place
                elif leftovers:
                    leftovers[0].rename(partial)
                elif keep is not None and len(existing) >= keep:
                    existing[0].rename(partial)
                else:
                    partial.mkdir()
            _copy_files(src, partial, copy)
            partial.rename(final)
            break
        except OSError as err:
            log.warning("copying %s to %s failed (attempt %d/%d): %s", src, dest_run_dir, attempt, retries, err)
            if attempt == retries:
                return None
            time.sleep(wait * attempt)
    if keep is not None:
        for old in list_checkpoints(dest_run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def mirror_files(src: str | Path, dest: str | Path, names=None, copy=shutil.copyfile) -> None:
    """Copy the files of ``src`` (only under its entries ``names``, if given) into ``dest``, skipping unchanged
    ones and checkpoints; never raises. For TensorBoard events, the final adapter, wandb's offline files."""
    src, dest = Path(src), Path(dest)
    try:
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            top = rel.parts[0]
            if f.is_dir() or (names is not None and top not in names) or checkpoint_step(top) is not None:
                continue
            target = dest / rel
            st = f.stat()
            if target.exists() and target.stat().st_size == st.st_size and target.stat().st_mtime >= st.st_mtime:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            copy(f, target)
    except OSError as err:
        log.warning("copying %s to %s failed: %s; will try again at the next checkpoint", src, dest, err)


# ------------------------------------------------------------------------------------------- helpers
def safe_name(label: str) -> str:
    """A label as a file or folder name.
    >>> safe_name("W-REINFORCE λ=0.1"), safe_name("runs/psr@4"), safe_name("///")
    ('W-REINFORCE_0.1', 'runs_psr@4', 'run')
    """
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", label).strip("_") or "run"


def jsonable(obj):
    """``obj`` for ``json.dumps``: non-finite floats as None, numpy/torch scalars as numbers, dataclasses as dicts,
    anything else as its string.

    >>> jsonable({"x": float("nan"), "p": Path("runs"), "t": (1, 2)})
    {'x': None, 'p': 'runs', 't': [1, 2]}
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
