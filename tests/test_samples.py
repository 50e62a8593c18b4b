"""The samples file on its own: reading (torn and damaged lines), resuming, the row schema, appending."""

import json
import subprocess
import sys

import pytest

from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation.samples import append_row, check_resume, make_row, read_rows, sync

ROW_KEYS = {"id", "question", "answer", "chart_type", "table", "reasoning", "completions", "num_tokens", "truncated",
            "entropy", "rewards", "correct", "n", "num_correct", "generation"}
EOS = 7


def data_row(i):
    return {"id": f"synthetic/test/0/{i}", "answer": str(i), "chart_type": "bar", "table": None, "reasoning": None,
            "prompt": [{"role": "system", "content": "sys"},
                       {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Q{i}?"}]}]}


def sample_row(i, **generation):
    return make_row(data_row(i), ["a", "b", ""], [[1, EOS], [1, 2, 3], []], [EOS],
                    {"accuracy": [1.0, 0.0, None]}, [True, False, False], {"seed": 1, "backend": "transformers",
                                                                           **generation})


def write(path, rows):
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            append_row(f, row)
        sync(f)


def test_make_row_schema():
    row = sample_row(3)
    assert set(row) == ROW_KEYS
    assert row["question"] == "Q3?"  # the text of the last user turn, image placeholders left out
    assert (row["id"], row["answer"], row["chart_type"]) == ("synthetic/test/0/3", "3", "bar")
    assert row["num_tokens"] == [2, 3, 0]
    assert row["truncated"] == [False, True, True]  # no EOS at the end: cut by the length limit
    assert (row["n"], row["num_correct"]) == (3, 1)


def test_rows_round_trip_and_a_missing_file_is_empty(tmp_path):
    path = tmp_path / "s.jsonl"
    assert read_rows(path) == []
    rows = [sample_row(i) for i in range(3)]
    write(path, rows[:2])
    write(path, rows[2:])
    assert read_rows(path) == json.loads(json.dumps(rows))


def test_a_torn_last_line_is_skipped_and_cut_off_on_repair(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    write(path, [sample_row(0)])
    whole = path.read_bytes()
    with path.open("a") as f:
        f.write('{"id": "synthetic/test/0/1", "compl')
    assert [r["id"] for r in read_rows(path, warn=True)] == ["synthetic/test/0/0"]
    told = capsys.readouterr().err.splitlines()
    assert told == [f"warning: {path}: ignoring the unfinished last line 2 (an interrupted generation)"]
    assert path.read_bytes() != whole  # reading alone leaves the file as it is
    read_rows(path, repair=True)
    assert path.read_bytes() == whole


def test_a_last_row_without_newline_is_finished_on_repair(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(sample_row(0)))
    assert len(read_rows(path)) == 1 and not path.read_text().endswith("\n")
    assert len(read_rows(path, repair=True)) == 1 and path.read_text().endswith("\n")


def test_a_damaged_line_before_the_last_is_an_error(tmp_path):
    path = tmp_path / "s.jsonl"
    write(path, [sample_row(0)])
    path.write_text("not json\n" + path.read_text())
    with pytest.raises(ConfigError, match=r"line 1 is not a samples row"):
        read_rows(path)


def test_resume_compares_every_setting_but_the_backend(tmp_path):
    path = tmp_path / "s.jsonl"
    rows = [sample_row(0), sample_row(1)]
    check_resume(path, rows, {"seed": 1, "backend": "vllm"})
    with pytest.raises(ConfigError, match=r"seed=1, not 2 \(question synthetic/test/0/0\)"):
        check_resume(path, rows, {"seed": 2, "backend": "transformers"})


def test_importing_samples_loads_neither_torch_nor_generate():
    code = "import sys, chartrl_colab.evaluation.samples; print('torch' in sys.modules, 'chartrl_colab.generate' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
