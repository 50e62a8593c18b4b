"""The package's shape. Which layer may import which is declared in pyproject.toml ([tool.importlinter]) and
checked by ``lint-imports`` in ``make test``; here: every module imports alone, and the light ones without torch."""

import json
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


# Heavy modules are imported in children forked from one interpreter that has loaded the heavy libraries (never
# the package): each child still imports its module alone, and pays for that module's own imports only.
FORKED_IMPORTS = """
import importlib, json, os, sys, traceback
import peft, torch, transformers
from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser
failed = {}
for m in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module("chartrl_colab." + m)
            os._exit(0)
        except BaseException:
            os.write(w, traceback.format_exc()[-2000:].encode())
            os._exit(1)
    os.close(w)
    with os.fdopen(r) as f:
        why = f.read()
    if os.waitpid(pid, 0)[1]:
        failed[m] = why or "the import killed its process"
print(json.dumps(failed))
"""

LIGHT_IMPORT = """
import importlib, sys
importlib.import_module("chartrl_colab." + sys.argv[1])
print(",".join(sorted(h for h in ("torch", "transformers", "trl") if h in sys.modules)))
"""


def test_each_module_imports_alone_and_the_light_ones_without_torch():
    """Each module imported alone (an import that only works after another module of the package was imported
    first is a hidden cycle); the light ones, each in a fresh interpreter, must not pull in torch, transformers or
    TRL."""
    modules = _modules()
    assert "training.objectives" in modules and "rewards.similarity" in modules  # the walk sees subpackages
    light = [m for m in modules if _light(m)]
    heavy = [m for m in modules if not _light(m)]

    def run(m):
        return subprocess.run([sys.executable, "-c", LIGHT_IMPORT, m], capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(light, pool.map(run, light)))
    for m, proc in done.items():
        assert proc.returncode == 0, f"chartrl_colab.{m} does not import alone:\n{proc.stderr[-2000:]}"
        assert proc.stdout.strip() == "", f"chartrl_colab.{m} is meant to be light but loads {proc.stdout.strip()}"

    proc = subprocess.run([sys.executable, "-c", FORKED_IMPORTS, *heavy], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert failed == {}, "\n".join(f"chartrl_colab.{m} does not import alone:\n{why}" for m, why in failed.items())
