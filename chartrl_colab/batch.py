"""Run a notebook once per (mode, seed) with papermill, one process per run, and summarise the runs.

    python -m chartrl_colab.batch --notebook notebooks/02_train.ipynb --modes grpo psr nsr w-reinforce \\
        --seeds 1 2 3 -p subset_size 1000 -p max_steps 200 [--output-root DIR] [--gpus 0,1,2,3] \\
        [--accelerate-config deepspeed_zero3.yaml]

What it runs and writes: the README's "Batches". Each run gets ``mode``, ``seed``, ``output_root`` (and
``results_json`` when the notebook has it); a notebook parameter ``"auto"`` is resolved once, for every run alike.
"""

from __future__ import annotations

import argparse
import ast
import base64
import dataclasses
import importlib.util
import json
import logging
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from chartrl_colab.cli import parser_for, run_cli, settings_from
from chartrl_colab.colab.environment import resolve_auto
from chartrl_colab.config import MODES
from chartrl_colab.errors import ConfigError, one_of
from chartrl_colab.runs.storage import default_output_root

log = logging.getLogger(__name__)

SUMMARY_MD = "batch-summary.md"
SUMMARY_JSON = "batch-summary.json"
GRID = ("mode", "seed", "output_root")  # parameters every batch notebook must have


@dataclass
class BatchConfig:
    notebook: str = field(metadata={"help": "The notebook to run, e.g. notebooks/02_train.ipynb."})
    modes: tuple[str, ...] = field(default=("nsr",), metadata={"help": f"Modes to run, of {', '.join(MODES)}."})
    seeds: tuple[int, ...] = field(default=(2025,), metadata={"help": "Seeds to run; every mode runs every seed."})
    parameters: dict = field(default_factory=dict,
                             metadata={"help": "Other notebook parameters, the same for every run (-p NAME VALUE)."})
    output_root: str = field(default="", metadata={
        "help": "Folder of the run directories ($CHARTRL_ROOT, else ./runs)."})
    gpus: str | None = field(default=None, metadata={
        "help": "GPUs to use, e.g. 0,1,2,3: one run per GPU at a time (left out: one run at a time, GPUs untouched)."})
    accelerate_config: str = field(default="", metadata={
        "help": "accelerate config (e.g. deepspeed_zero3.yaml): runs go one at a time, each on all GPUs."})
    kernel: str = field(default="python3", metadata={"help": "Jupyter kernel that runs the notebooks."})


@dataclass
class Run:
    """One planned papermill execution."""

    name: str
    parameters: dict
    output_notebook: Path
    run_dir: Path
    log: Path
    gpus: str | None = None  # CUDA_VISIBLE_DEVICES, None to leave it alone


@dataclass
class RunResult:
    name: str
    ok: bool
    seconds: float
    output_notebook: str
    run_dir: str
    log: str
    gpus: str | None
    returncode: int
    failed_cell: str | None = None  # 'In [5]: summary = runs.train_run(cfg)' (the executed notebook's numbering)
    error: str | None = None  # "ValueError: ..."
    results: dict | None = None  # the notebook's result JSON, when it wrote one


@dataclass
class BatchReport:
    runs: list[RunResult]
    summary_md: Path
    summary_json: Path

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)


# ---------------------------------------------------------------------------------------------- plan
def parse_value(text: str):
    """A ``-p NAME VALUE`` value as the notebook should get it: a Python literal if it is one, else text.

    >>> parse_value("1000"), parse_value("0.5"), parse_value("1e-6"), parse_value("None"), parse_value("True")
    (1000, 0.5, 1e-06, None, True)
    >>> parse_value("[1, 2]"), parse_value("qwen2-5-3b"), parse_value("'42'")
    ([1, 2], 'qwen2-5-3b', '42')
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_gpus(text: str | None) -> list[str]:
    """``"0,1, 3"`` -> ``["0", "1", "3"]``, None (no ``--gpus``) -> ``[]``; ConfigError for anything but distinct
    GPU indices, an empty list included (it would run everything on the CPU).

    >>> parse_gpus("0,1, 3"), parse_gpus(None)
    (['0', '1', '3'], [])
    """
    if text is None:
        return []
    gpus = [g.strip() for g in text.split(",")]
    if not text.strip() or any(not g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise ConfigError(f"gpus={text!r} is not valid; give distinct GPU indices separated by commas, e.g. 0,1,2,3")
    return gpus


def plan(cfg: BatchConfig) -> list[Run]:
    """Every run of a batch, checked before any starts: ConfigError names the first bad setting."""
    import papermill

    if not Path(cfg.notebook).is_file():
        raise ConfigError(f"notebook={str(cfg.notebook)!r} does not exist; give a .ipynb file such as "
                          "notebooks/02_train.ipynb")
    defaults = {name: parse_value(info["default"])
                for name, info in papermill.inspect_notebook(str(cfg.notebook)).items()}
    needed = [p for p in GRID + (("accelerate_config",) if cfg.accelerate_config else ()) if p not in defaults]
    if needed:
        raise ConfigError(f"notebook {cfg.notebook} has no parameter {needed[0]!r}; its parameters: "
                          f"{', '.join(defaults) or 'none (tag one cell parameters)'}")
    for name in cfg.parameters:
        if name not in defaults:
            raise ConfigError(f"parameter {name!r} is not in {cfg.notebook}; valid: {', '.join(defaults)}")
        if name in GRID:
            raise ConfigError(f"parameter {name!r} is set by the batch; use --{name.replace('_', '-')}"
                              f"{'s' if name != 'output_root' else ''} instead")
    if not cfg.modes or not cfg.seeds:
        raise ConfigError("modes and seeds must each name at least one value")
    for mode in cfg.modes:
        one_of("mode", mode, MODES)
    parse_gpus(cfg.gpus)  # raises on a bad list
    if cfg.accelerate_config and not Path(cfg.accelerate_config).is_file():
        raise ConfigError(f"accelerate_config={cfg.accelerate_config!r} does not exist; e.g. deepspeed_zero3.yaml")
    if cfg.accelerate_config and uses_deepspeed(cfg.accelerate_config) and not deepspeed_importable():
        # Said now, not by every run's accelerate launch after a notebook has started.
        raise ConfigError(f"accelerate_config={cfg.accelerate_config!r} uses DeepSpeed, which is not installed; "
                          "pip install 'chartrl-colab[deepspeed]', or use --gpus for one run per GPU")

    root = Path(cfg.output_root or default_output_root()).absolute()
    shared = {**defaults, **cfg.parameters, "output_root": str(root)}
    if cfg.accelerate_config:
        shared["accelerate_config"] = str(Path(cfg.accelerate_config).absolute())
    shared = resolve_auto(shared)  # "auto" decided once, here, so every run and its file names agree

    from chartrl_colab.config import RunConfig  # TRL's GRPOConfig: torch, only once runs are planned

    parser = parser_for(RunConfig, "notebook", "")  # notebook parameters read as the CLI reads them
    runs, seen = [], set()
    for mode in cfg.modes:
        for seed in cfg.seeds:
            params = {**shared, "mode": mode, "seed": seed}
            name = RunConfig(**settings_from(parser, params, known_only=True)).run_name  # also validates them
            if name in seen:
                raise ConfigError(f"two runs are both named {name}; give distinct modes and seeds")
            seen.add(name)
            if "results_json" in defaults:
                params["results_json"] = str(root / f"{name}.results.json")
            # Keep only what differs from the notebook, so the executed notebook shows what the batch set.
            params = {k: v for k, v in params.items() if k in GRID or k == "results_json" or defaults.get(k) != v}
            runs.append(Run(name, params, root / f"{name}.ipynb", root / name, root / f"{name}.log"))
    return runs


def uses_deepspeed(accelerate_config: str | Path) -> bool:
    """True when an accelerate config file launches through DeepSpeed (``distributed_type: DEEPSPEED``)."""
    import yaml

    try:
        settings = yaml.safe_load(Path(accelerate_config).read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"accelerate_config={str(accelerate_config)!r} is not valid YAML ({err})") from None
    return isinstance(settings, dict) and (str(settings.get("distributed_type", "")).upper() == "DEEPSPEED"
                                           or "deepspeed_config" in settings)


def deepspeed_importable() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


# ----------------------------------------------------------------------------------------------- run
def papermill_command(run: Run, notebook: str | Path, kernel: str = "python3") -> list[str]:
    """The papermill command line of one run (parameters as base64 YAML, so types survive)."""
    import yaml

    encoded = base64.b64encode(yaml.safe_dump(run.parameters).encode()).decode()
    return [sys.executable, "-m", "papermill", str(notebook), str(run.output_notebook), "-b", encoded,
            "-k", kernel, "--log-output", "--no-progress-bar"]


def failure(output_notebook: str | Path) -> tuple[str | None, str | None]:
    """The failing cell of an executed notebook and its error, or (None, None) when no cell failed."""
    import nbformat

    try:
        nb = nbformat.read(str(output_notebook), as_version=4)
    except (OSError, ValueError):
        return None, None
    for cell in nb.cells:
        for out in cell.get("outputs", []):  # code cells only have outputs
            if out.get("output_type") == "error":
                first = next((line for line in cell.source.splitlines() if line.strip()
                              and not line.lstrip().startswith("#")), "")
                number = cell.get("execution_count")
                where = f"In [{number}]" if number is not None else "a cell"  # as the executed notebook shows it
                return f"{where}: {first.strip()}", f"{out.get('ename')}: {out.get('evalue')}"
    return None, None


def execute(run: Run, notebook: str | Path, kernel: str = "python3") -> RunResult:
    """Run one notebook in its own papermill process; never raises for a failing notebook."""
    run.output_notebook.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if run.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = run.gpus
    start = time.perf_counter()
    with open(run.log, "w") as log:
        proc = subprocess.run(papermill_command(run, notebook, kernel), stdout=log, stderr=subprocess.STDOUT,
                              env=env, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    cell, error = (None, None) if proc.returncode == 0 else failure(run.output_notebook)
    if proc.returncode != 0 and error is None:  # failed before or outside a cell (kernel died, bad notebook)
        tail = [line for line in Path(run.log).read_text(errors="replace").splitlines() if line.strip()]
        error = tail[-1] if tail else f"papermill exited with {proc.returncode}"
    path = run.parameters.get("results_json")
    results = json.loads(Path(path).read_text()) if proc.returncode == 0 and path and Path(path).is_file() else None
    return RunResult(run.name, proc.returncode == 0, round(seconds, 1), str(run.output_notebook), str(run.run_dir),
                     str(run.log), run.gpus, proc.returncode, cell, error, results)


def run_batch(cfg: BatchConfig) -> BatchReport:
    """Plan and execute a batch; a failing run is reported and the others go on."""
    from tqdm.auto import tqdm

    runs = plan(cfg)
    gpus = parse_gpus(cfg.gpus)
    # --accelerate-config: one run at a time on all GPUs; else one per GPU (no --gpus: one at a time, GPUs untouched)
    slots = [",".join(gpus) or None] if cfg.accelerate_config else gpus or [None]
    free: queue.Queue = queue.Queue()
    for slot in slots:
        free.put(slot)

    def work(run: Run) -> RunResult:
        slot = free.get()
        try:
            run.gpus = slot
            return execute(run, cfg.notebook, cfg.kernel)
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool, tqdm(total=len(runs), desc="runs", unit="run") as bar:
        futures = [pool.submit(work, run) for run in runs]
        for fut in as_completed(futures):
            res = fut.result()
            why = "" if res.ok else f" failed at {res.failed_cell or 'start'} -> {res.error};"
            bar.write(f"{'✓' if res.ok else '✗'} {res.name} ({res.seconds:.0f} s){why} notebook: {res.output_notebook}")
            bar.update(1)
    ordered = [fut.result() for fut in futures]
    root = runs[0].output_notebook.parent
    root.mkdir(parents=True, exist_ok=True)
    md, js = root / SUMMARY_MD, root / SUMMARY_JSON
    table = summary_table(ordered)
    md.write_text(table + "\n")
    js.write_text(json.dumps([dataclasses.asdict(r) for r in ordered], indent=2) + "\n")
    log.info(table)
    log.info(f"{sum(r.ok for r in ordered)}/{len(ordered)} runs succeeded; summary in {md}")
    return BatchReport(ordered, md, js)


def summary_table(results: list[RunResult]) -> str:
    """A markdown table: run, status, time, GPUs, run directory, executed notebook, failing cell and error.

    >>> print(summary_table([RunResult("nsr-tiny-synthetic-8-1", True, 12.3, "r/x.ipynb", "r/x", "r/x.log", "0", 0)]))
    | run | status | time | gpus | run dir | notebook | failed cell | error |
    | --- | --- | --- | --- | --- | --- | --- | --- |
    | nsr-tiny-synthetic-8-1 | ok | 12 s | 0 | r/x | r/x.ipynb |  |  |
    """
    def cell(text) -> str:
        return "" if text is None else str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| run | status | time | gpus | run dir | notebook | failed cell | error |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r.name} | {'ok' if r.ok else 'FAILED'} | {r.seconds:.0f} s | {cell(r.gpus or 'all')} | "
                     f"{cell(r.run_dir)} | {cell(r.output_notebook)} | {cell(r.failed_cell)} | {cell(r.error)} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    help_of = {f.name: f.metadata["help"] for f in dataclasses.fields(BatchConfig)}
    p = parser_for(BatchConfig, "python -m chartrl_colab.batch", __doc__.split("\n")[0], skip=("parameters",))
    # Notebook parameters are open-ended name/value pairs, papermill's own -p convention, not a dataclass field.
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   dest="parameters", help=help_of["parameters"] + " VALUE is read as a Python literal when it is one.")
    return p


def config_from_argv(argv: list[str] | None = None) -> BatchConfig:
    args = vars(build_parser().parse_args(argv))
    args["parameters"] = {name: parse_value(value) for name, value in args["parameters"]}
    return BatchConfig(**{**args, "modes": tuple(args["modes"]), "seeds": tuple(args["seeds"])})


def main(argv: list[str] | None = None) -> int:
    """0 when every run succeeded, 1 when some failed (see the summary), 2 for a bad setting."""
    return run_cli(lambda: 0 if run_batch(config_from_argv(argv)).ok else 1)


if __name__ == "__main__":
    sys.exit(main())
