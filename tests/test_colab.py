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
from chartrl_colab.colab import environment, packages, pipelines
from chartrl_colab.errors import ConfigError
from chartrl_colab.runs import storage

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _bootstrap(nb):
    """The setup cell (it fetches the package in Colab)."""
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
    assert restamp.restamp(restamp.repo_url(ROOT), tmp_path)
    assert (tmp_path / "pyproject.toml").read_text() == (ROOT / "pyproject.toml").read_text()
    for path in NOTEBOOKS:
        assert (tmp_path / "notebooks" / path.name).read_text() == path.read_text()
    assert restamp.restamp(restamp.repo_url(ROOT), tmp_path) == []  # nothing left to do


@pytest.mark.parametrize("bad", ["not a repo", "a/b/c", "https://gitlab.com/a/b"])
def test_restamp_refuses_what_is_not_a_github_repository(bad, tmp_path, capsys):
    assert restamp.main([bad, "--root", str(tmp_path)]) == 2
    assert "OWNER/REPO" in capsys.readouterr().err


def _run_bootstrap(repo: str, cwd: Path, monkeypatch, colab: bool = True) -> dict:
    """The setup cell as Colab (or another kernel) runs it: the package not importable yet, ``repo`` as REPO;
    ``packages.setup`` only recorded."""
    source = re.sub(r'^REPO = "[^"]*"', f"REPO = {repo!r}", _bootstrap(nbformat.read(str(NOTEBOOKS[0]), 4)).source,
                    flags=re.M)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "chartrl_colab" else real(name, *a))
    monkeypatch.setattr(sys, "path", list(sys.path))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    monkeypatch.setattr(packages, "setup", lambda *a, **k: calls.append(a))
    monkeypatch.chdir(cwd)
    namespace = {"install": True}
    exec(compile(source, "bootstrap", "exec"), namespace)
    return {**namespace, "setup_calls": calls}


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
    ran = _run_bootstrap(f"file://{origin}", work, monkeypatch)
    assert (work / "chartrl-colab" / "README.md").is_file() and sys.path[0] == str(work / "chartrl-colab")
    assert ran["setup_calls"] == [(True,)]  # 00_setup passes its install setting
    _run_bootstrap(str(tmp_path / "gone"), work, monkeypatch)  # already cloned: no second clone, no error


def test_a_kernel_without_the_package_says_so_and_clones_nothing(tmp_path, monkeypatch):
    """papermill with a python3 kernel of another environment: that Python lacks the package; outside Colab the
    cell never clones (and never runs a published copy instead of the local checkout)."""
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("cloned outside Colab"))
    with pytest.raises(ModuleNotFoundError) as err:
        _run_bootstrap(str(tmp_path / "no-such-repo"), tmp_path, monkeypatch, colab=False)
    assert f"This kernel's Python ({sys.executable}) has no chartrl_colab" in str(err.value)
    assert "git" not in str(err.value) and not (tmp_path / "chartrl-colab").exists()


def test_skipping_the_install_names_the_fix_in_one_line(tmp_path, monkeypatch):
    reqs = tmp_path / "requirements-colab.txt"
    reqs.write_text("nbformat>=5\nno-such-package-chartrl>=1  # say, trl\nbitsandbytes>=0.50\n")
    monkeypatch.setattr(packages, "requirements_file", lambda: reqs)
    monkeypatch.setattr(packages, "cuda_runtime", lambda: False)
    with pytest.raises(ConfigError) as err:
        packages.setup(install=False)
    (line,) = err.value._render_traceback_()  # what the notebook shows: one line, no traceback
    assert line.startswith("error: no-such-package-chartrl not installed in this kernel's Python")
    assert "set install = True" in line and "pip install -e ." in line and "bitsandbytes" not in line


def test_child_processes_import_the_package_from_the_clone(tmp_path, monkeypatch):
    """accelerate launch starts `python -m chartrl_colab.train` in a child: it must import this clone."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    packages.share_with_children()
    child = subprocess.run([sys.executable, "-c", "import chartrl_colab; print(chartrl_colab.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(child.stdout.strip()).resolve() == ROOT / "chartrl_colab" / "__init__.py"
    packages.share_with_children()  # once is enough: not added twice
    assert packages.os.environ["PYTHONPATH"].split(packages.os.pathsep).count(str(ROOT)) == 1
    # A relative accelerate config resolves in the clone, not in the notebook's folder (/content in Colab).
    monkeypatch.chdir(tmp_path)
    assert packages.repo_file("deepspeed_zero3.yaml") == str(ROOT / "deepspeed_zero3.yaml")
    assert packages.repo_file("") == ""
    with pytest.raises(ConfigError, match="'nothing.yaml' not found"):
        packages.repo_file("nothing.yaml")


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


def test_auto_mounts_drive_in_colab_so_notebooks_share_runs(colab, tmp_path, capsys):
    root = environment.prepare_output_root("", "auto")
    lines = capsys.readouterr().out.splitlines()
    assert colab == [str(tmp_path / "drive")]
    assert root == tmp_path / "drive" / storage.DRIVE_RUNS and root.is_dir()
    assert "on Google Drive" in lines[-1]
    # A second notebook (or 02_train reopened) lands in the same folder, where its run directory is.
    (root / "nsr-run" / "logs").mkdir(parents=True)
    assert environment.prepare_output_root("", "auto") == root
    assert pipelines.find_runs(root) == [root / "nsr-run"]


def test_auto_does_not_mount_outside_colab_and_no_means_no(colab, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(storage, "COLAB_MARKER", tmp_path / "missing")
    assert environment.prepare_output_root(str(tmp_path / "r"), "auto") == tmp_path / "r"
    monkeypatch.setattr(storage, "COLAB_MARKER", tmp_path / "colab-hostname")
    capsys.readouterr()
    environment.prepare_output_root(str(tmp_path / "r"), "no")
    lines = capsys.readouterr().out.splitlines()
    assert colab == [] and "mount_drive='yes'" in lines[-1]
    assert environment.should_mount(True) is True and environment.should_mount("yes", colab=False) is True
    with pytest.raises(ConfigError, match="mount_drive='maybe'"):
        environment.should_mount("maybe")


def test_a_headless_kernel_in_colab_never_waits_for_a_mount_nobody_can_authorise(colab, tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "interactive_front_end", lambda: False)  # papermill, batch
    assert not environment.should_mount("auto")
    environment.prepare_output_root(str(tmp_path / "r"), "auto")
    assert colab == []
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)  # the notebook that started it had mounted Drive
    assert environment.prepare_output_root("", "auto") == tmp_path / "drive" / storage.DRIVE_RUNS


def test_mount_drive_yes_that_fails_stops_the_notebook(colab, tmp_path, monkeypatch, capsys):
    def timeout(path):
        raise ValueError("mount failed: timeout during initial read of root folder")

    monkeypatch.setattr(sys.modules["google.colab"], "drive", types.SimpleNamespace(mount=timeout))
    with pytest.raises(ConfigError) as err:
        environment.prepare_output_root("", "yes")
    (line,) = err.value._render_traceback_()
    assert line.startswith("error: mount_drive='yes' but Google Drive did not mount (mount failed: timeout")
    assert "mount_drive='no'" in line and not (tmp_path / "drive").exists()
    assert "Runs will be stored" not in capsys.readouterr().out  # it did not go on
    # "auto" that fails goes on, on this runtime, and says so.
    root = environment.prepare_output_root(str(tmp_path / "local"), "auto")
    assert root == tmp_path / "local" and "set mount_drive='yes'" in capsys.readouterr().out
    monkeypatch.setattr(storage, "COLAB_MARKER", tmp_path / "missing")  # not Colab: "yes" cannot be met
    with pytest.raises(ConfigError, match="not Google Colab"):
        environment.prepare_output_root(str(tmp_path / "r"), "yes")


def test_run_all_in_colab_trains_what_the_form_fields_show(colab, tmp_path, monkeypatch):
    """02_train's cells as Colab's Run all runs them after a person changed the form fields: no Train button,
    the values of the fields reach the run (the ipywidgets form passes them through in Colab)."""
    from chartrl_colab.colab import notebook

    cells = [c.source for c in nbformat.read(str(ROOT / "notebooks" / "02_train.ipynb"), 4).cells
             if c.cell_type == "code"]
    form = {"mode": '"w-reinforce"', "lambda_psr": "0.35", "reward_threshold": "0.75", "vlm_name": '"tiny"',
            "dataset_name": '"synthetic"', "subset_size": "12", "seed": "9", "output_root": repr(str(tmp_path))}
    params = cells[0]
    for name, value in form.items():  # what choosing in Colab's dropdowns and sliders writes into the cell
        params, count = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value}  ", params, flags=re.M)
        assert count == 1, name
    trained = []
    monkeypatch.setattr(packages, "setup", lambda *a: None)  # the install itself is tested on its own
    monkeypatch.setattr(pipelines, "train_run", lambda cfg, accelerate_config: trained.append(cfg) or {})
    namespace = {"In": []}
    for source in [params, *cells[1:5]]:  # parameters, setup, settings, form, train
        exec(compile(source, "cell", "exec"), namespace)
    (cfg,) = trained
    assert (cfg.mode, cfg.lambda_psr, cfg.reward_threshold, cfg.vlm_name, cfg.subset_size, cfg.seed) == (
        "w-reinforce", 0.35, 0.75, "tiny", 12, 9)
    assert cfg.run_dir == str(tmp_path / "w-reinforce-tiny-synthetic-12-9")
    assert "w-reinforce" in repr(namespace["form"])  # what the form cell shows in Colab: the values as text
    assert notebook.settings(namespace, type(cfg))["mode"] == "w-reinforce"


def test_zero_runs_says_where_it_looked_and_about_drive(colab, tmp_path, capsys):
    assert pipelines.find_runs(tmp_path / "content-runs", required=False) == []
    lines = capsys.readouterr().out.splitlines()
    assert str(tmp_path / "content-runs") in lines[0] and "Google Drive is not mounted" in lines[0]
    environment.prepare_output_root("", "yes")
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


def test_eval_defaults_on_a_gpu_without_runs_pick_a_split_that_exists(capsys):
    from chartrl_colab.data.loading import SPLITS
    from chartrl_colab.generate import GenerateConfig

    settings = environment.resolve_eval(EVAL_DEFAULTS, [], gpu=True)
    lines = capsys.readouterr().out.splitlines()
    assert (settings["vlm_name"], settings["dataset_name"], settings["split"]) == ("qwen2-5-3b", "chartqa", "test")
    assert settings["split"] in SPLITS[settings["dataset_name"]]
    assert any("'chart-rvr' has no 'test' split" in line for line in lines)
    GenerateConfig(**settings)  # what 03_eval builds: valid


def test_eval_auto_follows_the_runs_run_json(tmp_path, capsys):
    trained = [_run(tmp_path, f"{m}-qwen", vlm_name="qwen2-vl-2b", dataset_name="chart-rvr", max_completion_length=300)
               for m in ("nsr", "psr")]
    other = _run(tmp_path, "grpo-tiny", vlm_name="tiny", dataset_name="synthetic", max_completion_length=8)
    settings = environment.resolve_eval(EVAL_DEFAULTS, [*trained, other / "checkpoint-2"], gpu=True)
    lines = capsys.readouterr().out.splitlines()
    assert (settings["vlm_name"], settings["dataset_name"], settings["split"]) == ("qwen2-vl-2b", "chartqa", "test")
    assert settings["max_new_tokens"] == 300
    assert "2 of 3" in lines[0] and "tiny/synthetic" in lines[0]  # the odd run is named
    # On a CPU too: the runs say where they were trained; a named setting is kept.
    cpu = environment.resolve_eval({**EVAL_DEFAULTS, "dataset_name": "chartqa"}, [other], gpu=False)
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


# ------------------------------------------------------------------------------------ make colab-check
def _colab_check():
    spec = importlib.util.spec_from_file_location("colab_check", ROOT / "benchmarks" / "colab_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_colab_check_reads_colabs_list_and_finds_a_broken_declared_requirement(tmp_path):
    check = _colab_check()
    freeze = tmp_path / "pip-freeze.gpu.txt"
    freeze.write_text("# generated\ngradio==6.24.0\nhuggingface_hub==1.27.0\ntorch==2.11.0+cu128\n"
                      "google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz\n"
                      "kernel_gateway @ git+https://github.com/x/kernel_gateway@b134e99\n")
    listed = check.read_freeze(freeze)
    assert listed["huggingface-hub"] == ("huggingface_hub", "1.27.0") and listed["torch"][1] == "2.11.0+cu128"
    assert listed["google-colab"][1] == "1.0.0" and listed["kernel-gateway"][1] == "0"
    requires = {"gradio": ["huggingface-hub<2.0,>=0.33.5", "audioop-lts<1.0; python_version >= '3.13'"]}
    final = {"gradio": "6.24.0", "huggingface-hub": "2.4.0", "audioop-lts": "0.2.1"}
    assert check.broken(final, requires, "3.13") == [
        "gradio 6.24.0 requires huggingface-hub<2.0,>=0.33.5, but huggingface-hub 2.4.0 would be installed"]
    assert check.broken({**final, "huggingface-hub": "1.33.0"}, requires, "3.13") == []
