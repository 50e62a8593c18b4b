"""The notebooks: their shape (badge, one parameters cell of plain values, no logic, no stored outputs), the
helpers they call, and each one executed headless under papermill on the embedded default."""

import ast
import dataclasses
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from chartrl_colab import restamp
from chartrl_colab.colab import environment, notebook, packages, pipelines
from chartrl_colab.config import MODES, RunConfig

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("00_setup.ipynb", "01_poc.ipynb", "02_train.ipynb", "03_eval.ipynb", "04_monitor.ipynb")
# Every badge points at pyproject's [project.urls] Repository (tests/test_colab.py checks the clone cells too).
BADGE = restamp.badge_url(restamp.repo_url(ROOT), "{}")
# Parameters that are not settings of the package's configs: where things go, what to show.
NOTEBOOK_ONLY = {"mount_drive", "results_json", "install", "modes", "comparison_dir", "accelerate_config",
                 "checkpoints", "labels", "include_base", "ks", "eval_dir", "run_dirs", "compare", "plots_dir",
                 "output_root", "eval_samples", "eval_questions", "parallel_runs"}


def _read(name):
    return nbformat.read(str(NOTEBOOKS / name), as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _parameters(nb) -> dict:
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body}


# ----------------------------------------------------------------------------------------------- shape
def test_every_notebook_is_there():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == list(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_shape(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and BADGE.format(name) in nb.cells[0].source
    assert "colab-badge.svg" in nb.cells[0].source
    assert nb.metadata.kernelspec.name == "python3"
    assert "widgets" not in nb.metadata  # no widget state in git

    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is _code(nb)[0]  # the first code cell
    for node in ast.parse(tagged[0].source).body:  # plain values only: `name = literal`
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ast.literal_eval(node.value)

    setup = _code(nb)[1]  # the one setup cell, right after the parameters: collapsed in Colab
    assert setup.source.startswith("# @title ") and 'display-mode: "form"' in setup.source.splitlines()[0]
    assert len(setup.source.splitlines()) <= 14 and "packages.setup(" in setup.source
    for cell in _code(nb):
        assert cell.outputs == [] and cell.execution_count is None
        tree = ast.parse(cell.source)  # every code cell parses as plain Python (no magics)
        loops_or_defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.For,
                                                                      ast.While, ast.With, ast.Try, ast.Lambda))]
        assert not loops_or_defs, f"logic in a cell of {name}: {cell.source[:80]}"
        if any(isinstance(n, ast.If) for n in ast.walk(tree)):
            assert cell is setup  # only the setup cell branches (in Colab or not, cloned or not)
        if cell not in (tagged[0], setup):
            assert len(cell.source.splitlines()) <= 6, f"a long cell in {name}: {cell.source[:80]}"
    for before, cell in zip(nb.cells, nb.cells[1:]):  # a short word before each step
        if cell.cell_type == "code" and cell is not tagged[0]:
            assert before.cell_type == "markdown" and len(before.source) < 700, cell.source[:80]
    assert "notebook.write_results(" in _code(nb)[-1].source  # the last cell writes the results JSON


@pytest.mark.parametrize("name", NAMES)
def test_papermill_sees_every_parameter(name):
    """papermill's own inspection (``batch -p`` checks names with it) skips a line with a second ``=``, in a
    comment too (``# compute capability >= 8``): every assignment of the parameters cell must reach it."""
    import papermill

    assert list(papermill.inspect_notebook(str(NOTEBOOKS / name))) == list(_parameters(_read(name)))


def _choices(nb) -> dict[str, str]:
    """``name -> the text after # @param`` for each Colab form field of the parameters cell."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return dict(re.findall(r"^(\w+) = .*#\s*@param\s*(.*)$", cell.source, re.M))


def test_model_and_data_choices_are_every_name_the_package_knows():
    from chartrl_colab.config import DATASET_NAMES, MODEL_NAMES

    assert "tiny-warm" in MODEL_NAMES
    for name in ("01_poc.ipynb", "02_train.ipynb", "03_eval.ipynb"):
        fields = _choices(_read(name))
        assert ast.literal_eval(fields["vlm_name"]) == ["auto", *MODEL_NAMES], name
        assert ast.literal_eval(fields["dataset_name"]) == ["auto", *DATASET_NAMES], name


def test_train_settings_are_colab_form_fields():
    """In Colab the parameters cell is the form: Run all trains what its fields show."""
    from chartrl_colab.config import PRECISIONS

    fields = _choices(_read("02_train.ipynb"))
    assert ast.literal_eval(fields["mode"]) == list(MODES)
    assert ast.literal_eval(fields["precision"]) == list(PRECISIONS)
    for slider in ("reward_threshold", "lambda_psr"):
        assert fields[slider].startswith('{type:"slider"'), slider
    for name in ("subset_size", "seed", "max_steps", "num_generations", "batch_size", "num_epochs", "mount_drive",
                 "output_root", "precision"):
        assert name in fields, name
    params = _parameters(_read("02_train.ipynb"))
    given = {k: v for k, v in params.items() if k not in NOTEBOOK_ONLY and v != "auto"}
    RunConfig(**notebook.settings(given, RunConfig))  # valid as they stand, read as the notebook reads them


@pytest.mark.parametrize("name", NAMES)
def test_notebook_text_is_written_for_a_colab_user(name):
    text = "\n".join(c.source for c in _read(name).cells)
    for word in (r"\bthe seed\b", r"\bseed's\b", r"\bissue \d", r"\bTODO\b"):
        assert not re.search(word, text, re.I), (name, word)


def test_train_and_poc_parameters_are_run_config_fields():
    """A renamed RunConfig field must not leave a notebook parameter behind (papermill would ignore it); the
    original scripts' names of TRL's fields (RunConfig.aliases) are read as those fields."""
    fields = {f.name for f in dataclasses.fields(RunConfig)} | set(RunConfig.aliases)
    for name in ("01_poc.ipynb", "02_train.ipynb"):
        assert set(_parameters(_read(name))) - fields - NOTEBOOK_ONLY == set(), name


def test_eval_parameters_are_generate_config_fields():
    from chartrl_colab.generate import GenerateConfig

    fields = {f.name for f in dataclasses.fields(GenerateConfig)}
    assert set(_parameters(_read("03_eval.ipynb"))) - fields - NOTEBOOK_ONLY == set()


def test_poc_default_is_the_seed_validation():
    params = _parameters(_read("01_poc.ipynb"))
    assert params["modes"] == list(MODES) and params["subset_size"] == 100
    assert params["vlm_name"] == params["dataset_name"] == "auto"


# ----------------------------------------------------------------------------------------------- helpers
def test_auto_falls_back_to_the_embedded_default_without_a_gpu(capsys):
    params = {"vlm_name": "auto", "dataset_name": "auto", "max_completion_length": "auto", "resume": "auto"}
    cpu = environment.resolve_auto(params, gpu=False)
    assert (cpu["vlm_name"], cpu["dataset_name"], cpu["resume"]) == (*environment.CPU_DEFAULTS, "auto")
    assert "No GPU" in capsys.readouterr().out  # it says so
    gpu = environment.resolve_auto(params, gpu=True)
    assert (gpu["vlm_name"], gpu["dataset_name"]) == environment.GPU_DEFAULTS
    assert gpu["max_completion_length"] > cpu["max_completion_length"]
    named = environment.resolve_auto({**params, "vlm_name": "qwen2-vl-2b"}, gpu=False)
    assert named["vlm_name"] == "qwen2-vl-2b"  # a named model is never replaced


def test_install_does_nothing_outside_colab(monkeypatch):
    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: pytest.fail("pip ran outside Colab"))
    assert packages.install_requirements() is False


def test_colab_install_never_touches_torch(tmp_path, monkeypatch):
    reqs = tmp_path / "requirements-colab.txt"
    reqs.write_text("# comment\ntorch>=1\nno-such-package-chartrl>=1\npip\n")
    calls = []

    def fake_run(cmd, **kwargs):
        constraints = Path(cmd[cmd.index("-c") + 1]).read_text().split()
        requirements = Path(cmd[cmd.index("-r") + 1]).read_text().split()
        calls.append((cmd, constraints, requirements))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(packages.subprocess, "run", fake_run)
    assert packages.install_requirements(reqs, force=True, cuda=False) is True
    (cmd, constraints, requirements), = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert f"torch=={importlib.metadata.version('torch')}" in constraints  # pinned to the runtime's own build
    assert not any(r.startswith("torch") for r in requirements)
    assert "no-such-package-chartrl>=1" in requirements


def _requirements(tmp_path):
    reqs = tmp_path / "requirements-colab.txt"
    reqs.write_text("no-such-package-chartrl>=1\n")
    return reqs


def test_a_failed_pip_install_shows_pips_last_lines_and_one_error(tmp_path, monkeypatch, capsys):
    output = "\n".join(f"line {i}" for i in range(50))
    monkeypatch.setattr(packages.subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(
        cmd, 1, output, "ERROR: Could not find a version that satisfies the requirement no-such-package-chartrl>=1"))
    with pytest.raises(RuntimeError, match="pip install -r requirements-colab.txt failed \\(exit 1\\)"):
        packages.install_requirements(_requirements(tmp_path), force=True, cuda=False)
    tail = capsys.readouterr().out.splitlines()[-packages.PIP_TAIL:]
    assert tail[-1].startswith("ERROR: Could not find a version")
    assert "line 49" in tail and "line 31" in tail and "line 30" not in tail  # the tail, not the whole log


CONFLICT = ["ERROR: pip's dependency resolver does not currently take into account all the packages that are "
            "installed. This behaviour is the source of the following dependency conflicts.",
            "gradio 6.24.0 requires huggingface-hub<2.0,>=0.33.5, but you have huggingface-hub 2.4.0 which is "
            "incompatible.",
            "diffusers 0.39.0 requires huggingface-hub<2.0, but you have huggingface-hub 2.4.0 which is incompatible."]


def test_pips_conflict_report_is_shown_though_pip_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(packages.subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(
        cmd, 0, "", "\n".join(CONFLICT) + "\n"))
    assert packages.install_requirements(_requirements(tmp_path), force=True, cuda=False) is True
    out, err = capsys.readouterr()
    assert "warning: pip: pip's dependency resolver does not currently take into account" in err
    assert f"warning: {CONFLICT[1]}" in err and f"warning: {CONFLICT[2]}" in err
    assert "✓ Installed, but pip reports the conflicts above" in out and "✓ Installed." not in out


def test_a_restart_is_asked_only_for_imported_distributions_and_stops_run_all(tmp_path, monkeypatch, capsys):
    """Only a distribution whose modules this kernel imported is stale; the notice stops the notebook in one line."""
    assert "pytest" in sys.modules and "no_such_package_chartrl" not in sys.modules
    states = iter([{"pytest": "8.0.0", "no-such-package-chartrl": "1", "numpy": "2.0"},
                   {"pytest": "8.1.0", "no-such-package-chartrl": "2", "numpy": "2.0", "new-one": "1"}])
    monkeypatch.setattr(packages, "installed_versions", lambda: next(states))
    monkeypatch.setattr(packages.subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(cmd, 0, "", ""))
    with pytest.raises(packages.RestartRequired) as err:
        packages.install_requirements(_requirements(tmp_path), force=True, cuda=False)
    assert err.value._render_traceback_() == [
        "error: restart the runtime (Runtime > Restart session), then Run all again: this kernel had already imported "
        "pytest 8.0.0 (now 8.1.0)"]

    # Changed but never imported (the normal path once Colab's widgets are kept): no restart, the notebook goes on.
    states = iter([{"no-such-package-chartrl": "1"}, {"no-such-package-chartrl": "2", "new-one": "1"}])
    assert packages.install_requirements(_requirements(tmp_path), force=True, cuda=False) is True
    assert "✓ Installed." in capsys.readouterr().out


def test_bitsandbytes_is_installed_on_cuda_runtimes_only(tmp_path, monkeypatch):
    reqs = tmp_path / "requirements-colab.txt"
    reqs.write_text("bitsandbytes>=0.50  # CUDA only\nno-such-package-chartrl>=1\n")
    assert packages.requirement_lines(reqs, cuda=True) == ["bitsandbytes>=0.50", "no-such-package-chartrl>=1"]
    assert packages.requirement_lines(reqs, cuda=False) == ["no-such-package-chartrl>=1"]
    sent = []
    monkeypatch.setattr(packages.subprocess, "run", lambda cmd, **k: sent.append(
        Path(cmd[cmd.index("-r") + 1]).read_text()) or subprocess.CompletedProcess(cmd, 0, "", ""))
    monkeypatch.setattr(packages, "cuda_runtime", lambda: False)  # a CPU runtime
    packages.install_requirements(reqs, force=True)
    assert sent == ["no-such-package-chartrl>=1\n"]
    assert packages.requirements_file() == ROOT / "requirements-colab.txt"  # the clone's, which the cell installs
    assert "bitsandbytes" in packages.requirements_file().read_text()  # still there for a GPU runtime


def test_the_colab_requirements_keep_colabs_widgets_kernel_and_torch():
    from packaging.requirements import Requirement

    lines = packages.requirement_lines(ROOT / "requirements-colab.txt", cuda=True)
    names = {Requirement(line).name.lower().replace("_", "-") for line in lines}
    assert names.isdisjoint({"torch", "torchvision", "torchaudio", "ipywidgets", "ipykernel"})
    hub = next(Requirement(line) for line in lines if line.startswith("huggingface_hub"))
    assert "1.33.0" in hub.specifier and "2.0.0" not in hub.specifier  # Colab's gradio, diffusers: <2
    wandb = next(Requirement(line) for line in lines if line.startswith("wandb"))
    assert "0.28.1" in wandb.specifier  # Colab's own stays
    declared = {Requirement(r).name: Requirement(r) for r in _pyproject_dependencies()}
    assert "7.7.1" in declared["ipywidgets"].specifier and "6.17.1" in declared["ipykernel"].specifier
    assert "0.28.1" in declared["wandb"].specifier


def _pyproject_dependencies() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_colab_install_skips_pip_when_everything_is_there(tmp_path, monkeypatch):
    reqs = tmp_path / "requirements-colab.txt"
    reqs.write_text("pip\nnbformat>=5\n")
    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: pytest.fail("pip ran for nothing"))
    assert packages.install_requirements(reqs, force=True, cuda=False) is False


def test_accelerate_command_rebuilds_the_config():
    from chartrl_colab.train import config_from_argv

    cfg = RunConfig(mode="w-reinforce", subset_size=None, lambda_psr=0.3, seed=5, use_peft=False,
                    gradient_checkpointing=False, rewards=("format", "accuracy"), report_to=("none",),
                    output_root="somewhere", max_steps=7)
    cmd = pipelines.accelerate_command(cfg, "deepspeed_zero3.yaml", num_processes=4)
    assert cmd[:6] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "deepspeed_zero3.yaml",
                       "--num_processes"]
    flags = cmd[cmd.index("chartrl_colab.train") + 1:]
    assert config_from_argv(flags) == cfg


def test_deepspeed_config_is_a_valid_zero3_accelerate_config():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    cfg = load_config_from_file(str(ROOT / "deepspeed_zero3.yaml"))  # refuses unknown keys
    assert cfg.distributed_type == "DEEPSPEED" and cfg.deepspeed_config["zero_stage"] == 3
    assert cfg.num_machines == 1
    args = launch_command_parser().parse_args(["--config_file", str(ROOT / "deepspeed_zero3.yaml"),
                                               "--num_processes", "2", "-m", "chartrl_colab.train", "--mode", "nsr"])
    args, _, _ = _validate_launch_command(args)  # what `accelerate launch` does with it
    assert args.use_deepspeed and args.zero_stage == 3 and args.num_processes == 2
    assert args.module and args.training_script == "chartrl_colab.train"


def test_find_runs(tmp_path):
    from chartrl_colab.errors import ConfigError

    (tmp_path / "b-run" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "a-run" / "logs").mkdir(parents=True)
    (tmp_path / "plots").mkdir()
    assert pipelines.find_runs(tmp_path) == [tmp_path / "a-run", tmp_path / "b-run"]
    assert pipelines.find_runs(tmp_path, ["x"]) == [Path("x")]
    assert pipelines.find_runs(tmp_path / "empty", required=False) == []
    with pytest.raises(ConfigError, match="no run directories"):
        pipelines.find_runs(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------- headless runs
TINY_TRAIN = dict(vlm_name="tiny", dataset_name="synthetic", subset_size=4, num_generations=2, batch_size=1,
                  max_steps=2, save_steps=2, logging_steps=1, max_completion_length=8)


def _execute(name, tmp_path, source=None, **parameters) -> dict:
    """Run a notebook (``source``: an edited copy) headless; return its result JSON (written under output_root)."""
    import papermill

    out = tmp_path / f"executed-{name}"
    papermill.execute_notebook(str(source or NOTEBOOKS / name), str(out), parameters=parameters, cwd=str(tmp_path),
                               kernel_name="python3", progress_bar=False)
    executed = nbformat.read(str(out), as_version=4)
    assert not any(o.output_type == "error" for c in _code(executed) for o in c.outputs)
    default = _parameters(_read(name))["results_json"]
    return json.loads((Path(parameters["output_root"]) / parameters.get("results_json", default)).read_text())


@pytest.fixture(scope="module")
def poc(tmp_path_factory):
    """The POC notebook run once; the eval and monitor notebooks read its four pipelines."""
    root = tmp_path_factory.mktemp("poc")
    return root, _execute("01_poc.ipynb", root, output_root=str(root), eval_samples=3, eval_questions=2, **TINY_TRAIN)


@pytest.mark.slow
def test_poc_notebook_trains_four_modes_and_compares_them(poc):
    root, result = poc
    assert set(result["runs"]) == set(MODES) and result["modes"] == list(MODES)
    for mode, run in result["runs"].items():
        assert Path(run["run_dir"]) == root / f"{mode}-tiny-synthetic-4-2025"
        state = json.loads(Path(run["trainer_state"]).read_text())
        assert Path(run["trainer_state"]).parent.parent == Path(run["run_dir"])
        assert state["global_step"] == 2 == run["global_step"]
        assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2]
        assert run["totals"]["mode/num_positive"] + run["totals"]["mode/num_negative"] == 2 * 2  # 2 steps x 2 samples
    figures = [Path(p) for p in result["figures"]]
    assert {"loss.png", "rewards.png", "learning_rate.png", "grad_norm.png"} <= {p.name for p in figures}
    for png in figures:
        assert png.parent == root / "poc_comparison" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = Path(result["summary_txt"]).read_text()
    assert all(mode.upper() in summary for mode in MODES)
    assert set(json.loads(Path(result["summary_json"]).read_text())["runs"]) == {m.upper() for m in MODES}
    assert [line.split(":")[0][2:] for line in result["checks"]] == [m.upper() for m in MODES]
    assert not any(line.startswith("✗") for line in result["checks"])  # psr on the random tiny: expected, said so


@pytest.mark.slow
def test_poc_notebook_samples_the_base_and_each_mode_and_writes_the_table(poc):
    root, result = poc
    labels = ["Base", *(m.upper() for m in MODES)]
    assert [row["model"] for row in result["table"]] == labels  # one row per model, the base first
    for row in result["table"]:
        assert (row["n"], row["questions"]) == (3, 2)
        assert 0 <= row["pass_at_1"] <= row["pass_at_n"] <= 1
        assert row["pass_at_1_ci"][0] <= row["pass_at_1"] <= row["pass_at_1_ci"][1]
        assert 0 < row["mean_entropy"] < 7  # nats, below log(vocabulary 1024)
    table = Path(result["table_md"])
    assert table == root / "poc_comparison" / "poc_table.md" and table.read_text() == result["table_markdown"]
    lines = table.read_text().splitlines()
    assert any(line.startswith("| model | pass@1 | pass@n | mean entropy |") for line in lines)
    assert "mean per-token entropy" in lines[0]
    assert [line.split(" | ")[0][2:] for line in lines if line.startswith("| ") and "pass@1" not in line] == labels
    assert sorted(result["passk"]) == sorted(labels)
    assert all(curve["k"] == [1, 2, 3] and len(curve["ci_low"]) == 3 for curve in result["passk"].values())
    figures = [Path(p) for p in result["figures"]]
    assert [p.name for p in figures[:2]] == ["passk_curves.png", "passk_bars.png"]  # the pass@k plots first
    for label in labels:
        rows = [json.loads(line) for line in (root / "poc_comparison" / f"{label}.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(r["generation"]["split"] == "test" and len(r["entropy"]) == 3 for r in rows)
    assert set(result["seconds"]) == {"train", "sample", "compare"}


@pytest.mark.slow
def test_train_notebook_runs_the_form_config_and_resumes(tmp_path):
    # epsilon and lora_r are RunConfig fields the parameters cell does not list: papermill injects them anyway.
    assert {"epsilon", "lora_r"}.isdisjoint(_parameters(_read("02_train.ipynb")))
    params = dict(TINY_TRAIN, mode="w-reinforce", lambda_psr=0.3, seed=4, output_root=str(tmp_path), epsilon=0.3,
                  lora_r=4)
    # Run all on the form as a Colab user left it: mode, lambda_psr and seed set in its fields (the parameters
    # cell itself), the rest given as papermill parameters.
    nb = _read("02_train.ipynb")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for name, value in (("mode", '"w-reinforce"'), ("lambda_psr", "0.3"), ("seed", "4")):
        cell.source, count = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value}  ", cell.source, flags=re.M)
        assert count == 1 and "@param" in next(line for line in cell.source.splitlines() if line.startswith(name))
    nbformat.write(nb, str(tmp_path / "form.ipynb"))
    injected = {k: v for k, v in params.items() if k not in ("mode", "lambda_psr", "seed")}
    first = _execute("02_train.ipynb", tmp_path, source=tmp_path / "form.ipynb", **injected)
    run_dir = tmp_path / "w-reinforce-tiny-synthetic-4-4"
    assert first["run_dir"] == str(run_dir) and first["global_step"] == 2
    assert (first["config"]["mode"], first["config"]["lambda_psr"]) == ("w-reinforce", 0.3)  # the form's values
    assert first["checkpoint"] == str(run_dir / "checkpoint-2")
    from chartrl_colab.runs.record import read_run_json

    recorded = read_run_json(run_dir)["config"]
    assert (recorded["epsilon"], recorded["lora_r"]) == (0.3, 4)  # not dropped: they reached the run

    # It ends with the run's plots, its time figures and two answered training questions.
    assert "loss.png" in {Path(p).name for p in first["figures"]}
    assert all(Path(p).is_file() and Path(p).parent == run_dir / "plots" for p in first["figures"])
    assert first["costs"]["steps"] == 2 and first["costs"]["train_seconds"] > 0
    assert len(first["answers"]) == 2
    for answer in first["answers"]:
        assert answer["question"] and isinstance(answer["completion"], str)
        assert set(answer["rewards"]) == set(recorded["rewards"]) and isinstance(answer["correct"], bool)

    # Run all again with a longer budget: it continues from checkpoint-2 instead of starting over.
    second = _execute("02_train.ipynb", tmp_path, **{**params, "max_steps": 4, "save_steps": 2})
    assert second["global_step"] == 4 and second["checkpoint"] == str(run_dir / "checkpoint-4")
    resumes = read_run_json(run_dir)["resumes"]
    assert [r["step"] for r in resumes] == [0, 2]
    state = json.loads(Path(second["trainer_state"]).read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]


@pytest.mark.slow
def test_eval_notebook_compares_the_base_and_every_run(poc):
    root, trained = poc
    result = _execute("03_eval.ipynb", root, output_root=str(root), vlm_name="tiny", dataset_name="synthetic",
                      subset_size=2, num_samples=4, max_new_tokens=8, results_json="eval.json")
    runs = sorted(Path(r["run_dir"]).name for r in trained["runs"].values())
    assert sorted(result["pass_at_1"]) == sorted(["Base", *runs])
    assert set(result["n"].values()) == {4}
    for label, path in result["samples"].items():
        rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
        assert len(rows) == 2 and all(len(r["completions"]) == 4 for r in rows), label
    metrics = json.loads(Path(result["metrics_json"]).read_text())
    for label, value in result["pass_at_1"].items():
        assert metrics["models"][label]["pass_at_1"]["mean"] == value
    assert {Path(p).name for p in result["figures"]} == {"passk_curves.png", "passk_bars.png", "passk_differences.png"}
    assert all(Path(p).is_file() for p in result["figures"])
    modes = json.loads((root / "eval" / "modes.json").read_text())  # the runs pooled per mode, beside the base
    assert set(modes["modes"]) == {"Base", *(mode.upper() for mode in trained["runs"])}


@pytest.mark.slow
def test_monitor_notebook_plots_every_run(poc):
    root, trained = poc
    result = _execute("04_monitor.ipynb", root, output_root=str(root), plots_dir="mon")
    assert sorted(result["runs"]) == sorted(r["run_dir"] for r in trained["runs"].values())
    assert all(Path(p).is_file() and Path(p).parent == root / "mon" for p in result["figures"])
    assert "loss.png" in {Path(p).name for p in result["figures"]}
    assert {s["total_steps"] for s in result["summaries"].values()} == {2}
    assert result["errors"] == []


@pytest.mark.slow
def test_setup_notebook_reports_the_machine(tmp_path):
    import torch

    root = tmp_path / "runs"
    result = _execute("00_setup.ipynb", tmp_path, output_root=str(root))
    assert result["in_colab"] is False
    assert (result["gpu"] is not None) == torch.cuda.is_available()
    assert result["versions"]["torch"] == importlib.metadata.version("torch")
    assert result["output_root"] == str(root) and root.is_dir()
    expected = environment.GPU_DEFAULTS if torch.cuda.is_available() else environment.CPU_DEFAULTS
    assert (result["auto_defaults"]["vlm_name"], result["auto_defaults"]["dataset_name"]) == expected


@pytest.mark.slow
@pytest.mark.parametrize("parameters, words", [
    ({"reward_treshold": 0.9}, "error: parameter 'reward_treshold' is not a parameter of this notebook; did you mean "
                               "'reward_threshold'?"),
    ({"reward_threshold": -3}, "error: reward_threshold=-3 is not valid"),
])
def test_train_notebook_with_a_bad_parameter_fails_in_one_line(tmp_path, parameters, words):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as err:
        _execute("02_train.ipynb", tmp_path, output_root=str(tmp_path), **TINY_TRAIN, **parameters)
    assert err.value.traceback == [err.value.traceback[0]] and err.value.traceback[0].startswith(words)
    assert not list(tmp_path.glob("nsr-*"))  # nothing trained, nothing written
