"""What notebook cells read and show: their settings, figures inline, outputs beside the runs, a results JSON.

Every notebook ends with :func:`write_results`; papermill runs and :mod:`chartrl_colab.batch` read that file.
"""

from __future__ import annotations

import ast
import difflib
import json
import logging
from pathlib import Path

from chartrl_colab.errors import ConfigError
from chartrl_colab.runs.storage import jsonable

log = logging.getLogger(__name__)

INJECTED = "# Parameters"  # how papermill's injected-parameters cell begins


def settings(namespace: dict, config_class, exclude=()) -> dict:
    """Every field of ``config_class`` (or the original scripts' spelling of one) that is a variable in
    ``namespace`` (a cell's ``globals()``), read as the CLI reads its flags; a field given with ``papermill -p``
    counts even when the parameters cell does not list it.

    >>> from chartrl_colab.config import RunConfig
    >>> settings({"mode": "psr", "seed": 3, "modes": ["nsr"], "In": []}, RunConfig)
    {'mode': 'psr', 'seed': 3}
    """
    from chartrl_colab.cli import parser_for, settings_from
    from chartrl_colab.colab.environment import AUTO_KEYS

    parser = parser_for(config_class, "notebook", "")
    names = [flag[2:] for flag in parser._option_string_actions if flag.startswith("--") and "-" not in flag[2:]
             and not flag.startswith("--no_") and flag != "--help"]
    check_injected(namespace.get("In") or [], names)
    known = set(names) - set(exclude)
    given = {name: value for name, value in namespace.items() if name in known}
    return settings_from(parser, given, keep=AUTO_KEYS)  # "auto" sizes: environment.resolve_auto decides


def _assigned(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]


def check_injected(history, fields) -> None:
    """ConfigError naming the closest valid name for a papermill parameter (``-p reward_treshold 0.9``) that is
    neither in ``fields`` nor set by the parameters cell, the cell that ``history`` (the kernel's ``In``) shows
    right before papermill's injected one."""
    for i, source in enumerate(history):
        if not isinstance(source, str) or not source.lstrip().startswith(INJECTED):
            continue
        valid = [*fields, *(_assigned(history[i - 1]) if i > 0 else [])]
        for name in _assigned(source):
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"the parameters are: {', '.join(sorted(valid))}"
                raise ConfigError(f"parameter {name!r} is not a parameter of this notebook; {hint}")


def _in_kernel() -> bool:
    from IPython import get_ipython

    return get_ipython() is not None


def show_figures(paths, width: int = 720) -> None:
    """Show PNGs inline (in a kernel); elsewhere list them."""
    if not _in_kernel():
        for p in paths:
            print(p)
        return
    from IPython.display import Image, display

    for p in paths:
        display(Image(filename=str(p), width=width))


def show_costs(costs: dict) -> dict:
    """Print a run's time and memory figures (:func:`chartrl_colab.colab.pipelines.run_costs`) as one line.

    >>> _ = show_costs({"train_seconds": 90.0, "seconds_per_step": 4.5, "steps": 20, "peak_gpu_memory_gb": 11.2})
    Time: 90 s of training, 4.5 s per step over 20 steps. Peak GPU memory: 11.2 GB.
    """
    parts = []
    if costs.get("train_seconds") is not None:
        parts.append(f"Time: {costs['train_seconds']:.0f} s of training")
    elif costs.get("wall_seconds") is not None:
        parts.append(f"Time: {costs['wall_seconds']:.0f} s from start to end")
    if costs.get("seconds_per_step") is not None:
        parts.append(f"{costs['seconds_per_step']:.3g} s per step over {costs.get('steps', '?')} steps")
    line = ", ".join(parts) + "." if parts else "Time: not recorded."
    memory = [(k, v) for k, v in costs.items() if "memory" in k or k.endswith(("_gb", "_mb"))]
    if memory:
        line += " " + "; ".join(_figure(k, v) for k, v in memory) + "."
    else:
        line += " Peak GPU memory: not recorded (no GPU, or not measured)."
    print(line)  # what the cell shows, whatever the logging setup
    return costs


def _figure(key: str, value: float) -> str:
    unit = {"_gb": " GB", "_mb": " MB"}.get(key[-3:], "")
    text = key.removesuffix("_gb").removesuffix("_mb").replace("_", " ").replace("gpu", "GPU")
    return f"{text[:1].upper()}{text[1:]}: {value:.3g}{unit}"


def show_answers(answers: list[dict], width: int = 192) -> list[dict]:
    """Each answer's chart (a thumbnail), question, completion and rewards; returns them without the images."""
    shown = []
    for i, answer in enumerate(answers, 1):
        image = answer.get("image")
        if image is not None and _in_kernel():
            from IPython.display import display

            thumb = image.copy()
            thumb.thumbnail((width, width))
            display(thumb)
        rewards = ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in answer["rewards"].items())
        print(f"[{i}] Q: {answer['question']}\n    gold: {answer['answer']}\n    model: {answer['completion']}\n"
              f"    rewards: {rewards} ({'correct' if answer['correct'] else 'not correct'})")
        shown.append({k: v for k, v in answer.items() if k != "image"})
    return shown


def under(root: str | Path, path: str | Path) -> Path:
    """``path`` as is when absolute, else inside ``root``.

    >>> str(under("runs", "plots")), str(under("runs", "/tmp/plots"))
    ('runs/plots', '/tmp/plots')
    """
    path = Path(path)
    return path if path.is_absolute() else Path(root) / path


def write_results(path: str | Path, results: dict) -> Path:
    """Write ``results`` as JSON (paths as strings, NaN as null) and say where.

    >>> import json, tempfile, pathlib
    >>> out = write_results(pathlib.Path(tempfile.mkdtemp()) / "r.json",
    ...                     {"dir": pathlib.Path("runs"), "x": float("nan")})
    >>> json.loads(out.read_text())
    {'dir': 'runs', 'x': None}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(results), indent=2, ensure_ascii=False) + "\n")
    log.info(f"Results written to {path.absolute()}")
    return path
