"""The packages a notebook needs: what its setup cell installs in Colab, and checks everywhere.

:func:`setup` is every notebook's setup cell. ``make colab-check`` resolves the same install command against
Colab's published package list (``benchmarks/colab_check.py``).
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

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from chartrl_colab.errors import ConfigError

log = logging.getLogger(__name__)

REQUIREMENTS_FILE = "requirements-colab.txt"
PACKAGE = "chartrl-colab"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where the package is imported from: a clone's root
# Colab's CUDA builds: reinstalling any of these from PyPI breaks the runtime.
NEVER_INSTALL = ("torch", "torchvision", "torchaudio")
CUDA_ONLY = ("bitsandbytes",)  # 4-bit loading on a CUDA GPU; on some CPUs its import only warns
PIP_TAIL = 20  # lines of pip's output shown when it fails


def _requirement_texts(lines) -> list[str]:
    """The requirement strings of a requirements file's ``lines`` (comments and blank lines dropped)."""
    return [text for text in (line.split("#", 1)[0].strip() for line in lines) if text]


def _requirements(lines) -> list:
    """The requirements ``lines`` hold whose markers apply here."""
    reqs = [Requirement(text) for text in _requirement_texts(lines)]
    return [req for req in reqs if req.marker is None or req.marker.evaluate({"extra": ""})]


def requirement_problems(requirements) -> list[str]:
    """One line per requirement the installed packages miss (absent, or outside the tested bounds).

    >>> requirement_problems(["# comment", "", "no-such-package-xyz>=1", "pip>=1"])
    ['no-such-package-xyz is not installed (needs >=1)']
    """
    problems = []
    for req in _requirements(requirements):
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{req.name} is not installed (needs {req.specifier or 'any version'})")
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{req.name} {installed} is installed; the tested versions are {req.specifier}")
    return problems


def package_requirements() -> list[str]:
    """The package's declared dependencies (pyproject's tested bounds); [] when not pip-installed."""
    try:
        return list(importlib.metadata.requires(PACKAGE) or [])
    except importlib.metadata.PackageNotFoundError:
        return []


def requirements_file() -> Path | None:
    """``requirements-colab.txt`` of the repository this package runs from, if it is there."""
    path = PACKAGE_ROOT / REQUIREMENTS_FILE
    return path if path.is_file() else None


def cuda_runtime() -> bool:
    """True on a machine whose torch sees a CUDA GPU (where bitsandbytes' 4-bit loading is used)."""
    try:
        import torch
    except ImportError:  # no torch at all: require_installed names it
        return False

    return torch.version.cuda is not None and torch.cuda.is_available()


def requirement_lines(path: str | Path, cuda: bool | None = None) -> list[str]:
    """The requirements ``path`` holds that pip may install here: never :data:`NEVER_INSTALL` (the runtime's CUDA
    build stays), and :data:`CUDA_ONLY` only with ``cuda`` (None: :func:`cuda_runtime`)."""
    cuda = cuda_runtime() if cuda is None else cuda
    skip = NEVER_INSTALL if cuda else NEVER_INSTALL + CUDA_ONLY
    return [text for text in _requirement_texts(Path(path).read_text().splitlines())
            if Requirement(text).name.lower() not in skip]


def pip_install_command(requirements: list[str], pins: list[str], folder: str | Path,
                        python: str = sys.executable) -> list[str]:
    """``python -m pip install -r REQS -c CONSTRAINTS`` for ``requirements`` with ``pins`` (``name==version``) held,
    the two files written into ``folder``."""
    reqs, constraints = Path(folder) / "requirements.txt", Path(folder) / "constraints.txt"
    reqs.write_text("\n".join(requirements) + "\n")
    constraints.write_text("\n".join(pins) + "\n")
    return [python, "-m", "pip", "install", "-r", str(reqs), "-c", str(constraints)]


def install_requirements(path: str | Path | None = None, force: bool = False, enabled: bool = True,
                         cuda: bool | None = None) -> bool:
    """In Colab, pip-install what ``requirements-colab.txt`` lists and this runtime lacks; True when pip ran.

    :data:`NEVER_INSTALL` is pinned to the installed versions (a constraints file), so no dependency can pull a
    CPU wheel over Colab's CUDA build. pip's conflict report is shown as warnings. :class:`RestartRequired` when
    the install changed a distribution this kernel has already imported (it would go on with the old code).
    """
    from chartrl_colab.runs.storage import in_colab

    if not enabled:
        log.info("install=False: nothing installed.")
        return False
    if not (force or in_colab()):
        log.info("Not in Colab: using the installed packages (pip install -e . installs them).")
        return False
    path = Path(path) if path else requirements_file()
    if path is None or not path.is_file():
        raise ConfigError(f"requirements file {str(path or REQUIREMENTS_FILE)!r} not found; clone the repository "
                          "and run from it")
    lines = requirement_lines(path, cuda)
    missing = requirement_problems(lines)
    if not missing:
        log.info(f"✓ Everything in {path.name} is installed.")
        return False
    before = installed_versions()
    pins = [f"{name}=={before[name]}" for name in NEVER_INSTALL if name in before]
    log.info(f"Installing what {path.name} lists and this runtime lacks ({len(missing)}), keeping "
             f"{', '.join(pins) or 'no torch'} ...")
    with tempfile.TemporaryDirectory() as tmp:
        # Captured, not streamed: pip's progress would fill the cell; its reasons and conflicts are shown.
        proc = subprocess.run(pip_install_command(lines, pins, tmp) + ["-q"], capture_output=True, text=True)
    output = (proc.stdout or "").splitlines() + (proc.stderr or "").splitlines()
    if proc.returncode != 0:
        print("\n".join([line for line in output if line.strip()][-PIP_TAIL:]))
        raise RuntimeError(f"pip install -r {path.name} failed (exit {proc.returncode}): pip's last lines are "
                           "above; fix what they name (often a version clash with Colab's packages) and rerun "
                           "this cell")
    conflicts = pip_conflicts(output)
    for line in conflicts:
        log.warning(line)
    after = installed_versions()
    # New installs are not stale: only a version this kernel may have imported before.
    changed = {name: (old, after[name]) for name, old in sorted(before.items()) if after.get(name, old) != old}
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
    """pip's report of installed packages whose declared requirements an install broke (pip exits 0 with it)."""
    start = next((i for i, line in enumerate(output) if "pip's dependency resolver" in line), None)
    if start is None:
        return []
    rest = [line for line in output[start + 1:] if " requires " in line or "has requirement" in line]
    return ["pip: " + output[start].removeprefix("ERROR: ").split(". ")[0] + ":", *rest]


def imported_distributions(changed) -> list[str]:
    """The distributions among ``changed`` (normalised names) of which this process has imported a module."""
    if not changed:
        return []
    modules = importlib.metadata.packages_distributions()  # top-level module -> distributions providing it
    imported = {canonicalize_name(dist) for module, dists in modules.items() if module in sys.modules for dist in dists}
    return [name for name in changed if canonicalize_name(name) in imported]


def require_installed(path: str | Path | None = None, cuda: bool | None = None) -> None:
    """Stop with one line naming the fix when a package the notebooks import is not installed (an install that was
    skipped, or a kernel from another environment): better than ``ModuleNotFoundError: trl`` cells later."""
    path = Path(path) if path else requirements_file()
    lines = requirement_lines(path, cuda) if path else package_requirements()
    needed = [*NEVER_INSTALL[:2], *(req.name for req in _requirements(lines))]  # torch: the runtime's own
    installed = installed_versions()
    missing = [name for name in dict.fromkeys(needed) if canonicalize_name(name) not in installed]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not installed in this kernel's Python ({sys.executable}): in Colab "
                          "set install = True (00_setup) and run the setup cell again; elsewhere pip install -e . "
                          "from the clone with that Python")


def share_with_children() -> None:
    """Make processes this kernel starts (``accelerate launch``, ``python -m chartrl_colab.train``) import the
    package from where this kernel does: a clone only put on ``sys.path`` is added to ``PYTHONPATH``."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if (PACKAGE_ROOT / "pyproject.toml").is_file() and str(PACKAGE_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *paths])


def repo_file(path: str | Path) -> str:
    """A file named relative to the repository (``deepspeed_zero3.yaml``) as an absolute path: from the current
    folder when it is there, else from the clone the package runs from; ``""`` stays ``""``."""
    if not path:
        return ""
    for candidate in (Path(path), PACKAGE_ROOT / path):
        if candidate.is_file():
            return str(candidate.resolve())
    raise ConfigError(f"{str(path)!r} not found in {Path.cwd()} nor in {PACKAGE_ROOT}")


def setup(install: bool = True) -> None:
    """Every notebook's setup cell: log lines in the cell, :func:`share_with_children`, in Colab the install of
    what is missing, then :func:`require_installed`."""
    from chartrl_colab.messages import configure_logging

    configure_logging()
    share_with_children()
    install_requirements(enabled=install)
    require_installed()


def installed_versions() -> dict[str, str]:
    """Every installed distribution's version, by normalised name."""
    importlib.invalidate_caches()
    return {canonicalize_name(d.metadata["Name"] or ""): d.version for d in importlib.metadata.distributions()}
