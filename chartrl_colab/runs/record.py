"""A run's ``run.json``: its settings, library versions, git commit, start and end times, one entry per start."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from chartrl_colab.config import MODES
from chartrl_colab.errors import ConfigError
from chartrl_colab.files import atomic_path, read_json

log = logging.getLogger(__name__)

RUN_JSON = "run.json"


def read_run_json(run_dir: str | Path) -> dict | None:
    """The ``run.json`` of a run directory (``config``, versions, times, resumes), or None if absent."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except ValueError as err:
        raise ConfigError(f"{path} does not parse ({err}); restore it, or delete it to resume without the settings "
                          "check") from None


_LIBRARIES = ("chartrl-colab", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "wandb")


def run_mode(run_dir: str | Path) -> tuple[str | None, str | None]:
    """(mode, verifier reward name) of a run from its run.json, else the mode from the run's name, else None."""
    try:
        info = read_run_json(run_dir)
    except (OSError, ValueError):
        info = None
    config = (info or {}).get("config") or {}
    mode, verifier = config.get("mode"), config.get("verifier")
    if mode in MODES:
        return mode, verifier
    # Run names start with the mode; "w-reinforce" holds a dash, so try the longest names first.
    name = Path(run_dir).name
    return next((m for m in sorted(MODES, key=len, reverse=True) if name.startswith(m + "-")), None), verifier


def library_versions(names=_LIBRARIES) -> dict[str, str | None]:
    """Python's version and the installed versions of ``names`` (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_commit(path: str | Path = Path(__file__).parent) -> str | None:
    """The commit of the git checkout holding ``path`` (the package's source), or None."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_run_json(run_dir: str | Path, record: dict) -> None:
    """Write ``run.json`` atomically (a kill leaves the old one whole); a failure warns and never stops training."""
    path = Path(run_dir) / RUN_JSON
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    except OSError as err:
        log.warning("could not write %s: %s", path, err)


def start_run_record(run_dir: str | Path, config: dict, resumed_from: str | Path | None, step: int = 0) -> dict:
    """Create or update ``run.json`` at a (re)start (``resumed_from`` None: from scratch); returns the record."""
    record = read_run_json(run_dir) or {"started": _now(), "resumes": []}
    record.update(config=config, versions=library_versions(), git_commit=git_commit(), ended=None)
    record["resumes"].append({"at": _now(), "from_checkpoint": str(resumed_from) if resumed_from else None,
                              "step": step})
    write_run_json(run_dir, record)
    return record


def finish_run_record(run_dir: str | Path, record: dict, global_step: int) -> None:
    """Stamp the end time and final step into ``run.json``."""
    record.update(ended=_now(), global_step=global_step)
    write_run_json(run_dir, record)
