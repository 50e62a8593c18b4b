"""What notebook cells read and show: their settings, figures inline, outputs beside the runs, a results JSON.

The work itself (training a run, evaluating runs) is :mod:`chartrl_colab.colab.pipelines`. Every notebook ends by
writing its results (paths, key numbers) with :func:`write_results`; papermill runs and :mod:`chartrl_colab.batch`
read that file instead of the notebook's outputs.
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
    """The notebook's settings: every field of ``config_class`` that is a variable in ``namespace``.

    Cells pass ``globals()``: the parameters cell and the values papermill injected after it, so the
    parameters cell is the one list of a notebook's settings, and any field given with ``papermill -p``
    reaches the run even when the parameters cell does not list it.

    >>> from chartrl_colab.config import RunConfig
    >>> settings({"mode": "psr", "seed": 3, "modes": ["nsr"], "In": []}, RunConfig)
    {'mode': 'psr', 'seed': 3}
    """
    from chartrl_colab.cli import parser_for, settings_from
    from chartrl_colab.colab.environment import AUTO_KEYS

    parser = parser_for(config_class, "notebook", "")  # the CLI's parser: papermill's strings are read as flags are
    # Every name a parameter may have: the fields and the original scripts' spellings of them.
    names = [flag[2:] for flag in parser._option_string_actions if flag.startswith("--") and "-" not in flag[2:]
             and not flag.startswith("--no_") and flag != "--help"]
    check_injected(namespace.get("In") or [], names)
    known = set(names) - set(exclude)
    given = {name: value for name, value in namespace.items() if name in known}  # in the parameters cell's order
    return settings_from(parser, given, keep=AUTO_KEYS)  # "auto" sizes: environment.resolve_auto decides


def _assigned(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]


def check_injected(history, fields) -> None:
    r"""Refuse a papermill parameter that is no parameter of the notebook (``-p reward_treshold 0.9``).

    ``history`` is the kernel's ``In`` (the cells run so far): papermill runs its injected cell (it begins
    with ``# Parameters``) right after the notebook's parameters cell, so a name it sets must be one of
    ``fields`` or a name that cell sets. ConfigError names the closest valid one.

    >>> check_injected(["", "seed = 1\nmount_drive = False", "# Parameters\nmount_drive = True\n"], ["seed"])
    >>> check_injected(["", "seed = 1", "# Parameters\nsede = 3\n"], ["seed", "mode"])
    Traceback (most recent call last):
    chartrl_colab.errors.ConfigError: parameter 'sede' is not a parameter of this notebook; did you mean 'seed'?
    """
    for i, source in enumerate(history):
        if not isinstance(source, str) or not source.lstrip().startswith(INJECTED):
            continue
        valid = [*fields, *(_assigned(history[i - 1]) if i > 0 else [])]
        for name in _assigned(source):
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"the parameters are: {', '.join(sorted(valid))}"
                raise ConfigError(f"parameter {name!r} is not a parameter of this notebook; {hint}")


# ------------------------------------------------------------------------------------------ display, results
def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
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
    """One line of a run's time and memory figures (:func:`chartrl_colab.colab.pipelines.run_costs`); returns them.

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
    """``peak_gpu_memory_gb``, 11.24 -> ``Peak GPU memory: 11.2 GB``."""
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
    """``path`` as is when absolute, else inside ``root``: a notebook's outputs land beside its runs.

    >>> str(under("runs", "plots")), str(under("runs", "/tmp/plots"))
    ('runs/plots', '/tmp/plots')
    """
    path = Path(path)
    return path if path.is_absolute() else Path(root) / path


def write_results(path: str | Path, results: dict) -> Path:
    """Write a notebook's results as JSON (paths as strings, NaN as null) and say where.

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
