"""The package's shape. Which layer may import which is declared in pyproject.toml ([tool.importlinter]) and
checked by ``lint-imports`` in ``make test``; here: every module imports alone, and the light ones without torch."""

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "chartrl_colab"

# Settings' names, rewards, pass@k and run files: importable where torch is not (monitor and evaluate read files)
# without paying for torch. RunConfig itself is TRL's GRPOConfig (torch), built when first imported, so the
# notebook form (colab.widgets), which validates with it, is not light.
LIGHT = ("errors", "messages", "cli", "config", "restamp", "evaluate", "monitor", "rewards", "evaluation", "runs",
         "models.device", "models.samplers", "data.hub", "batch")


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
    procs = {m: subprocess.Popen([sys.executable, "-c", script, m], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for m in modules}
    for m, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"chartrl_colab.{m} does not import alone:\n{err[-2000:]}"
        if _light(m):
            assert out.strip() == "", f"chartrl_colab.{m} is meant to be light but loads {out.strip()}"
