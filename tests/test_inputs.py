"""Inputs as the field sends them: chart images in every Pillow mode, rows Qwen-VL's processor refuses, JSON
saved by editors (BOM, CRLF), samples rows of the wrong types, cut TensorBoard files, short runs."""

import csv
import io
import json
import warnings

import datasets
import numpy as np
import PIL.Image
import pytest

from chartrl_colab.data import hub as H
from chartrl_colab.data import loading as D
from chartrl_colab.data.images import processor_problem, to_rgb
from chartrl_colab.errors import ConfigError


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.delenv(H.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


# ------------------------------------------------------------------------------------------ image modes
def _chart_rgba(size=(40, 30)) -> PIL.Image.Image:
    """A transparent background stored as (0, 0, 0, 0) (as canvas exports store it) and one opaque blue bar
    over the left quarter: a viewer shows white with a blue bar."""
    a = np.zeros((size[1], size[0], 4), np.uint8)
    a[:, : size[0] // 4] = (30, 60, 200, 255)
    return PIL.Image.fromarray(a)


def _viewer_mean(size=(40, 30)) -> float:
    """Mean pixel of that chart as a viewer shows it: a quarter blue (30, 60, 200), three quarters white."""
    return (np.mean([30, 60, 200]) * (size[0] // 4) + 255 * (size[0] - size[0] // 4)) / size[0]


def _grey16(size=(40, 30)) -> np.ndarray:
    return np.tile(np.linspace(0, 65535, size[0]).astype(np.uint16), (size[1], 1))


def _modes() -> dict[str, tuple[PIL.Image.Image, np.ndarray]]:
    """Each Pillow mode with the RGB array a viewer shows for it."""
    rgba = _chart_rgba()
    viewer = np.asarray(PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255,) * 4), rgba).convert("RGB"))
    grey = _grey16()
    grey8 = np.rint(grey / 257.0).astype(np.uint8)
    grey_rgb = np.repeat(grey8[..., None], 3, axis=2)
    la = np.zeros((30, 40, 2), np.uint8)
    la[:, :10] = (100, 255)  # a grey bar, the rest transparent black
    la_view = np.full((30, 40, 3), 255, np.uint8)
    la_view[:, :10] = 100
    p_trans = rgba.convert("RGB").quantize(4)  # palette, index of black made transparent
    p_trans.info["transparency"] = p_trans.getpixel((39, 0))
    bw = np.zeros((30, 40), bool)
    bw[:, 20:] = True
    rgb = rgba.convert("RGB")
    floats = grey.astype(np.float32) / 65535.0
    return {
        "RGBA": (rgba, viewer),
        "LA": (PIL.Image.fromarray(la), la_view),
        "P+transparency": (p_trans, viewer),
        "P": (rgb.quantize(4), np.asarray(rgb.quantize(4).convert("RGB"))),
        "1": (PIL.Image.fromarray(bw), np.repeat((bw * 255).astype(np.uint8)[..., None], 3, axis=2)),
        "L": (PIL.Image.fromarray(grey8), grey_rgb),
        "RGB": (rgb, np.asarray(rgb)),
        "CMYK": (rgb.convert("CMYK"), np.asarray(rgb)),
        "I;16": (PIL.Image.fromarray(grey), grey_rgb),
        "I": (PIL.Image.fromarray(grey.astype(np.int32)), grey_rgb),
        "F": (PIL.Image.fromarray(floats), grey_rgb),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_every_mode_reaches_rgb_as_a_viewer_shows_it(mode):
    img, expected = _modes()[mode]
    assert img.mode == mode.split("+")[0]
    got = np.asarray(to_rgb(img))
    assert got.shape == expected.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_transparent_black_background_is_white_and_16_bit_is_scaled():
    rgba = _chart_rgba()
    assert np.asarray(rgba.convert("RGB")).mean() < 30  # Pillow's own conversion: a black chart
    assert np.asarray(to_rgb(rgba)).mean() == pytest.approx(_viewer_mean(), abs=0.01)
    grey = PIL.Image.fromarray(_grey16())
    got = np.asarray(to_rgb(grey))[..., 0]
    assert got[0, 0] == 0 and got[0, -1] == 255 and got.mean() == pytest.approx(127.5, abs=1)
    assert len(np.unique(got)) == 40  # a ramp, not one flat white image


def _png(img: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _evochart(tmp_path, images: dict[str, PIL.Image.Image], raw: bytes | None = None):
    root = tmp_path / "evochart"
    (root / "png").mkdir(parents=True)
    for name, img in images.items():
        (root / "png" / name).write_bytes(_png(img))
    records = [{"imgname": name, "query": f"What is shown in {name}?", "label": "3"} for name in images]
    (root / "EvoChart-QA.json").write_bytes(raw if raw is not None else json.dumps(records).encode())
    return root, records


def test_loaded_rows_hold_the_viewer_image(tmp_path):
    """A transparent chart and a 16-bit one through the loader (training, generate and the POC read here)."""
    root, _ = _evochart(tmp_path, {"a.png": _chart_rgba(), "b.png": PIL.Image.fromarray(_grey16())})
    ds = D.load_chart_dataset("evochart", "test", data_dir=str(root))
    by_name = {row["prompt"][-1]["content"]: row["image"] for row in ds}
    a = np.asarray(by_name["What is shown in a.png?"])
    b = np.asarray(by_name["What is shown in b.png?"])
    assert a.mean() == pytest.approx(_viewer_mean(), abs=0.01)
    assert b[0, 0, 0] == 0 and b[0, -1, 0] == 255


# ------------------------------------------------------------------------------------ processor refusals
@pytest.mark.parametrize("size,refused", [((4200, 20), True), ((4000, 20), False), ((20, 4020), True),
                                          ((1, 200), False), ((2, 401), True), ((1, 1), False)])
def test_processor_problem_matches_the_processor(size, refused):
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)
    try:
        processor(images=[PIL.Image.new("RGB", size, "white")], return_tensors="pt")
        took = True
    except ValueError:
        took = False
    assert took is not refused
    assert (processor_problem(*size) is not None) is refused


def test_refused_rows_are_skipped_with_one_warning(tmp_path):
    white = PIL.Image.new("RGB", (40, 30), "white")
    root, _ = _evochart(tmp_path, {"a.png": white, "b.png": white, "strip.png": PIL.Image.new("RGB", (4200, 20), "white"),
                                   "strip2.png": PIL.Image.new("RGB", (20, 4200), "white")})
    (root / "png" / "torn.png").write_bytes(_png(white)[:60])
    records = json.loads((root / "EvoChart-QA.json").read_text())
    records.append({"imgname": "torn.png", "query": "q?", "label": "1"})
    (root / "EvoChart-QA.json").write_text(json.dumps(records))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = D.load_chart_dataset("evochart", "test", data_dir=str(root))
    msgs = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(ds) == 2 and len(msgs) == 1
    assert "skipped 3 of 5 rows" in msgs[0]
    assert "2 images the Qwen-VL processor refuses (an aspect ratio above 200)" in msgs[0]
    assert "1 unreadable images" in msgs[0]


def test_every_row_refused_is_one_error(tmp_path):
    root, _ = _evochart(tmp_path, {"strip.png": PIL.Image.new("RGB", (4200, 20), "white")})
    with pytest.raises(ConfigError) as err:
        D.load_chart_dataset("evochart", "test", data_dir=str(root))
    assert "no usable rows" in str(err.value) and "aspect ratio above 200" in str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------- JSON as editors save it
def _as_editor_saves(obj) -> bytes:
    """JSON as Windows Notepad saves it: a UTF-8 byte-order mark and CRLF line ends."""
    return b"\xef\xbb\xbf" + json.dumps(obj, indent=2, ensure_ascii=False).replace("\n", "\r\n").encode()


def test_evochart_json_with_bom_and_crlf(tmp_path):
    white = PIL.Image.new("RGB", (40, 30), "white")
    records = [{"imgname": "a.png", "query": "Wert von Ä?", "label": "3"}]
    root, _ = _evochart(tmp_path, {"a.png": white}, raw=_as_editor_saves(records))
    ds = D.load_chart_dataset("evochart", "test", data_dir=str(root))
    assert ds[0]["prompt"][-1]["content"] == "Wert von Ä?" and ds[0]["answer"] == "3"


def _samples_row(qid="q1", **override):
    row = {"id": qid, "question": "q?", "answer": "3", "completions": ["<answer>3</answer>", "<answer>4</answer>"],
           "num_tokens": [5, 6], "truncated": [False, False], "entropy": [0.5, 0.25],
           "rewards": {"accuracy": [1.0, 0.0]}, "correct": [True, False], "n": 2, "num_correct": 1,
           "generation": {"seed": 1}}
    return {**row, **override}


def test_samples_file_with_bom_and_crlf(tmp_path):
    from chartrl_colab.evaluate import load_samples

    path = tmp_path / "s.jsonl"
    lines = [json.dumps(_samples_row("q1")), json.dumps(_samples_row("q2"))]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    got = load_samples(path)
    assert got.ids == ["q1", "q2"] and got.c.tolist() == [1, 1] and got.n.tolist() == [2, 2]
    assert got.mean_entropy == pytest.approx((0.5 * 5 + 0.25 * 6) / 11)


def test_run_json_and_trainer_state_with_bom(tmp_path):
    from chartrl_colab.monitor import load_history
    from chartrl_colab.runs.record import read_run_json

    (tmp_path / "run.json").write_bytes(_as_editor_saves({"config": {"mode": "nsr"}}))
    assert read_run_json(tmp_path)["config"]["mode"] == "nsr"
    state = {"global_step": 3, "train_batch_size": 2, "max_steps": 3,
             "log_history": [{"loss": 1.0, "step": 1}, {"loss": 0.5, "step": 3}]}
    (tmp_path / "trainer_state.json").write_bytes(_as_editor_saves(state))
    assert [h["step"] for h in load_history(tmp_path)] == [1, 3]


# --------------------------------------------------------------------------- samples rows of wrong types
@pytest.mark.parametrize("field,value,said", [
    ("entropy", ["0.5", "0.25"], "field 'entropy' holds '0.5' in its list"),
    ("num_tokens", ["5", "6"], "field 'num_tokens' holds '5' in its list"),
    ("entropy", 0.5, "field 'entropy' holds 0.5, not a list"),
    ("completions", "<answer>3</answer>", "field 'completions' holds '<answer>3</answer>', not a list"),
    ("correct", 1, "field 'correct' holds 1, not a list"),
    ("rewards", {"accuracy": 1.0}, "field 'rewards.accuracy' holds 1.0, not a list"),
    ("n", "2", "field 'n' holds '2', not a whole number"),
    ("truncated", [False], "field 'truncated' has 1 values where 'n' has 2"),
])
def test_samples_row_of_wrong_type_is_one_line(tmp_path, field, value, said):
    from chartrl_colab.evaluate import load_samples

    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(_samples_row("q1")) + "\n" + json.dumps(_samples_row("q2", **{field: value})) + "\n")
    for metric in ("relaxed_correctness", "verifier"):
        with pytest.raises(ConfigError) as err:
            load_samples(path, metric=metric)
        msg = str(err.value)
        assert str(path) in msg and "line 2" in msg and "'q2'" in msg and said in msg and "\n" not in msg


# ------------------------------------------------------------------------------------- short runs, cut logs
def test_the_last_step_is_logged_whatever_logging_steps():
    """transformers' flow asks for no log at step 3 of 3 with logging_steps 10; with LogLastStep it does."""
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

    from chartrl_colab.training.callbacks import LogLastStep

    args = TrainingArguments(output_dir="unused", logging_steps=10, logging_first_step=True, report_to=[])
    for callbacks, logged in (([DefaultFlowCallback], [1]), ([DefaultFlowCallback, LogLastStep], [1, 3])):
        handler = CallbackHandler([c() for c in callbacks], None, None, None, None)
        state = TrainerState(max_steps=3, logging_steps=10)
        seen = []
        for step in (1, 2, 3):
            state.global_step = step
            control = handler.on_step_end(args, state, TrainerControl())
            if control.should_log:
                seen.append(step)
        assert seen == logged


def test_total_steps_come_from_the_trainer_state(tmp_path, capsys):
    """A 3-step run that logged step 1 only (logging_steps 10): "Total steps: 3", not 1."""
    from chartrl_colab.monitor import monitor

    ckpt = tmp_path / "nsr-run" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    state = {"global_step": 3, "max_steps": 3, "train_batch_size": 2, "logging_steps": 10,
             "log_history": [{"loss": 1.0, "reward": 0.5, "step": 1}]}
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    report = monitor(ckpt, output_dir=tmp_path / "plots")
    assert report.summaries["nsr-run"]["total_steps"] == 3
    assert "Total steps: 3" in capsys.readouterr().out


def _events_run(tmp_path, steps=4):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "nsr-cut"
    (run / "logs").mkdir(parents=True)
    writer = SummaryWriter(str(run / "logs"))
    for step in range(1, steps + 1):
        writer.add_scalar("train/loss", 1.0 / step, step)
    writer.close()
    (events,) = (run / "logs").glob("events.out.tfevents.*")
    return run, events


def _record_ends(events):
    import struct

    data, pos, ends = events.read_bytes(), 0, []
    while pos < len(data):
        pos += 12 + struct.unpack("<Q", data[pos:pos + 8])[0] + 4
        ends.append(pos)
    return ends


def test_a_cut_events_file_says_so_and_what_was_read(tmp_path, capsys):
    from chartrl_colab.monitor import monitor

    run, events = _events_run(tmp_path)
    ends = _record_ends(events)  # the header (file version), then one record per step
    events.write_bytes(events.read_bytes()[: ends[2] + 7])  # steps 1 and 2 whole, step 3 cut
    report = monitor(run, output_dir=tmp_path / "plots")
    s = report.summaries["nsr-cut"]
    out, err = capsys.readouterr()
    assert s["total_steps"] == 2 and f"cut at byte {ends[2] + 7}" in s["cut"]
    assert "read 2 logged step(s), steps 1..2" in s["cut"] and "Log cut:" in out and "warning: " in out + err


def test_an_events_file_cut_in_its_header_says_so(tmp_path):
    from chartrl_colab.monitor import load_history

    run, events = _events_run(tmp_path)
    events.write_bytes(events.read_bytes()[:20])
    with pytest.raises(ConfigError) as err:
        load_history(run)
    msg = str(err.value)
    assert "cut at byte 20" in msg and "cut is in the file's header" in msg and "no step logged" not in msg


# ------------------------------------------------------------------------------------ generate's weights
def _weights(folder, step, checkpoint=True):
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.full((8, 8), float(step))}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x", "peft_type": "LORA"}))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "train_batch_size": 2,
                                                           "log_history": [{"loss": 1.0, "step": step}]}))
    return folder


def test_generate_takes_the_newest_complete_weights(tmp_path, capsys):
    from chartrl_colab.models.source import resolve_checkpoint

    run = tmp_path / "nsr-run"
    _weights(run / "checkpoint-2", 2)
    newest = _weights(run / "checkpoint-4", 4)
    data = (newest / "adapter_model.safetensors").read_bytes()
    (newest / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])  # killed mid-save
    _weights(run, 4)  # the final model at the run root, complete
    ckpt, run_dir = resolve_checkpoint(run)
    out, err = capsys.readouterr()
    assert ckpt == run.resolve() and run_dir == run.resolve()
    assert "skipping incomplete checkpoint" in err and f"Using the run's final model ({run}, step 4)" in out

    (run / "trainer_state.json").write_text('{"global_step": 4, "train_')  # final model torn too: checkpoint-2
    assert resolve_checkpoint(run)[0] == (run / "checkpoint-2").resolve()
    assert f"Using checkpoint-2 ({run / 'checkpoint-2'}, step 2)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- faults of the machine
def _enospc(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_under_evaluate_names_the_file_and_leaves_no_partial_plot(tmp_path, monkeypatch, capsys):
    import matplotlib.figure

    from chartrl_colab.evaluate import main

    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps(_samples_row("q1")) + "\n" + json.dumps(_samples_row("q2")) + "\n")
    original = matplotlib.figure.Figure.savefig

    def half_then_full(self, fname, **kwargs):
        original(self, fname, **kwargs)
        data = open(fname, "rb").read()
        open(fname, "wb").write(data[: len(data) // 2])
        _enospc()

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_then_full)
    out_dir = tmp_path / "eval"
    assert main(["--samples", str(samples), "--output-dir", str(out_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0] and str(out_dir / "passk_curves.png") in err[0]
    assert list(out_dir.iterdir()) == []  # no partial PNG under its name or a temporary one

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", original)
    monkeypatch.setattr(csv, "writer", lambda f: _enospc())
    assert main(["--samples", str(samples), "--output-dir", str(out_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out_dir / "passk_table.csv") in err[0]
    assert sorted(p.name for p in out_dir.iterdir()) == ["passk_bars.png", "passk_curves.png"]


def test_a_staging_folder_that_is_a_file_is_refused_before_the_run_directory(tmp_path, capsys):
    from chartrl_colab.train import main

    staging = tmp_path / "staging"
    staging.write_text("not a folder")
    runs = tmp_path / "runs"
    assert main(["--mode", "nsr", "--vlm-name", "tiny", "--dataset-name", "synthetic", "--subset-size", "2",
                 "--output-root", str(runs), "--staging-dir", str(staging), "--report-to", "tensorboard"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(staging) in err[0]
    assert not runs.exists()  # no run directory holding only a .lock


# ------------------------------------------------------------------------------------------------ generate
def _generate_config(path, **overrides):
    from chartrl_colab.generate import GenerateConfig

    settings = dict(vlm_name="tiny", dataset_name="synthetic", split="test", subset_size=3, num_samples=2,
                    max_new_tokens=4, batch_size=4, seed=7, output=str(path))
    return GenerateConfig(**{**settings, **overrides})


def test_a_resumed_generate_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """Two questions per generate call (batch_size 2n): a kill between the two rows of a call, then a rerun."""
    from chartrl_colab.generate import generate_samples

    whole = generate_samples(_generate_config(tmp_path / "whole.jsonl")).read_text().splitlines(keepends=True)
    assert len(whole) == 3
    cut = tmp_path / "cut.jsonl"
    cut.write_text(whole[0] + whole[1][: len(whole[1]) // 2])  # question 1 written, question 2 torn
    generate_samples(_generate_config(cut))
    assert cut.read_text() == "".join(whole)


def test_a_full_disk_under_generate_names_the_file(tmp_path, monkeypatch, capsys):
    from chartrl_colab import generate as gen

    monkeypatch.setattr(gen, "append_row", lambda f, row: _enospc())
    out = tmp_path / "samples.jsonl"
    assert gen.main(["--vlm-name", "tiny", "--dataset-name", "synthetic", "--subset-size", "1", "--num-samples", "2",
                     "--max-new-tokens", "4", "--output", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]
    assert len(err) == 1 and err[0].startswith("error: ") and "no space left" in err[0] and str(out) in err[0]


# ----------------------------------------------------------------------- folders as Drive and Windows name them
def test_a_short_run_in_folders_with_spaces_and_non_ascii_names(tmp_path, capsys):
    """train (3 steps, logging every 10) -> generate -> evaluate -> monitor, every folder named as people name
    them; the run's last step is logged and monitor counts 3 steps."""
    from chartrl_colab import evaluate, generate, monitor, train

    root = tmp_path / "Mein Drive" / "Läufe 2026 – café"
    assert train.main(["--mode", "nsr", "--vlm-name", "tiny", "--dataset-name", "synthetic", "--subset-size", "4",
                       "--num-generations", "2", "--batch-size", "2", "--max-steps", "3", "--max-completion-length",
                       "8", "--logging-steps", "10", "--save-steps", "50", "--report-to", "tensorboard",
                       "--output-root", str(root), "--seed", "3"]) == 0
    (run,) = root.iterdir()
    state = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 3]

    samples = tmp_path / "Ergebnisse (neu)" / "échantillons nsr.jsonl"
    assert generate.main(["--checkpoint", str(run), "--dataset-name", "synthetic", "--subset-size", "2",
                          "--num-samples", "2", "--max-new-tokens", "4", "--output", str(samples)]) == 0
    out = tmp_path / "Auswertung ü"
    assert evaluate.main(["--samples", str(samples), "--labels", "NSR ü", "--output-dir", str(out / "eval")]) == 0
    assert (out / "eval" / "passk_curves.png").stat().st_size > 0
    capsys.readouterr()
    assert monitor.main(["--checkpoint-dir", str(run), "--output-dir", str(out / "plots")]) == 0
    assert "Total steps: 3" in capsys.readouterr().out
    assert json.loads((out / "plots" / "summary.json").read_text())["runs"][run.name]["total_steps"] == 3
