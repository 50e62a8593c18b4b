"""The machine a notebook runs on: its GPU, package versions, Drive, and the defaults that fit.

Every notebook calls :func:`prepare_output_root` and :func:`resolve_auto`; the setup notebook also :func:`check`.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from chartrl_colab.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
GPU_DEFAULTS = ("qwen2-5-3b", "chart-rvr")  # the original Chart-RVR scripts' model and training set (hub)
CPU_DEFAULTS = ("tiny-warm", "synthetic")  # the embedded default: nothing to download, a base that sometimes answers
GPU_TOKENS, CPU_TOKENS = 512, 64  # "auto" completion lengths
AUTO_KEYS = ("vlm_name", "dataset_name", "max_completion_length", "max_new_tokens")
KEY_PACKAGES = ("torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
                "bitsandbytes", "ipywidgets", "papermill", "wandb")
# Data sets without a split to evaluate on, and the set their authors evaluate on instead (Chart-RVR: ChartQA test).
EVAL_SETS = {"chart-rvr": ("chartqa", "test")}
MOUNT_CHOICES = {"auto": None, "yes": True, "true": True, "no": False, "false": False}


def gpu_info() -> dict | None:
    """The first visible GPU (name, count, memory, compute capability, CUDA version) and what ``"auto"`` picks on
    it (:func:`chartrl_colab.models.device.describe`), or None without one."""
    import torch

    from chartrl_colab.models import device

    gpu = device.detect()
    if gpu is None:
        return None
    auto = device.describe(gpu)
    return {"name": gpu.name, "count": torch.cuda.device_count(), "memory_gb": gpu.memory_gb,
            "capability": ".".join(map(str, gpu.capability)), "bf16": auto["precision"] == "bf16",
            "cuda": torch.version.cuda, "auto": auto}


def resolve_auto(params: dict, gpu: bool | None = None) -> dict:
    """``params`` with every ``"auto"`` of :data:`AUTO_KEYS` replaced by what fits this machine: on a GPU
    :data:`GPU_DEFAULTS` and 512 tokens, else the embedded default (said) and 64 tokens (a CPU run in minutes).

    >>> resolve_auto({"vlm_name": "auto", "max_new_tokens": "auto", "seed": 1}, gpu=False)
    {'vlm_name': 'tiny-warm', 'max_new_tokens': 64, 'seed': 1}
    """
    if AUTO not in [params.get(k) for k in AUTO_KEYS]:
        return dict(params)  # other "auto"s (resume="auto") are the settings' own values
    if gpu is None:
        gpu = gpu_info() is not None
    tokens = GPU_TOKENS if gpu else CPU_TOKENS
    defaults = dict(zip(AUTO_KEYS, (*(GPU_DEFAULTS if gpu else CPU_DEFAULTS), tokens, tokens)))
    out = {k: defaults[k] if v == AUTO and k in defaults else v for k, v in params.items()}
    if not gpu and AUTO in (params.get("vlm_name"), params.get("dataset_name")):
        vlm, data = (out.get(k, defaults[k]) for k in ("vlm_name", "dataset_name"))
        log.info(f"No GPU: using the embedded default, model {vlm!r} and data set {data!r} "
                 "(a CPU run in minutes; a toy model that has learned the answer format, not to read charts).")
    return out


def trained_on(run_dir: str | Path) -> dict:
    """The config in the run.json of a run (or of a checkpoint-N folder's run); {} if none."""
    from chartrl_colab.runs.record import read_run_json
    from chartrl_colab.runs.storage import checkpoint_step

    path = Path(run_dir)
    path = path.parent if checkpoint_step(path) is not None else path
    try:
        return dict((read_run_json(path) or {}).get("config") or {})
    except (OSError, ValueError):  # a torn run.json: this run just gives no hint
        return {}


def resolve_eval(params: dict, run_dirs=(), gpu: bool | None = None) -> dict:
    """An evaluation's settings, each replacement said: ``vlm_name``/``dataset_name``/``max_new_tokens`` left on
    ``"auto"`` from the runs' run.json (the most common pair), else :func:`resolve_auto`; a data set without the
    requested split replaced by the one its authors evaluate on (:data:`EVAL_SETS`)."""
    from chartrl_colab.data.loading import SPLITS

    out = dict(params)
    configs = [c for c in (trained_on(p) for p in run_dirs) if c.get("vlm_name") and c.get("dataset_name")]
    if configs and AUTO in (params.get("vlm_name"), params.get("dataset_name")):
        pairs = Counter((c["vlm_name"], c["dataset_name"]) for c in configs)
        (vlm, data), count = pairs.most_common(1)[0]
        for key, value in (("vlm_name", vlm), ("dataset_name", data)):
            out[key] = value if params.get(key) == AUTO else params.get(key)
        tokens = next(c.get("max_completion_length") for c in configs
                      if (c["vlm_name"], c["dataset_name"]) == (vlm, data))
        if params.get("max_new_tokens") == AUTO and isinstance(tokens, int):
            out["max_new_tokens"] = tokens
        others = ", ".join(f"{m}/{d}" for m, d in pairs if (m, d) != (vlm, data))
        log.info(f"Evaluating where the runs were trained: model {vlm!r}, data set {data!r} ({count} of "
                 f"{len(run_dirs)} runs' run.json)" + (f"; other runs used {others}: set vlm_name/dataset_name or "
                                                       "checkpoints to evaluate those" if others else "."))
    out = resolve_auto(out, gpu=gpu)
    data, split = out.get("dataset_name"), out.get("split")
    if split is not None and data in EVAL_SETS and split not in SPLITS.get(data, (split,)):
        out["dataset_name"], out["split"] = EVAL_SETS[data]
        log.info(f"{data!r} has no {split!r} split (only {', '.join(SPLITS[data])}): evaluating on its evaluation "
                 f"set, {out['dataset_name']!r} split {out['split']!r}.")
    return out


def check() -> dict:
    """Log and return what the setup notebook reports: Colab or not, the GPU, the versions of
    :data:`KEY_PACKAGES`, and requirements not met."""
    from chartrl_colab.colab.packages import package_requirements, requirement_problems, requirements_file
    from chartrl_colab.runs.record import library_versions
    from chartrl_colab.runs.storage import in_colab

    gpu = gpu_info()
    found = library_versions(KEY_PACKAGES)
    # pip-installed: its declared bounds; run from a clone: the clone's requirements file
    reqs = package_requirements() or (requirements_file().read_text().splitlines() if requirements_file() else [])
    problems = requirement_problems(reqs)
    log.info(f"Colab: {'yes' if in_colab() else 'no'}")
    if gpu:
        auto = gpu["auto"]
        log.info(f"GPU: {gpu['name']} x{gpu['count']}, {gpu['memory_gb']} GiB, compute capability {gpu['capability']}, "
                 f"CUDA {gpu['cuda']}")
        why = "bf16 from compute capability 8.0" if gpu["bf16"] else "no bf16 tensor cores below compute capability 8.0"
        log.info(f"Precision: {auto['precision']} ({why}); 'auto' settings: load_in_4bit={auto['load_in_4bit']}, "
                 f"use_vllm={auto['use_vllm']}")
    else:
        log.info("GPU: none. The notebooks fall back to the embedded default (tiny model, synthetic charts); "
                 "in Colab choose Runtime > Change runtime type > GPU for real models.")
        log.info("Precision: fp32 (CPU)")
    log.info("Versions: " + ", ".join(f"{k} {v}" for k, v in found.items() if v is not None))
    for problem in problems:
        log.warning(problem)
    if not problems:
        log.info("✓ Installed versions are within the tested bounds.")
    return {"in_colab": in_colab(), "gpu": gpu, "versions": found, "problems": problems}


def interactive_front_end() -> bool:
    """True when a person runs the current cell from a notebook front end (Colab, Jupyter, VS Code): they send
    each cell with ``allow_stdin``, papermill and nbclient without it; plain Python has no kernel at all."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    # get_parent: the request being executed (ipykernel >= 6.17, a dependency)
    return kernel is not None and bool((kernel.get_parent() or {}).get("content", {}).get("allow_stdin"))


def should_mount(mount_drive, colab: bool | None = None, interactive: bool | None = None) -> bool:
    """``mount_drive`` (a bool or :data:`MOUNT_CHOICES`) as a bool. ``"auto"``: yes in Colab, where only Drive is
    shared between notebooks and kept; but in a headless kernel (papermill, batch) only when Drive already is.

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


def prepare_output_root(output_root: str = "", mount_drive: bool | str = AUTO) -> Path:
    """Where runs will be stored, created: ``output_root`` if given, else the default (Drive when mounted, after
    mounting it when :func:`should_mount`). ``"yes"`` that cannot mount is a ConfigError: runs never silently land
    where they would be lost."""
    from chartrl_colab.runs import storage

    if should_mount(mount_drive):
        explicit = mount_drive is True or MOUNT_CHOICES.get(str(mount_drive).strip().lower()) is True
        _mount_or_stop() if explicit else storage.mount_drive()
    root = Path(output_root) if output_root else storage.default_output_root()
    root.mkdir(parents=True, exist_ok=True)
    on_drive = storage.drive_mounted() and storage.on_drive(root)
    where = ("on Google Drive: they survive a disconnect" if on_drive
             else "on this Colab runtime: lost when it disconnects, unseen by the other notebooks "
                  "(set mount_drive='yes' to keep them)"
             if storage.in_colab() else "on this machine")
    log.info(f"Runs will be stored in {root.absolute()} ({where}).")
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
