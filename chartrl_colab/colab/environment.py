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
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from chartrl_colab.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
GPU_DEFAULTS = ("qwen2-5-3b", "chart-rvr")  # the original Chart-RVR scripts' model and training set (hub)
CPU_DEFAULTS = ("tiny-warm", "synthetic")  # the embedded default: nothing to download, a base that sometimes answers
GPU_TOKENS, CPU_TOKENS = 512, 64  # "auto" completion lengths
AUTO_KEYS = ("vlm_name", "dataset_name", "max_completion_length", "max_new_tokens")
REQUIREMENTS_FILE = "requirements-colab.txt"
PACKAGE = "chartrl-colab"
# Colab's CUDA builds: reinstalling any of these from PyPI breaks the runtime.
NEVER_INSTALL = ("torch", "torchvision", "torchaudio")
CUDA_ONLY = ("bitsandbytes",)  # 4-bit loading on a CUDA GPU; on some CPUs its import only warns
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
    """``"auto"`` names -> the original Chart-RVR model and data on a GPU, the embedded default without one (said so).

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
def cuda_runtime() -> bool:
    """True on a machine whose torch sees a CUDA GPU (where bitsandbytes' 4-bit loading is used)."""
    import torch

    return torch.version.cuda is not None and torch.cuda.is_available()


def requirement_lines(path: str | Path, cuda: bool) -> list[str]:
    """The requirements ``path`` holds that pip may install here: never torch, torchvision or torchaudio (the
    runtime's CUDA build stays), and the CUDA-only ones (:data:`CUDA_ONLY`) only when ``cuda``."""
    skip = NEVER_INSTALL if cuda else NEVER_INSTALL + CUDA_ONLY
    return [line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines()
            if line.split("#", 1)[0].strip() and _name(line) not in skip]


def pip_install_command(requirements: list[str], pins: list[str], folder: str | Path,
                        python: str = sys.executable) -> list[str]:
    """``python -m pip install -r REQS -c CONSTRAINTS`` for ``requirements`` with ``pins`` (``name==version``) held,
    the two files written into ``folder``. The notebooks install with it and ``make colab-check`` resolves with it."""
    reqs, constraints = Path(folder) / "requirements.txt", Path(folder) / "constraints.txt"
    reqs.write_text("\n".join(requirements) + "\n")
    constraints.write_text("\n".join(pins) + "\n")
    return [python, "-m", "pip", "install", "-r", str(reqs), "-c", str(constraints)]


def install_requirements(path: str | Path | None = None, force: bool = False, enabled: bool = True,
                         cuda: bool | None = None) -> bool:
    """In Colab, pip-install what ``requirements-colab.txt`` lists and this runtime lacks; True when pip ran.

    Outside Colab (or when everything is already there) nothing is installed. torch, torchvision and
    torchaudio are pinned to the installed versions through a pip constraints file, so no dependency can
    pull a CPU wheel over Colab's CUDA build; bitsandbytes is installed on a CUDA runtime only. pip's report of
    installed packages whose declared requirements the install broke is shown as warnings. When the install
    changed a distribution whose modules this kernel has already imported, :class:`RestartRequired` stops the
    notebook naming those (the kernel would go on with the old code).
    """
    from chartrl_colab.runs.storage import in_colab

    if not enabled:
        log.info("install=False: nothing installed.")
        return False
    if not (force or in_colab()):
        log.info("Not in Colab: using the installed packages (pip install -e . installs them).")
        return False
    path = Path(path) if path else requirements_file()
    if path is None or not Path(path).is_file():
        raise ConfigError(f"requirements file {str(path or REQUIREMENTS_FILE)!r} not found; clone the repository "
                          "and run from it")
    lines = requirement_lines(path, cuda_runtime() if cuda is None else cuda)
    missing = requirement_problems(lines)
    if not missing:
        log.info(f"✓ Everything in {Path(path).name} is installed.")
        return False
    pins = [f"{name}=={version}" for name, version in versions(NEVER_INSTALL).items()
            if name != "python" and version is not None]
    before = installed_versions()
    log.info(f"Installing what {Path(path).name} lists and this runtime lacks ({len(missing)}), keeping "
             f"{', '.join(pins) or 'no torch'} ...")
    with tempfile.TemporaryDirectory() as tmp:
        # Captured, not streamed: pip's progress would fill the cell; its reasons and conflicts are shown.
        proc = subprocess.run(pip_install_command(lines, pins, tmp) + ["-q"], capture_output=True, text=True)
    output = (proc.stdout or "").splitlines() + (proc.stderr or "").splitlines()
    if proc.returncode != 0:
        print("\n".join([line for line in output if line.strip()][-PIP_TAIL:]))
        raise RuntimeError(f"pip install -r {Path(path).name} failed (exit {proc.returncode}): pip's last lines are "
                           "above; fix what they name (often a version clash with Colab's packages) and rerun this cell")
    conflicts = pip_conflicts(output)
    for line in conflicts:
        log.warning(line)
    changed = changed_versions(before, installed_versions())
    stale = imported_distributions(changed)
    if stale:
        raise RestartRequired("restart the runtime (Runtime > Restart session), then Run all again: this kernel had "
                              "already imported " + ", ".join(f"{name} {changed[name][0]} (now {changed[name][1]})"
                                                              for name in stale))
    log.info("✓ Installed" + (", but pip reports the conflicts above with packages this runtime had."
                               if conflicts else "."))
    return True


class RestartRequired(ConfigError):
    """The install replaced code this kernel has already imported: restart, then Run all again (one line)."""


def pip_conflicts(output: list[str]) -> list[str]:
    """pip's report of installed packages whose declared requirements an install broke (pip exits 0 with it).

    >>> pip_conflicts(["ok", "ERROR: pip's dependency resolver does not currently take into account all the "
    ...                "packages that are installed. This behaviour is the source of the following dependency "
    ...                "conflicts.", "gradio 6.24.0 requires huggingface-hub<2.0, but you have huggingface-hub 2.4.0 "
    ...                "which is incompatible.", "Successfully installed x"])[1:]
    ['gradio 6.24.0 requires huggingface-hub<2.0, but you have huggingface-hub 2.4.0 which is incompatible.']
    """
    start = next((i for i, line in enumerate(output) if "pip's dependency resolver" in line), None)
    if start is None:
        return []
    rest = [line for line in output[start + 1:] if " requires " in line or "has requirement" in line]
    return ["pip: " + output[start].removeprefix("ERROR: ").split(". ")[0] + ":", *rest]


def imported_distributions(changed) -> list[str]:
    """The distributions among ``changed`` (normalised names) of which this process has imported a module.

    >>> imported_distributions({"pip": ("1", "2"), "no-such-dist": ("1", "2")}) == (["pip"] if "pip" in sys.modules
    ...                                                                               else [])
    True
    """
    if not changed:
        return []
    modules = importlib.metadata.packages_distributions()  # top-level module -> distributions providing it
    imported = {_canonical(dist) for module, dists in modules.items() if module in sys.modules for dist in dists}
    return [name for name in changed if _canonical(name) in imported]


def require_installed(path: str | Path | None = None, cuda: bool | None = None) -> None:
    """Stop with one line naming the fix when a package the notebooks import is not installed (an install that was
    skipped, or a kernel from another environment): better than ``ModuleNotFoundError: trl`` cells later."""
    path = Path(path) if path else requirements_file()
    from packaging.requirements import Requirement

    lines = requirement_lines(path, cuda_runtime() if cuda is None else cuda) if path else package_requirements()
    reqs = [Requirement(line) for line in lines]
    missing = [r.name for r in reqs if (r.marker is None or r.marker.evaluate({"extra": ""})) and not _installed(r.name)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not installed in this kernel's Python ({sys.executable}): in Colab "
                          "set install = True (00_setup) and run the setup cell again; elsewhere pip install -e . "
                          "from the clone with that Python")


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def package_root() -> Path:
    """The folder the package is imported from (a clone's root when run from one)."""
    return Path(__file__).resolve().parents[2]


def share_with_children() -> None:
    """Make processes this kernel starts (``accelerate launch``, ``python -m chartrl_colab.train``) import the
    package from where this kernel does: a clone only put on ``sys.path`` is added to ``PYTHONPATH``."""
    root = str(package_root())
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if (package_root() / "pyproject.toml").is_file() and root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


def repo_file(path: str | Path) -> str:
    """A file named relative to the repository (``deepspeed_zero3.yaml``) as an absolute path: from the current
    folder when it is there, else from the clone the package runs from; ``""`` stays ``""``.

    >>> repo_file("deepspeed_zero3.yaml") == str(package_root() / "deepspeed_zero3.yaml"), repo_file("")
    (True, '')
    """
    if not path:
        return ""
    for candidate in (Path(path), package_root() / path):
        if candidate.is_file():
            return str(candidate.resolve())
    raise ConfigError(f"{str(path)!r} not found in {Path.cwd()} nor in {package_root()}")


def setup(install: bool = True) -> None:
    """What every notebook's setup cell does: log lines in the cell, children that import the package, in Colab
    the install of what is missing, then one line naming the fix if a needed package is still missing."""
    from chartrl_colab.messages import configure_logging

    configure_logging()
    share_with_children()
    install_requirements(enabled=install)
    require_installed()


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


def prepare_output_root(output_root: str = "", mount_drive: bool | str = AUTO, echo=None) -> Path:
    """Where runs will be stored: ``output_root`` if given, else the default (Drive when mounted); created.

    Drive is mounted first when :func:`should_mount` says so, so every notebook of a Colab session sees the
    same runs and a reopened notebook finds its run directory (and resumes) instead of starting over. An
    explicit ``mount_drive="yes"`` that cannot mount (outside Colab, a refused or timed-out mount) is a
    ConfigError that stops the notebook: runs never silently land where they would be lost.
    """
    from chartrl_colab.runs import storage

    echo = echo or log.info
    if should_mount(mount_drive):
        explicit = mount_drive is True or str(mount_drive).strip().lower() in ("yes", "true")
        _mount_or_stop() if explicit else storage.mount_drive()
    root = Path(output_root) if output_root else storage.default_output_root()
    root.mkdir(parents=True, exist_ok=True)
    on_drive = storage.drive_mounted() and storage.on_drive(root)
    where = ("on Google Drive: they survive a disconnect" if on_drive
             else "on this Colab runtime: lost when it disconnects, unseen by the other notebooks "
                  "(set mount_drive='yes' to keep them)"
             if storage.in_colab() else "on this machine")
    echo(f"Runs will be stored in {root.absolute()} ({where}).")
    return root


def _mount_or_stop() -> None:
    from chartrl_colab.runs import storage

    if storage.drive_mounted():
        return
    if not storage.in_colab():
        raise ConfigError("mount_drive='yes' but this is not Google Colab, where Drive mounts; set mount_drive='no' "
                          "or 'auto' (and output_root to a folder here)")
    try:
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount(str(storage.DRIVE_MOUNT))
    except Exception as err:  # noqa: BLE001 - a refused authorisation, a timeout (Colab raises ValueError/TimeoutError)
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(f"mount_drive='yes' but Google Drive did not mount ({reason}); run this cell again, or set "
                          "mount_drive='no' to keep runs on this runtime (lost when it disconnects)") from None
    if not storage.drive_mounted():
        raise ConfigError(f"mount_drive='yes' but Google Drive is not at {storage.DRIVE_MOUNT} after mounting; run "
                          "this cell again, or set mount_drive='no'")
