"""Batches of papermill runs: one process per run, GPU pinning, failures reported without stopping the rest."""

import json
import sys
from pathlib import Path

import nbformat
import pytest

from chartrl_colab import batch
from chartrl_colab.errors import ConfigError


def _notebook(path, extra=""):
    """A small notebook with the batch's parameters that fails for mode psr, in its third code cell."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('mode = "nsr"\nseed = 0\noutput_root = ""\nresults_json = "r.json"\n'
                                       'lr = 1e-6\nnote = "x"\n' + extra)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# test notebook"),
        params,
        nbformat.v4.new_code_cell("import json, os"),
        nbformat.v4.new_code_cell('if mode == "psr":\n    raise ValueError(f"made to fail for {mode}")'),
        nbformat.v4.new_code_cell('json.dump({"mode": mode, "seed": seed, "lr": lr, "note": note,\n'
                                  '           "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, open(results_json, "w"))'),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.mark.slow
def test_failing_run_is_reported_with_its_cell_and_the_other_completes(tmp_path, capsys):
    nb = _notebook(tmp_path / "nb.ipynb")
    root = tmp_path / "runs"
    code = batch.main(["--notebook", str(nb), "--modes", "nsr", "psr", "--seeds", "3", "--output-root", str(root),
                       "--gpus", "0,1", "-p", "lr", "2.5e-5", "-p", "note", "hello world"])
    assert code == 1  # the batch finished, and says that a run failed

    summary = json.loads((root / batch.SUMMARY_JSON).read_text())
    by_name = {r["name"]: r for r in summary}
    ok, bad = by_name["nsr-tiny-synthetic-100-3"], by_name["psr-tiny-synthetic-100-3"]

    # The good run ran to the end with the batch's parameters, types kept, pinned to one GPU.
    assert ok["ok"] and ok["error"] is None
    assert ok["results"]["mode"] == "nsr" and ok["results"]["seed"] == 3
    assert ok["results"]["lr"] == 2.5e-5 and ok["results"]["note"] == "hello world"
    # The executed notebook sits beside its run directory.
    assert ok["output_notebook"] == str(root / "nsr-tiny-synthetic-100-3.ipynb")
    assert ok["run_dir"] == str(root / "nsr-tiny-synthetic-100-3")
    executed = nbformat.read(ok["output_notebook"], as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)

    # The failing run names its cell and its error; its executed notebook keeps the traceback.
    assert not bad["ok"] and bad["results"] is None
    assert bad["error"] == "ValueError: made to fail for psr"
    assert 'if mode == "psr":' in bad["failed_cell"]
    executed = nbformat.read(bad["output_notebook"], as_version=4)
    failed = [c for c in executed.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
    assert len(failed) == 1 and bad["failed_cell"].startswith(f"In [{failed[0].execution_count}]: ")

    # Two GPUs, two runs: each pinned to its own GPU.
    assert sorted(r["gpus"] for r in summary) == ["0", "1"]
    assert ok["results"]["cuda"] == ok["gpus"]

    table = (root / batch.SUMMARY_MD).read_text()
    assert "| nsr-tiny-synthetic-100-3 | ok |" in table and str(root / "nsr-tiny-synthetic-100-3") in table
    assert "| psr-tiny-synthetic-100-3 | FAILED |" in table and "made to fail for psr" in table
    assert "1/2 runs succeeded" in capsys.readouterr().out


def test_accelerate_config_runs_one_at_a_time_on_all_gpus(tmp_path, monkeypatch):
    nb = _notebook(tmp_path / "nb.ipynb", extra='accelerate_config = ""')
    cfg_file = tmp_path / "ds.yaml"
    cfg_file.write_text("distributed_type: DEEPSPEED\n")
    seen = []

    def fake_execute(run, notebook, kernel="python3"):
        seen.append((run.name, run.gpus, run.parameters["accelerate_config"]))
        return batch.RunResult(run.name, True, 0.0, str(run.output_notebook), str(run.run_dir), str(run.log),
                               run.gpus, 0)

    monkeypatch.setattr(batch, "execute", fake_execute)
    monkeypatch.setattr(batch, "deepspeed_importable", lambda: True)
    report = batch.run_batch(batch.config_from_argv(
        ["--notebook", str(nb), "--modes", "grpo", "nsr", "--seeds", "1", "2", "--output-root", str(tmp_path / "r"),
         "--gpus", "0,1,2,3", "--accelerate-config", str(cfg_file)]))
    assert report.ok and len(seen) == 4
    assert {gpus for _, gpus, _ in seen} == {"0,1,2,3"}
    assert {acc for _, _, acc in seen} == {str(cfg_file.absolute())}


def test_plan_is_the_grid_of_modes_and_seeds(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb")
    runs = batch.plan(batch.BatchConfig(notebook=str(nb), modes=("grpo", "w-reinforce"), seeds=(1, 2),
                                        parameters={"lr": 0.1}, output_root=str(tmp_path / "out")))
    assert [r.name for r in runs] == ["grpo-tiny-synthetic-100-1", "grpo-tiny-synthetic-100-2",
                                      "w-reinforce-tiny-synthetic-100-1", "w-reinforce-tiny-synthetic-100-2"]
    for run in runs:
        assert run.output_notebook == tmp_path / "out" / f"{run.name}.ipynb"
        assert run.parameters["results_json"] == str(tmp_path / "out" / f"{run.name}.results.json")
        assert run.parameters["lr"] == 0.1 and "note" not in run.parameters  # defaults stay the notebook's


@pytest.mark.parametrize("argv,message", [
    (["--modes", "sft"], "mode='sft'"),
    (["-p", "learning_rate", "1"], "parameter 'learning_rate' is not in"),
    (["-p", "seed", "1"], "use --seeds"),
    (["--gpus", "0,x"], "gpus='0,x'"),
    (["--gpus", "1,1"], "gpus='1,1'"),
    (["--gpus", ""], "gpus=''"),  # not "no GPUs": that would run everything on the CPU
    (["--accelerate-config", "missing.yaml"], "accelerate_config='missing.yaml'"),
    (["--seeds", "1", "1"], "both named"),
])
def test_bad_batch_settings_fail_before_any_run(tmp_path, capsys, argv, message):
    nb = _notebook(tmp_path / "nb.ipynb", extra='accelerate_config = ""')
    code = batch.main(["--notebook", str(nb), "--output-root", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_deepspeed_config_without_deepspeed_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    nb = _notebook(tmp_path / "nb.ipynb", extra='accelerate_config = ""')
    monkeypatch.setattr(batch, "deepspeed_importable", lambda: False)
    argv = ["--notebook", str(nb), "--output-root", str(tmp_path / "out"), "--accelerate-config"]
    zero3 = str(Path(__file__).resolve().parents[1] / "deepspeed_zero3.yaml")  # the repository's own config
    code = batch.main(argv + [zero3])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "uses DeepSpeed, which is not installed" in err
    assert "chartrl-colab[deepspeed]" in err and not (tmp_path / "out").exists()
    plain = tmp_path / "ddp.yaml"
    plain.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\n")
    assert not batch.uses_deepspeed(plain) and batch.uses_deepspeed(zero3)


def test_missing_notebook_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        batch.plan(batch.BatchConfig(notebook=str(tmp_path / "nope.ipynb")))


def test_papermill_command_keeps_types(tmp_path):
    import base64

    import yaml

    run = batch.Run("x", {"mode": "nsr", "lr": 1e-6, "subset_size": None, "flag": True, "ks": [1, 2]},
                    tmp_path / "x.ipynb", tmp_path / "x", tmp_path / "x.log")
    cmd = batch.papermill_command(run, "nb.ipynb")
    assert cmd[:3] == [sys.executable, "-m", "papermill"]
    encoded = cmd[cmd.index("-b") + 1]
    assert yaml.safe_load(base64.b64decode(encoded)) == run.parameters
