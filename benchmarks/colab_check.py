"""What the notebooks' install changes in Colab, without Colab: ``make colab-check``.

Colab publishes what its runtimes have installed (the public repository googlecolab/backend-info,
``pip-freeze.gpu.txt``). This builds a virtual environment of the same Python minor with Colab's pip and one
metadata stub per listed distribution (name and version, and the declared requirements where this machine
holds that release's wheel), then asks that pip to resolve ``requirements-colab.txt`` with the very command
the setup cell runs (:func:`chartrl_colab.colab.packages.pip_install_command`: torch, torchvision and
torchaudio held at Colab's builds, bitsandbytes included as on a GPU runtime) as a dry run, and prints what
would change. This machine's pip configuration (extra indexes, a torch cap) is ignored
(``PIP_CONFIG_FILE=/dev/null``, no ``PIP_*`` variables): pip resolves against the package index it reaches by
default, as Colab's does, so the resolution needs that index. Exit status 1 when a distribution that must
stay (:data:`KEEP`) would change or a checked declared requirement would break.

    python benchmarks/colab_check.py --freeze ../shared/colab/pip-freeze.gpu.txt [--python python3.13]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chartrl_colab.colab import packages  # noqa: E402

KEEP = ("torch", "torchvision", "torchaudio", "ipywidgets", "ipykernel", "widgetsnbextension")
WHEEL_DIRS = ("/opt/pypi/files", "/opt/pypi-more/files", "/opt/wheels")  # local wheels to read requirements from
_FILE_VERSION = re.compile(r"^[A-Za-z0-9_.]+?-(\d[A-Za-z0-9_.+!]*?)(-|\.tar|\.zip|\.whl)")


def read_freeze(path: Path) -> dict[str, tuple[str, str]]:
    """``pip freeze`` lines -> {canonical name: (name as written, version)}; ``name @ URL`` takes the version in
    the file name (else 0)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
        elif " @ " in line:
            name, url = (part.strip() for part in line.split(" @ ", 1))
            match = _FILE_VERSION.match(url.rsplit("/", 1)[-1].split("#")[0])
            version = match.group(1) if match else "0"
        else:
            continue
        try:
            Version(version)
        except InvalidVersion:
            version = "0"
        found[canonicalize_name(name)] = (name, version)
    return found


def local_requirements(wanted: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    """Declared requirements of the listed releases whose wheel lies on this machine (read from the wheel)."""
    found = {}
    for folder in WHEEL_DIRS:
        for wheel in glob.glob(f"{folder}/*.whl"):
            parts = Path(wheel).name.split("-")
            name = canonicalize_name(parts[0])
            if name in wanted and name not in found and parts[1] == wanted[name][1]:
                try:
                    with zipfile.ZipFile(wheel) as zf:
                        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
                        text = zf.read(meta).decode("utf-8", "replace")
                except (OSError, StopIteration, zipfile.BadZipFile):
                    continue
                found[name] = [line.split(":", 1)[1].strip() for line in text.split("\n\n", 1)[0].splitlines()
                               if line.startswith("Requires-Dist:")]
    return found


def build_venv(python: str, freeze: dict, requires: dict, where: Path, pip_version: str, env: dict) -> Path:
    """A venv with Colab's pip and a metadata stub per listed distribution (reused while the list is the same)."""
    key = hashlib.sha256(json.dumps([python, pip_version, sorted(freeze.items()), sorted(requires)]).encode())
    stamp = where / "stamp"
    py = where / "bin" / "python"
    if stamp.is_file() and stamp.read_text() == key.hexdigest() and py.exists():
        return py
    shutil.rmtree(where, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(where)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"pip=={pip_version}"], check=True, env=env)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for canonical, (name, version) in freeze.items():
        if canonical == "pip":
            continue  # the real pip is there
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                 *(f"Requires-Dist: {r}" for r in requires.get(canonical, []))]
        (info / "METADATA").write_text("\n".join(lines) + "\n")
        (info / "INSTALLER").write_text("colab-check stub\n")
        (info / "RECORD").write_text("")
    stamp.write_text(key.hexdigest())
    return py


def broken(final: dict[str, str], requires: dict[str, list[str]], python_version: str) -> list[str]:
    """``X v requires R, but Y w would be installed`` for each declared requirement the final set misses."""
    env = {"python_version": python_version, "python_full_version": python_version + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    out = []
    for owner, lines in sorted(requires.items()):
        for line in lines:
            try:
                req = Requirement(line)
            except Exception:  # noqa: BLE001 - a malformed requirement is not ours to judge
                continue
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            have = final.get(canonicalize_name(req.name))
            if have is not None and req.specifier and not req.specifier.contains(have, prereleases=True):
                out.append(f"{owner} {final.get(owner, '?')} requires {req}, but {req.name} {have} would be installed")
    return out


def find_python(minor: str) -> str | None:
    """A working ``python<minor>``: pyenv's installs first (its shims may point nowhere), then PATH."""
    candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{minor}*/bin/python{minor}")))
    candidates += [found for found in [shutil.which(f"python{minor}")] if found]
    for python in candidates:
        if subprocess.run([python, "--version"], capture_output=True).returncode == 0:
            return python
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--freeze", default=str(ROOT.parent / "shared/colab/pip-freeze.gpu.txt"))
    parser.add_argument("--requirements", default=str(ROOT / packages.REQUIREMENTS_FILE))
    parser.add_argument("--python", default=os.environ.get("COLAB_PYTHON", ""),
                        help="a Python of Colab's minor version (default: python3.13 on PATH or under ~/.pyenv)")
    parser.add_argument("--venv", default=str(ROOT / "build" / "colab-check"))
    args = parser.parse_args(argv)

    freeze = read_freeze(Path(args.freeze))
    python = args.python or find_python("3.13")
    if not python:
        print("error: no Python 3.13 found; pass --python (COLAB_PYTHON=...)", file=sys.stderr)
        return 2
    pip_version = freeze.get("pip", ("pip", "24.1.2"))[1]
    # Colab's pip sees no configuration of this machine: no extra indexes, no constraints, no find-links.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    requires = local_requirements(freeze)
    py = build_venv(python, freeze, requires, Path(args.venv), pip_version, env)
    minor = subprocess.run([str(py), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], check=True,
                           capture_output=True, text=True).stdout.strip()

    lines = packages.requirement_lines(args.requirements, cuda=True)  # Colab's GPU runtime
    pins = [f"{freeze[n][0]}=={freeze[n][1]}" for n in packages.NEVER_INSTALL if n in freeze]
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        cmd = packages.pip_install_command(lines, pins, tmp, python=str(py))
        cmd += ["--dry-run", "--quiet", "--report", str(report_path)]
        print(f"Resolving {Path(args.requirements).name} as Colab's pip {pip_version} would (Python {minor}, "
              f"{len(freeze)} distributions of {Path(args.freeze).name}; holding {', '.join(pins)}), against the "
              "package index pip reaches by default ...", flush=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr, file=sys.stderr)
            print(f"error: pip could not resolve (exit {proc.returncode})", file=sys.stderr)
            return 1
        report = json.loads(report_path.read_text())
    installs = {canonicalize_name(item["metadata"]["name"]): item["metadata"] for item in report["install"]}
    changed = {n: (freeze[n][1], m["version"]) for n, m in installs.items() if n in freeze}
    added = {n: m["version"] for n, m in installs.items() if n not in freeze}
    final = {n: v for n, (_, v) in freeze.items()} | {n: m["version"] for n, m in installs.items()}
    checked = {**requires, **{n: m.get("requires_dist", []) for n, m in installs.items()}}

    print(f"Changed ({len(changed)}): " + (", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(changed.items()))
                                          or "none"))
    print(f"Added ({len(added)}): " + (", ".join(f"{n} {v}" for n, v in sorted(added.items())) or "none"))
    kept = [f"{n} {freeze[n][1]}" for n in KEEP if n in freeze and n not in changed]
    print("Unchanged: " + ", ".join(kept))
    bad = broken(final, checked, minor)
    print(f"Declared requirements checked: the {len(installs)} distributions pip would install and "
          f"{len(requires)} of Colab's {len(freeze)} (those whose wheel is on this machine).")
    for line in bad:
        print(f"  broken: {line}")
    if not bad:
        print("  none broken.")
    moved = [n for n in KEEP if n in changed]
    for name in moved:
        print(f"error: {name} would change ({changed[name][0]} -> {changed[name][1]}); it must stay", file=sys.stderr)
    return 1 if moved or bad else 0


if __name__ == "__main__":
    sys.exit(main())
