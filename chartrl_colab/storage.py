"""Where runs live, and which checkpoints in them are complete.

A run directory is ``{output_root}/{run_name}/`` holding ``checkpoint-N/`` folders (transformers' layout),
``logs/`` (TensorBoard) and ``run.json``. Every tool that reads runs (resume, monitor, generate) asks this
module for "the newest complete checkpoint", so a checkpoint cut short by a dead kernel is never used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import sys
import zipfile
from pathlib import Path

ROOT_ENV = "CHARTRL_ROOT"
COLAB_MARKER = Path("/var/colab/hostname")
DRIVE_MOUNT = Path("/content/drive")
DRIVE_RUNS = Path("MyDrive/chartrl/runs")  # relative to the mount
RUN_JSON = "run.json"

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
# Weights a checkpoint may hold: a LoRA adapter or a full model (single file or sharded).
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")
WEIGHT_INDEX = "model.safetensors.index.json"
# torch.save files (zip archives) transformers writes for exact resume.
TORCH_STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")


# --------------------------------------------------------------------------------------- where runs live
def in_colab(marker: str | Path = COLAB_MARKER) -> bool:
    """True inside a Google Colab runtime.

    Both the ``google.colab`` module and Colab's hostname file must be there: Kaggle and other hosted
    notebooks set look-alike environment variables, and ``google.colab`` alone can be pip-installed.
    """
    has_module = "google.colab" in sys.modules or importlib.util.find_spec("google.colab") is not None
    return has_module and Path(marker).exists()


def drive_mounted(mount: str | Path = DRIVE_MOUNT) -> bool:
    """True when Google Drive is mounted at ``mount`` (its MyDrive folder is there)."""
    return (Path(mount) / "MyDrive").is_dir()


def mount_drive(mount: str | Path = DRIVE_MOUNT, marker: str | Path = COLAB_MARKER) -> bool:
    """Mount Google Drive in Colab; True when it is mounted afterwards.

    Outside Colab, or in a kernel with no front end to authorise the mount (papermill's), this says so
    and returns False: runs then go wherever ``output_root`` points.
    """
    if drive_mounted(mount):
        return True
    if not in_colab(marker):
        print("Not in Colab: Google Drive is not mounted; runs stay on this machine.")
        return False
    try:
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount(str(mount))
    except Exception as err:  # noqa: BLE001 - any failure means "no Drive", which the caller handles
        print(f"Could not mount Google Drive ({err}); runs stay on this machine.")
        return False
    return drive_mounted(mount)


def default_output_root(env=None, mount: str | Path = DRIVE_MOUNT, marker: str | Path = COLAB_MARKER) -> Path:
    """Where run directories go when ``--output-root`` is not given.

    ``$CHARTRL_ROOT`` if set; in Colab with Drive mounted, ``{mount}/MyDrive/chartrl/runs`` (survives a
    disconnect); in Colab without Drive, ``/content/runs`` (lost at disconnect); elsewhere ``./runs``.
    """
    env = os.environ if env is None else env
    if env.get(ROOT_ENV):
        return Path(env[ROOT_ENV])
    if in_colab(marker):
        return Path(mount) / DRIVE_RUNS if drive_mounted(mount) else Path("/content/runs")
    return Path("runs")


def read_run_json(run_dir: str | Path) -> dict | None:
    """The ``run.json`` of a run directory (``config``, versions, times, resumes), or None if absent."""
    path = Path(run_dir) / RUN_JSON
    if not path.exists():
        return None
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------- complete checkpoints
def checkpoint_step(path: str | Path) -> int | None:
    """The step of a ``checkpoint-N`` folder, or None for any other name.

    >>> checkpoint_step("runs/x/checkpoint-150"), checkpoint_step("runs/x/logs")
    (150, None)
    """
    m = CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def _safetensors_ok(path: Path) -> str | None:
    """None when the file's header parses and its size matches the header; else why not."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                return f"{path.name}: header runs past the end of the file"
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError) as e:
        return f"{path.name}: {e}"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{path.name}: {size} bytes, header says {8 + n + end} (truncated)"
    return None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete.

    Complete means: ``trainer_state.json`` parses (transformers writes it last), every weight file's
    safetensors header is whole and matches its size, and the optimizer/scheduler/RNG files present are
    whole zip archives (a truncated one has no end-of-archive record).
    """
    path = Path(path)
    if not path.is_dir():
        return "not a directory"
    try:
        json.loads((path / TRAINER_STATE).read_text())
    except FileNotFoundError:
        return f"no {TRAINER_STATE}"
    except (OSError, ValueError) as e:
        return f"{TRAINER_STATE} does not parse ({e})"
    weights = [path / name for name in WEIGHT_FILES if (path / name).exists()]
    index = path / WEIGHT_INDEX
    if index.exists():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError) as e:
            return f"{WEIGHT_INDEX} does not parse ({e})"
        weights += [path / s for s in sorted(shards)]
    if not weights:
        return "no weights (adapter_model.safetensors or model.safetensors)"
    for w in weights:
        if not w.exists():
            return f"{w.name} is missing"
        if (problem := _safetensors_ok(w)) is not None:
            return problem
    for name in TORCH_STATE_FILES:
        f = path / name
        if f.exists():
            try:
                with zipfile.ZipFile(f) as z:
                    z.namelist()
            except (OSError, zipfile.BadZipFile) as e:
                return f"{name} is not whole ({e})"
    return None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-N`` folder in a run directory, oldest (lowest N) first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run directory, oldest first."""
    return [p for p in list_checkpoints(run_dir) if checkpoint_problem(p) is None]


def latest_checkpoint(run_dir: str | Path, warn=None) -> Path | None:
    """The newest complete checkpoint in a run directory, or None.

    Newer checkpoints that are incomplete are skipped; ``warn`` (e.g. ``print``) is called once for each,
    naming it and saying why.
    """
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        if warn is not None:
            warn(f"warning: skipping incomplete checkpoint {ckpt}: {problem}")
    return None
