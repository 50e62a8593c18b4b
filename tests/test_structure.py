"""The package's shape: imports flow one way (settings -> data/models/rewards -> trainer -> train -> readers ->
pipelines -> notebook glue), and the pure modules load without torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "chartrl_colab"

# A module may import (at the top or lazily inside a function) only modules of a lower layer. A new module
# must be placed here, which is the point: where it sits decides what it may use.
LAYERS = [
    ("errors",),
    ("similarity",),  # the reasoning rewards' sentence-similarity model, loaded lazily by rewards and chart_rvr
    ("cli", "rewards", "passk", "metrics", "restamp", "run_record"),
    ("chart_rvr",),
    ("reward_presets",),
    ("config",),
    ("storage", "objectives", "synthetic", "tiny_model", "device", "verdict", "run_lock", "resume_rules"),
    ("hub_data",),  # the readers of local files and the hub, below the schema and prompts data adds
    ("data",),
    ("warm_model",),  # the warm base is trained on data's prompts, and models loads it
    ("models", "trainer", "callbacks", "samples"),
    ("train",),
    ("monitor_plots", "samplers"),  # monitor's figures and log-history view; generate's samplers
    ("generate", "evaluate", "monitor"),
    ("runs",),
    ("poc", "environment", "notebook"),
    ("ui", "batch"),  # the form asks environment whether a person is at the notebook
]
RANK = {module: i for i, layer in enumerate(LAYERS) for module in layer}
# Settings, rewards, pass@k, run files and the form: importable where torch is not (the CLI validates, the
# notebook form renders, monitor and evaluate read files) without paying for torch.
PURE = ("errors", "cli", "config", "rewards", "passk", "restamp", "metrics", "chart_rvr", "reward_presets", "run_record",
        "storage", "run_lock", "resume_rules", "device", "samples", "evaluate", "monitor", "ui", "verdict", "hub_data",
        "monitor_plots", "samplers", "similarity")


def _modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chartrl_colab"):
            if node.module == "chartrl_colab":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("chartrl_colab.")}
    return found - {module}


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m not in RANK] == []


@pytest.mark.parametrize("module", _modules())
def test_imports_flow_downward(module):
    upward = sorted(dep for dep in _imports(module) if RANK[dep] >= RANK[module])
    assert upward == [], f"{module} (layer {RANK[module]}) imports {upward} from its own layer or above"


def test_the_import_graph_has_no_cycle():
    graph = {m: _imports(m) for m in _modules()}
    done, active = set(), []

    def visit(m):
        if m in active:
            pytest.fail("import cycle: " + " -> ".join(active[active.index(m):] + [m]))
        if m in done:
            return
        active.append(m)
        for dep in sorted(graph[m]):
            visit(dep)
        active.pop()
        done.add(m)

    for m in graph:
        visit(m)


def test_each_module_imports_alone_and_the_pure_ones_without_torch():
    """Each module in a fresh interpreter of its own (an import that only works after another module was
    imported first is a hidden cycle); the pure ones must not pull in torch, transformers or TRL."""
    script = (
        "import importlib, sys\n"
        "m = sys.argv[1]\n"
        "importlib.import_module('chartrl_colab.' + m)\n"
        "heavy = sorted(h for h in ('torch', 'transformers', 'trl') if h in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    procs = {m: subprocess.Popen([sys.executable, "-c", script, m], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for m in _modules()}
    for m, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"chartrl_colab.{m} does not import alone:\n{err[-2000:]}"
        if m in PURE:
            assert out.strip() == "", f"chartrl_colab.{m} is meant to be light but loads {out.strip()}"
