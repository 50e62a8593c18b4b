"""The machine a notebook runs on: its GPU, package versions, the Colab install, and the defaults that fit.

The setup notebook calls :func:`check` and :func:`prepare_output_root`; every notebook calls
:func:`install_requirements` (does something in Colab only) and :func:`resolve_defaults`, which turns the
parameters' ``"auto"`` model and data set into a real model on a GPU and the embedded default without one.

>>> resolve_defaults("auto", "auto", gpu=False)
No GPU: using the embedded default, model 'tiny-warm' and data set 'synthetic' (a CPU run in minutes; a toy model that has learned the answer format, not to read charts).
('tiny-warm', 'synthetic')
>>> resolve_defaults("qwen2-vl-2b", "auto", gpu=True)
('qwen2-vl-2b', 'chart-rvr')
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path

from chartrl_colab.errors import ConfigError

AUTO = "auto"
GPU_DEFAULTS = ("qwen2-5-3b", "chart-rvr")  # the seed's model; the Chart-RVR training set from the hub
CPU_DEFAULTS = ("tiny-warm", "synthetic")  # the embedded default: nothing to download, a base that sometimes answers
GPU_TOKENS, CPU_TOKENS = 512, 64  # "auto" completion lengths
AUTO_KEYS = ("vlm_name", "dataset_name", "max_completion_length", "max_new_tokens")
REQUIREMENTS_FILE = "requirements-colab.txt"
PACKAGE = "chartrl-colab"
# Colab's CUDA builds: reinstalling any of these from PyPI breaks the runtime.
NEVER_INSTALL = ("torch", "torchvision", "torchaudio")
PIP_TAIL = 20  # lines of pip's output shown when it fails
KEY_PACKAGES = ("torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
                "bitsandbytes", "ipywidgets", "papermill", "wandb")


# ------------------------------------------------------------------------------------------ the GPU
def gpu_info() -> dict | None:
    """The first visible GPU (name, count, memory, compute capability, CUDA version) and what ``"auto"`` picks on
    it (:func:`chartrl_colab.models.device.describe`: precision, 4-bit, vLLM), or None without one.

    ``bf16`` follows the compute capability (>= 8.0), not ``torch.cuda.is_bf16_supported()``, which says yes on
    a T4 where torch only emulates it.
    """
    import torch

    from chartrl_colab.models import device

    gpu = device.detect()
    if gpu is None:
        return None
    auto = device.describe(gpu)
    return {"name": gpu.name, "count": torch.cuda.device_count(), "memory_gb": gpu.memory_gb,
            "capability": ".".join(map(str, gpu.capability)), "bf16": auto["precision"] == "bf16",
            "cuda": torch.version.cuda, "auto": auto}


def resolve_defaults(vlm_name: str = AUTO, dataset_name: str = AUTO, gpu: bool | None = None, echo=print) -> tuple[str, str]:
    """``"auto"`` names -> the seed's model and data on a GPU, the embedded default without one (said so).

    Names other than ``"auto"`` are kept: a user who names a model gets it.
    """
    if AUTO not in (vlm_name, dataset_name):
        return vlm_name, dataset_name
    if gpu is None:
        gpu = gpu_info() is not None
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    vlm = defaults[0] if vlm_name == AUTO else vlm_name
    data = defaults[1] if dataset_name == AUTO else dataset_name
    if not gpu:
        echo(f"No GPU: using the embedded default, model {vlm!r} and data set {data!r} "
             "(a CPU run in minutes; a toy model that has learned the answer format, not to read charts).")
    return vlm, data


def resolve_auto(params: dict, gpu: bool | None = None, echo=print) -> dict:
    """A notebook's settings with every ``"auto"`` replaced by what fits this machine (said once).

    ``vlm_name``/``dataset_name`` as :func:`resolve_defaults`; ``max_completion_length``/``max_new_tokens``
    become 512 tokens on a GPU and 64 on a CPU (the embedded models' completions are short; shorter ones
    keep a CPU run to minutes).

    >>> resolve_auto({"vlm_name": "auto", "max_new_tokens": "auto", "seed": 1}, gpu=False, echo=lambda *a: None)
    {'vlm_name': 'tiny-warm', 'max_new_tokens': 64, 'seed': 1}
    """
    if AUTO not in [params.get(k) for k in AUTO_KEYS]:
        return dict(params)
    if gpu is None:
        gpu = gpu_info() is not None
    out = dict(params)
    if AUTO in (params.get("vlm_name"), params.get("dataset_name")):
        vlm, data = resolve_defaults(params.get("vlm_name", AUTO), params.get("dataset_name", AUTO), gpu=gpu, echo=echo)
        out.update({k: v for k, v in (("vlm_name", vlm), ("dataset_name", data)) if k in params})
    for key in ("max_completion_length", "max_new_tokens"):
        if params.get(key) == AUTO:
            out[key] = GPU_TOKENS if gpu else CPU_TOKENS
    return out  # other "auto"s (resume="auto") are the settings' own values


# Data sets without a split to evaluate on, and the set their authors evaluate on instead: Chart-RVR publishes
# a training split only, and its paper reports ChartQA test.
EVAL_SETS = {"chart-rvr": ("chartqa", "test")}


def trained_on(run_dir: str | Path) -> dict:
    """The settings a run (or a checkpoint-N folder of one) was trained with, from its run.json ({} if none)."""
    from chartrl_colab.runs.storage import checkpoint_step, read_run_json

    path = Path(run_dir)
    path = path.parent if checkpoint_step(path) is not None else path
    try:
        return dict((read_run_json(path) or {}).get("config") or {})
    except (OSError, ValueError):  # a torn run.json: this run just gives no hint
        return {}


def resolve_eval(params: dict, run_dirs=(), gpu: bool | None = None, echo=print) -> dict:
    """An evaluation's settings with ``"auto"`` resolved where the runs were trained, on a split that exists.

    ``vlm_name``/``dataset_name``/``max_new_tokens`` left on ``"auto"`` come from the runs' ``run.json``
    (the most common model and data set when runs differ, said so); with no run recorded, as
    :func:`resolve_auto` (the GPU or CPU default). A data set without the requested split is replaced by
    the set it is evaluated on (:data:`EVAL_SETS`: Chart-RVR -> ChartQA test), said so.
    """
    from collections import Counter

    from chartrl_colab.data.loading import SPLITS

    out = dict(params)
    configs = [c for c in (trained_on(p) for p in run_dirs) if c.get("vlm_name") and c.get("dataset_name")]
    if configs and AUTO in (params.get("vlm_name"), params.get("dataset_name")):
        pairs = Counter((c["vlm_name"], c["dataset_name"]) for c in configs)
        (vlm, data), count = pairs.most_common(1)[0]
        for key, value in (("vlm_name", vlm), ("dataset_name", data)):
            out[key] = value if params.get(key) == AUTO else params.get(key)
        tokens = next(c.get("max_completion_length") for c in configs if (c["vlm_name"], c["dataset_name"]) == (vlm, data))
        if params.get("max_new_tokens") == AUTO and isinstance(tokens, int):
            out["max_new_tokens"] = tokens
        others = ", ".join(f"{m}/{d}" for m, d in pairs if (m, d) != (vlm, data))
        echo(f"Evaluating where the runs were trained: model {vlm!r}, data set {data!r} ({count} of {len(run_dirs)} "
             "runs' run.json)" + (f"; other runs used {others}: set vlm_name/dataset_name or checkpoints to "
                                  "evaluate those" if others else "."))
    out = resolve_auto(out, gpu=gpu, echo=echo)
    data, split = out.get("dataset_name"), out.get("split")
    if split is not None and data in EVAL_SETS and split not in SPLITS.get(data, (split,)):
        out["dataset_name"], out["split"] = EVAL_SETS[data]
        echo(f"{data!r} has no {split!r} split (only {', '.join(SPLITS[data])}): evaluating on its evaluation set, "
             f"{out['dataset_name']!r} split {out['split']!r}.")
    return out


# ------------------------------------------------------------------------------------------ versions
def versions(packages=KEY_PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that matter (None: not installed), and Python's."""
    from chartrl_colab.runs.storage import library_versions

    return library_versions(packages)


def requirement_problems(requirements) -> list[str]:
    """One line per requirement the installed packages miss (absent, or outside the tested bounds).

    >>> requirement_problems(["# comment", "", "no-such-package-xyz>=1", "pip>=1"])
    ['no-such-package-xyz is not installed (needs >=1)']
    """
    from packaging.requirements import Requirement

    problems = []
    for line in requirements:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{req.name} is not installed (needs {req.specifier or 'any version'})")
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{req.name} {installed} is installed; the tested versions are {req.specifier}")
    return problems


def package_requirements() -> list[str]:
    """The package's declared dependencies (pyproject's tested bounds), extras left out."""
    try:
        return list(importlib.metadata.requires(PACKAGE) or [])
    except importlib.metadata.PackageNotFoundError:
        return []


def requirements_file() -> Path | None:
    """``requirements-colab.txt`` of the repository this package runs from, if it is there."""
    path = Path(__file__).resolve().parents[1] / REQUIREMENTS_FILE
    return path if path.is_file() else None


# ------------------------------------------------------------------------------------------ install
def install_requirements(path: str | Path | None = None, force: bool = False, enabled: bool = True,
                         echo=print) -> bool:
    """In Colab, pip-install ``requirements-colab.txt`` around Colab's own torch; True when pip ran.

    Outside Colab (or when everything is already there) nothing is installed. torch, torchvision and
    torchaudio are pinned to the installed versions through a pip constraints file, so no dependency can
    pull a CPU wheel over Colab's CUDA build.
    """
    from chartrl_colab.runs.storage import in_colab

    if not enabled:
        echo("install=False: nothing installed.")
        return False
    if not (force or in_colab()):
        echo("Not in Colab: using the installed packages (pip install -e . installs them).")
        return False
    path = Path(path) if path else requirements_file()
    if path is None or not Path(path).is_file():
        raise ConfigError(f"requirements file {str(path or REQUIREMENTS_FILE)!r} not found; clone the repository "
                          "and run from it")
    lines = [line for line in Path(path).read_text().splitlines()
             if line.split("#", 1)[0].strip() and _name(line) not in NEVER_INSTALL]
    if not requirement_problems(lines):
        echo(f"✓ Everything in {Path(path).name} is installed.")
        return False
    pins = [f"{name}=={version}" for name, version in versions(NEVER_INSTALL).items()
            if name != "python" and version is not None]
    before = installed_versions()
    with tempfile.TemporaryDirectory() as tmp:
        reqs, constraints = Path(tmp) / "requirements.txt", Path(tmp) / "constraints.txt"
        reqs.write_text("\n".join(lines) + "\n")
        constraints.write_text("\n".join(pins) + "\n")
        echo(f"Installing {Path(path).name} (keeping {', '.join(pins) or 'no torch'}) ...")
        # Captured, not streamed: pip's progress would fill the cell, but on failure its reason is shown.
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(reqs), "-c", str(constraints)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        output = (proc.stdout or "").splitlines() + (proc.stderr or "").splitlines()  # pip's reason: stderr
        tail = "\n".join([line for line in output if line.strip()][-PIP_TAIL:])
        echo(tail)
        raise RuntimeError(f"pip install -r {Path(path).name} failed (exit {proc.returncode}): pip's last lines are "
                           "above; fix what they name (often a version clash with Colab's packages) and rerun this cell")
    changed = changed_versions(before, installed_versions())
    if changed:
        # Only a package already installed in another version can be stale in this kernel.
        echo("Restart the runtime (Runtime > Restart session), then run all again: " +
             ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changed.items()) + " changed.")
    echo("✓ Installed.")
    return True


def installed_versions() -> dict[str, str]:
    """Every installed distribution's version, by normalised name."""
    importlib.invalidate_caches()
    return {_canonical(d.metadata["Name"] or ""): d.version for d in importlib.metadata.distributions()}


def changed_versions(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Packages installed before in another version than now (new installs are not stale, so not listed).

    >>> changed_versions({"trl": "1.0", "peft": "0.2", "x": "1"}, {"trl": "1.16", "peft": "0.2", "x": "1", "new": "3"})
    {'trl': ('1.0', '1.16')}
    """
    return {name: (old, after[name]) for name, old in sorted(before.items()) if name in after and after[name] != old}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _name(requirement_line: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement_line.split("#", 1)[0].strip()).name.lower()


# ------------------------------------------------------------------------------------------ report
def check(echo=print) -> dict:
    """What the setup notebook reports: Colab or not, the GPU, versions, and requirements not met."""
    from chartrl_colab.runs.storage import in_colab

    gpu = gpu_info()
    found = versions()
    reqs = package_requirements()
    if not reqs and requirements_file() is not None:  # run from a clone, not pip-installed
        reqs = requirements_file().read_text().splitlines()
    problems = requirement_problems(reqs)
    echo(f"Colab: {'yes' if in_colab() else 'no'}")
    if gpu:
        auto = gpu["auto"]
        echo(f"GPU: {gpu['name']} x{gpu['count']}, {gpu['memory_gb']} GiB, compute capability {gpu['capability']}, "
             f"CUDA {gpu['cuda']}")
        why = "bf16 from compute capability 8.0" if gpu["bf16"] else "no bf16 tensor cores below compute capability 8.0"
        echo(f"Precision: {auto['precision']} ({why}); 'auto' settings: load_in_4bit={auto['load_in_4bit']}, "
             f"use_vllm={auto['use_vllm']}")
    else:
        echo("GPU: none. The notebooks fall back to the embedded default (tiny model, synthetic charts); "
             "in Colab choose Runtime > Change runtime type > GPU for real models.")
        echo("Precision: fp32 (CPU)")
    echo("Versions: " + ", ".join(f"{k} {v}" for k, v in found.items() if v is not None))
    for problem in problems:
        echo(f"warning: {problem}")
    if not problems:
        echo("✓ Installed versions are within the tested bounds.")
    return {"in_colab": in_colab(), "gpu": gpu, "versions": found, "problems": problems}


def interactive_front_end() -> bool:
    """True when a person runs the current cell from a notebook front end (Colab, Jupyter, VS Code).

    Front ends send each cell with ``allow_stdin`` (so ``input()`` works); papermill and nbclient send
    theirs without it, and plain Python has no kernel at all.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return False
    try:
        parent = kernel.get_parent()  # the request being executed (ipykernel >= 6)
    except Exception:  # noqa: BLE001 - an older or custom kernel: fall back to what it recorded
        parent = {}
    allowed = (parent or {}).get("content", {}).get("allow_stdin")
    return bool(getattr(kernel, "_allow_stdin", False) if allowed is None else allowed)


MOUNT_CHOICES = {"auto": None, "yes": True, "true": True, "no": False, "false": False}


def should_mount(mount_drive, colab: bool | None = None, interactive: bool | None = None) -> bool:
    """``mount_drive`` as a yes/no: ``"auto"`` is yes in Colab (each notebook is a fresh VM, and only Drive
    is shared between them and kept across a disconnect) and no elsewhere; True/False and "yes"/"no" as said.

    A headless kernel in Colab (papermill, ``chartrl_colab.batch``) has nobody to authorise a mount, so
    ``"auto"`` only mounts there when Drive already is (a no-op that finds it).

    >>> should_mount("auto", colab=True, interactive=True), should_mount("auto", colab=False), should_mount("no")
    (True, False, False)
    """
    from chartrl_colab.runs.storage import drive_mounted, in_colab

    if isinstance(mount_drive, bool):
        return mount_drive
    choice = str(mount_drive).strip().lower()
    if choice not in MOUNT_CHOICES:
        raise ConfigError(f"mount_drive={mount_drive!r} is not valid; use 'auto' (Colab: yes), 'yes' or 'no'")
    if MOUNT_CHOICES[choice] is not None:
        return MOUNT_CHOICES[choice]
    if not (in_colab() if colab is None else colab):
        return False
    return drive_mounted() or (interactive_front_end() if interactive is None else interactive)


def prepare_output_root(output_root: str = "", mount_drive: bool | str = AUTO, echo=print) -> Path:
    """Where runs will be stored: ``output_root`` if given, else the default (Drive when mounted); created.

    Drive is mounted first when :func:`should_mount` says so, so every notebook of a Colab session sees the
    same runs and a reopened notebook finds its run directory (and resumes) instead of starting over.
    """
    from chartrl_colab.runs import storage

    if should_mount(mount_drive):
        storage.mount_drive()
    root = Path(output_root) if output_root else storage.default_output_root()
    root.mkdir(parents=True, exist_ok=True)
    on_drive = storage.drive_mounted() and storage.on_drive(root)
    where = ("on Google Drive: they survive a disconnect" if on_drive
             else "on this Colab runtime: lost when it disconnects, unseen by the other notebooks "
                  "(set mount_drive='yes' to keep them)"
             if storage.in_colab() else "on this machine")
    echo(f"Runs will be stored in {root.absolute()} ({where}).")
    return root
