"""Runs in processes of their own: the relay, the failure report, and the samples being those of one at a time."""

import json
import sys

import pytest

from chartrl_colab.colab import pipelines
from chartrl_colab.errors import ConfigError


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_processes_relays_every_line_under_its_label(capsys):
    pipelines.run_processes({"a": python("print('one'); print(); print('two')"), "b": python("print('three')")},
                            parallel=2)
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("[a] ") and "$" not in line] == ["[a] one", "[a] two"]
    assert [line for line in lines if line.startswith("[b] ") and "$" not in line] == ["[b] three"]


def test_progress_bars_are_off_in_the_processes(capsys):
    pipelines.run_processes({"a": python("import os; print(os.environ.get('TQDM_DISABLE'))")})
    assert "[a] 1" in capsys.readouterr().out.splitlines()


def test_run_processes_runs_them_at_once(tmp_path):
    # Each one waits for the other's file: one at a time, the first would give up after 60 s and fail.
    wait = ("import pathlib, sys, time\n"
            "d = pathlib.Path(sys.argv[1]); (d / sys.argv[2]).touch()\n"
            "for _ in range(600):\n"
            "    if (d / sys.argv[3]).exists(): sys.exit(0)\n"
            "    time.sleep(0.1)\n"
            "sys.exit(1)")
    seconds = pipelines.run_processes({"a": python(wait) + [str(tmp_path), "a", "b"],
                                       "b": python(wait) + [str(tmp_path), "b", "a"]}, parallel=2)
    assert set(seconds) == {"a", "b"}


def test_a_failed_process_is_named_with_its_last_lines():
    with pytest.raises(RuntimeError) as err:
        pipelines.run_processes({"fine": python("print('ok')"),
                                 "broken": python("print('last words'); raise SystemExit(3)")}, parallel=2)
    assert "broken exited with 3" in str(err.value) and "last words" in str(err.value)
    assert "fine" not in str(err.value)


def test_train_run_through_accelerate_relays_its_lines_and_names_a_failure(tmp_path, monkeypatch, capsys):
    from chartrl_colab.config import RunConfig

    cfg = RunConfig(output_root=str(tmp_path), max_steps=1)
    launched = []
    monkeypatch.setattr(pipelines, "accelerate_command",
                        lambda cfg, file: launched.append(file) or python("print('step 1 of 1')"))
    summary = pipelines.train_run(cfg, "zero3.yaml")
    assert launched == ["zero3.yaml"] and "[accelerate launch] step 1 of 1" in capsys.readouterr().out
    assert summary["run_dir"] == cfg.run_dir and summary["checkpoint"] is None
    monkeypatch.setattr(pipelines, "accelerate_command", lambda cfg, file: python("print('oom'); raise SystemExit(3)"))
    with pytest.raises(RuntimeError, match="accelerate launch exited with 3; last output:\noom"):
        pipelines.train_run(cfg, "zero3.yaml")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_parallel_runs_must_be_a_whole_number_of_at_least_one(bad):
    with pytest.raises(ConfigError, match=rf"parallel_runs={bad!r} is not valid; a whole number >= 1"):
        pipelines.run_processes({"a": python("pass")}, parallel=bad)


def test_sampling_in_parallel_gives_the_samples_of_one_at_a_time(finished_run, tmp_path, capsys):
    settings = dict(vlm_name="tiny", dataset_name="synthetic", split="test", subset_size=3, num_samples=2,
                    max_new_tokens=6, seed=5)
    checkpoint = [str(finished_run / "checkpoint-2")]
    one = pipelines.evaluate_runs(checkpoint, ["NSR"], output_dir=tmp_path / "one", **settings)
    capsys.readouterr()
    two = pipelines.evaluate_runs(checkpoint, ["NSR"], output_dir=tmp_path / "two", parallel=2, **settings)
    relayed = capsys.readouterr().out.splitlines()
    assert "[NSR] sampling: 3/3 questions, correct" in "\n".join(relayed)  # progress without a bar

    def rows(path):
        return [json.loads(line) for line in path.read_text().splitlines()]

    for label in ("Base", "NSR"):
        assert two["samples"][label].parent == tmp_path / "two"
        assert rows(two["samples"][label]) == rows(one["samples"][label]) and rows(one["samples"][label])
    assert two["pass_at_1"] == one["pass_at_1"]
