"""The package's shape. Which layer may import which is declared in pyproject.toml ([tool.importlinter]) and
checked by ``lint-imports`` in ``make test``; here: every module imports alone, and the light ones without torch."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "chartrl_colab"

# Settings' names, rewards, pass@k and run files: importable where torch is not (monitor and evaluate read files)
# without paying for torch. RunConfig itself is TRL's GRPOConfig (torch), built when first imported, so the
# notebook form (colab.widgets), which validates with it, is not light.
LIGHT = ("errors", "messages", "cli", "config", "restamp", "evaluate", "monitor", "rewards", "evaluation", "runs",
         "models.device", "models.samplers", "data.hub", "colab.packages", "batch")


def _modules() -> list[str]:
    return sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                  for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _light(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in LIGHT)


def test_each_module_imports_alone_and_the_light_ones_without_torch():
    """Each module in a fresh interpreter of its own (an import that only works after another module was
    imported first is a hidden cycle); the light ones must not pull in torch, transformers or TRL."""
    script = (
        "import importlib, sys\n"
        "m = sys.argv[1]\n"
        "importlib.import_module('chartrl_colab.' + m)\n"
        "heavy = sorted(h for h in ('torch', 'transformers', 'trl') if h in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    modules = _modules()
    assert "training.objectives" in modules and "rewards.similarity" in modules  # the walk sees subpackages
    def run(m):
        return subprocess.run([sys.executable, "-c", script, m], capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=4) as pool:  # a few at a time: each heavy import loads torch
        done = dict(zip(modules, pool.map(run, modules)))
    for m, proc in done.items():
        assert proc.returncode == 0, f"chartrl_colab.{m} does not import alone:\n{proc.stderr[-2000:]}"
        if _light(m):
            assert proc.stdout.strip() == "", f"chartrl_colab.{m} is meant to be light but loads {proc.stdout.strip()}"
