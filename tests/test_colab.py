"""The Colab path without Colab: the repository address in one place (badges, clone cells, restamping for a fork),
the clone cell's failure, Drive on by default, and 03_eval's "auto" on a faked GPU."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from chartrl_colab import restamp
from chartrl_colab.colab import environment, pipelines
from chartrl_colab.errors import ConfigError
from chartrl_colab.runs import storage

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _bootstrap(nb):
    return next(c for c in nb.cells if c.cell_type == "code" and "git" in c.source and "clone" in c.source)


def _addresses(root: Path) -> set[str]:
    """Every repository address the notebooks under ``root`` carry (badges and clone lines)."""
    found = set()
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        badge = re.search(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/", nb.cells[0].source)
        found.add("https://github.com/" + badge.group(1))
        found.add(re.search(r'^REPO = "([^"]+)"', _bootstrap(nb).source, re.M).group(1))
    return found


# ------------------------------------------------------------------------------------ the address
def test_every_badge_and_clone_cell_agrees_with_pyproject():
    url = restamp.repo_url(ROOT)
    assert url.startswith("https://github.com/") and "OWNER" not in url
    for path in NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        assert restamp.badge_url(url, path.name) in nb.cells[0].source, path.name
        assert restamp.clone_line(url) in _bootstrap(nb).source, path.name
    assert _addresses(ROOT) == {url}


def test_restamp_rewrites_every_address_for_a_fork(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    assert restamp.main(["someone/my-fork", "--root", str(tmp_path)]) == 0
    fork = "https://github.com/someone/my-fork"
    assert restamp.repo_url(tmp_path) == fork and _addresses(tmp_path) == {fork}
    for path in sorted((tmp_path / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
        assert restamp.badge_url(fork, path.name) in nb.cells[0].source
    # Only the address changed: restamping back gives the original files byte for byte.
    assert restamp.restamp(restamp.repo_url(ROOT), tmp_path, echo=lambda *a: None)
    assert (tmp_path / "pyproject.toml").read_text() == (ROOT / "pyproject.toml").read_text()
    for path in NOTEBOOKS:
        assert (tmp_path / "notebooks" / path.name).read_text() == path.read_text()
    assert restamp.restamp(restamp.repo_url(ROOT), tmp_path, echo=lambda *a: None) == []  # nothing left to do


@pytest.mark.parametrize("bad", ["not a repo", "a/b/c", "https://gitlab.com/a/b"])
def test_restamp_refuses_what_is_not_a_github_repository(bad, tmp_path, capsys):
    assert restamp.main([bad, "--root", str(tmp_path)]) == 2
    assert "OWNER/REPO" in capsys.readouterr().err


def _run_bootstrap(repo: str, cwd: Path, monkeypatch) -> dict:
    """The bootstrap cell as Colab runs it: the package not importable yet, ``repo`` as REPO."""
    source = re.sub(r'^REPO = "[^"]*"', f"REPO = {repo!r}", _bootstrap(nbformat.read(str(NOTEBOOKS[0]), 4)).source,
                    flags=re.M)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "chartrl_colab" else real(name, *a))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(cwd)
    namespace = {}
    exec(compile(source, "bootstrap", "exec"), namespace)
    return namespace


def test_a_failed_clone_shows_gits_message_and_what_to_set(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError) as err:
        _run_bootstrap(str(tmp_path / "no-such-repo"), tmp_path, monkeypatch)
    message = str(err.value)
    assert "no-such-repo" in message and "fatal:" in message  # git's own words
    assert "Set REPO above to your fork's URL" in message


def test_the_clone_cell_clones_once_and_puts_the_clone_on_the_path(tmp_path, monkeypatch):
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "README.md").write_text("x\n")
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
    work = tmp_path / "content"
    work.mkdir()
    _run_bootstrap(f"file://{origin}", work, monkeypatch)
    assert (work / "chartrl-colab" / "README.md").is_file() and sys.path[0] == str(work / "chartrl-colab")
    _run_bootstrap(str(tmp_path / "gone"), work, monkeypatch)  # already cloned: no second clone, no error


# ------------------------------------------------------------------------------------ Drive by default
@pytest.fixture
def colab(tmp_path, monkeypatch):
    """Colab faked: google.colab with a drive.mount that creates MyDrive, a hostname file, a temp mount."""
    mounted = []

    def mount(path):
        mounted.append(path)
        (Path(path) / "MyDrive").mkdir(parents=True, exist_ok=True)

    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", module)
    marker = tmp_path / "colab-hostname"
    marker.write_text("vm")
    monkeypatch.setattr(storage, "COLAB_MARKER", marker)
    monkeypatch.setattr(storage, "DRIVE_MOUNT", tmp_path / "drive")
    monkeypatch.delenv(storage.ROOT_ENV, raising=False)
    monkeypatch.setattr(environment, "interactive_front_end", lambda: True)  # a person at Colab's front end
    return mounted


def test_every_notebook_mounts_drive_on_auto():
    for path in NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert re.search(r'^mount_drive = "auto"', params.source, re.M), path.name


def test_auto_mounts_drive_in_colab_so_notebooks_share_runs(colab, tmp_path):
    lines = []
    root = environment.prepare_output_root("", "auto", echo=lines.append)
    assert colab == [str(tmp_path / "drive")]
    assert root == tmp_path / "drive" / storage.DRIVE_RUNS and root.is_dir()
    assert "on Google Drive" in lines[-1]
    # A second notebook (or 02_train reopened) lands in the same folder, where its run directory is.
    (root / "nsr-run" / "logs").mkdir(parents=True)
    assert environment.prepare_output_root("", "auto", echo=lines.append) == root
    assert pipelines.find_runs(root) == [root / "nsr-run"]


def test_auto_does_not_mount_outside_colab_and_no_means_no(colab, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "COLAB_MARKER", tmp_path / "missing")
    assert environment.prepare_output_root(str(tmp_path / "r"), "auto", echo=lambda *a: None) == tmp_path / "r"
    monkeypatch.setattr(storage, "COLAB_MARKER", tmp_path / "colab-hostname")
    lines = []
    environment.prepare_output_root(str(tmp_path / "r"), "no", echo=lines.append)
    assert colab == [] and "mount_drive='yes'" in lines[-1]
    assert environment.should_mount(True) is True and environment.should_mount("yes", colab=False) is True
    with pytest.raises(ConfigError, match="mount_drive='maybe'"):
        environment.should_mount("maybe")


def test_a_headless_kernel_in_colab_never_waits_for_a_mount_nobody_can_authorise(colab, tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "interactive_front_end", lambda: False)  # papermill, batch
    assert not environment.should_mount("auto")
    environment.prepare_output_root(str(tmp_path / "r"), "auto", echo=lambda *a: None)
    assert colab == []
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)  # the notebook that started it had mounted Drive
    assert environment.prepare_output_root("", "auto", echo=lambda *a: None) == tmp_path / "drive" / storage.DRIVE_RUNS


def test_zero_runs_says_where_it_looked_and_about_drive(colab, tmp_path):
    lines = []
    assert pipelines.find_runs(tmp_path / "content-runs", required=False, echo=lines.append) == []
    assert str(tmp_path / "content-runs") in lines[0] and "Google Drive is not mounted" in lines[0]
    environment.prepare_output_root("", "yes", echo=lambda *a: None)
    with pytest.raises(ConfigError, match="Google Drive is mounted at") as err:
        pipelines.find_runs(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


# ------------------------------------------------------------------------------------ 03_eval "auto"
EVAL_DEFAULTS = {"vlm_name": "auto", "dataset_name": "auto", "split": "test", "max_new_tokens": "auto", "seed": 1}


def _run(root: Path, name: str, **config) -> Path:
    run_dir = root / name
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"config": config}))
    return run_dir


def test_eval_defaults_on_a_gpu_without_runs_pick_a_split_that_exists():
    from chartrl_colab.data.loading import SPLITS
    from chartrl_colab.generate import GenerateConfig

    lines = []
    settings = environment.resolve_eval(EVAL_DEFAULTS, [], gpu=True, echo=lines.append)
    assert (settings["vlm_name"], settings["dataset_name"], settings["split"]) == ("qwen2-5-3b", "chartqa", "test")
    assert settings["split"] in SPLITS[settings["dataset_name"]]
    assert any("'chart-rvr' has no 'test' split" in line for line in lines)
    GenerateConfig(**settings)  # what 03_eval builds: valid


def test_eval_auto_follows_the_runs_run_json(tmp_path):
    trained = [_run(tmp_path, f"{m}-qwen", vlm_name="qwen2-vl-2b", dataset_name="chart-rvr", max_completion_length=300)
               for m in ("nsr", "psr")]
    other = _run(tmp_path, "grpo-tiny", vlm_name="tiny", dataset_name="synthetic", max_completion_length=8)
    lines = []
    settings = environment.resolve_eval(EVAL_DEFAULTS, [*trained, other / "checkpoint-2"], gpu=True, echo=lines.append)
    assert (settings["vlm_name"], settings["dataset_name"], settings["split"]) == ("qwen2-vl-2b", "chartqa", "test")
    assert settings["max_new_tokens"] == 300
    assert "2 of 3" in lines[0] and "tiny/synthetic" in lines[0]  # the odd run is named
    # On a CPU too: the runs say where they were trained; a named setting is kept.
    cpu = environment.resolve_eval({**EVAL_DEFAULTS, "dataset_name": "chartqa"}, [other], gpu=False,
                                   echo=lambda *a: None)
    assert (cpu["vlm_name"], cpu["dataset_name"], cpu["split"], cpu["max_new_tokens"]) == ("tiny", "chartqa", "test", 8)


# ------------------------------------------------------------------------------------ 02_train's last figures
def test_run_costs_take_what_training_recorded_and_work_out_the_rest(tmp_path, capsys):
    from chartrl_colab.colab import notebook

    run_dir = tmp_path / "nsr-run"
    run_dir.mkdir()
    record = {"started": "2025-01-01T10:00:00+0000", "ended": "2025-01-01T10:02:30+0000", "global_step": 10,
              "peak_gpu_memory_gb": 11.24, "performance": {"seconds_per_step": 4.5}, "config": {"seed": 1}}
    (run_dir / "run.json").write_text(json.dumps(record))
    costs = pipelines.run_costs(run_dir)
    assert costs == {"peak_gpu_memory_gb": 11.24, "seconds_per_step": 4.5, "wall_seconds": 150.0, "steps": 10}
    notebook.show_costs(costs)
    line = capsys.readouterr().out
    assert "150 s from start to end" in line and "4.5 s per step over 10 steps" in line
    assert "Peak GPU memory: 11.2 GB" in line
    (run_dir / "run.json").write_text(json.dumps({"config": {}}))  # a CPU run of an older version
    notebook.show_costs(pipelines.run_costs(run_dir))
    assert "Peak GPU memory: not recorded" in capsys.readouterr().out
