"""The notebook form: widgets move the configuration, bad values are refused with a message, and in a front end
nothing trains before the Train button chose the values."""

import html

import pytest

from chartrl_colab.colab.widgets import FORM_FIELDS, RunForm
from chartrl_colab.config import MODES, RunConfig
from chartrl_colab.errors import ConfigError

PARAMS = dict(mode="nsr", vlm_name="tiny", dataset_name="synthetic", subset_size=16, seed=7,
              reward_threshold=0.5, lambda_psr=0.1, max_steps=3, num_generations=4, output_root="out")


def test_untouched_form_passes_the_parameters_straight_through():
    """Headless nobody touches the widgets: config() must equal the parameters cell's configuration."""
    assert RunForm(**PARAMS).config() == RunConfig(**PARAMS)


def test_whole_set_round_trips():
    form = RunForm(**{**PARAMS, "subset_size": None})
    assert form.widgets["subset_size"].value == "all"
    assert form.config().subset_size is None


def test_widgets_change_the_config():
    form = RunForm(**PARAMS)
    form.widgets["mode"].value = "psr"
    form.widgets["reward_threshold"].value = 0.75
    form.widgets["vlm_name"].value = "qwen2-vl-2b"
    form.widgets["dataset_name"].value = "chartqa"
    form.widgets["subset_size"].value = "40"
    form.widgets["seed"].value = 11
    cfg = form.config()
    assert (cfg.mode, cfg.reward_threshold, cfg.vlm_name, cfg.dataset_name, cfg.subset_size, cfg.seed) == (
        "psr", 0.75, "qwen2-vl-2b", "chartqa", 40, 11)
    assert cfg.max_steps == 3 and cfg.num_generations == 4  # fields not on the form pass through
    assert cfg.run_name == "psr-qwen2-vl-2b-chartqa-40-11"
    assert "psr-qwen2-vl-2b-chartqa-40-11" in form.status.value  # the form says where the run goes


def test_lambda_slider_reaches_the_config_for_w_reinforce():
    form = RunForm(**PARAMS)
    form.widgets["mode"].value = "w-reinforce"
    form.widgets["lambda_psr"].value = 0.35
    assert form.config().lambda_psr == pytest.approx(0.35)


def test_lambda_is_shown_for_w_reinforce_only_and_description_follows_the_mode():
    from chartrl_colab.config import MODE_DESCRIPTIONS

    form = RunForm(**PARAMS)
    seen = {}
    for mode in MODES:
        form.widgets["mode"].value = mode
        seen[mode] = form.lambda_visible()
        assert MODE_DESCRIPTIONS[mode] in form.description.value
    assert seen == {m: m == "w-reinforce" for m in MODES}


@pytest.mark.parametrize("text", ["0", "-3", "lots", "2.5"])
def test_bad_subset_size_is_refused_with_a_message(text):
    form = RunForm(**PARAMS)
    form.widgets["subset_size"].value = text
    assert "✗" in form.status.value and "subset_size" in form.status.value  # live, before config()
    with pytest.raises(ConfigError, match="subset_size"):
        form.config()
    form.widgets["subset_size"].value = "8"
    assert form.config().subset_size == 8 and "✓" in form.status.value


@pytest.mark.parametrize("bad", [dict(mode="sft"), dict(reward_threshold=float("nan")), dict(lambda_psr=-1.0),
                                 dict(vlm_name="gpt"), dict(seed="x"), dict(subset_size="many")])
def test_set_refuses_bad_values_and_changes_nothing(bad):
    form = RunForm(**PARAMS)
    before = form.config()
    with pytest.raises(ConfigError) as err:
        form.set(**{"seed": 99, **bad})  # a good value in the same call must not land either
    assert list(bad)[0] in str(err.value) and "\n" not in str(err.value)
    assert form.config() == before


def test_set_moves_widgets_and_widens_a_slider_instead_of_clamping():
    form = RunForm(**PARAMS)
    # A format verifier scores 0..2, so a threshold of 1.5 is valid and lies beyond the slider's 0..1.
    form.set(mode="w-reinforce", lambda_psr=2.5, verifier="format", reward_threshold=1.5, subset_size="all",
             temperature=0.7)
    cfg = form.config()
    assert (cfg.mode, cfg.lambda_psr, cfg.reward_threshold, cfg.subset_size, cfg.temperature) == (
        "w-reinforce", 2.5, 1.5, None, 0.7)
    assert form.widgets["mode"].value == "w-reinforce" and form.lambda_visible()


def test_bad_parameters_cell_fails_when_the_form_is_built():
    with pytest.raises(ConfigError, match="mode='sft'"):
        RunForm(**{**PARAMS, "mode": "sft"})


def test_form_displays_without_a_front_end():
    """In a kernel nobody looks at (papermill) showing the form neither blocks nor fails, and the
    notebook's text shows the values and the run directory."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    form = RunForm(**PARAMS)
    shell = InteractiveShell.instance()
    try:
        shell.user_ns["form"] = form
        with capture_output() as captured:
            shell.run_cell("form").raise_error()  # the cell's last expression, as in the notebook
    finally:
        InteractiveShell.clear_instance()
    (shown,) = captured.outputs
    data = shown.data
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"].startswith("RunForm(mode='nsr', reward_threshold=0.5, lambda_psr=0.1")
    assert RunConfig(**PARAMS).run_dir in data["text/plain"]
    assert [w.description for w in form.box.children[: len(FORM_FIELDS)]] == [
        "mode", "reward threshold", "lambda_psr", "model", "data set", "subset size", "seed"]


# ------------------------------------------------------------------------------------ Run all in a front end
def test_interactive_training_waits_for_the_train_button():
    """Under Run all the cell after the form runs before anyone could touch it: it must refuse, not train."""
    from chartrl_colab.colab.widgets import NOT_CHOSEN

    form = RunForm(interactive=True, **PARAMS)
    with pytest.raises(ConfigError, match="press Train, then run this cell"):
        form.config()
    assert html.escape(NOT_CHOSEN, quote=False) in form.status.value  # the form says so too
    form.widgets["mode"].value = "psr"
    form.train_button.click()
    assert "chosen: run psr-" in form.status.value
    assert form.config() == RunConfig(**{**PARAMS, "mode": "psr"})


def test_a_change_after_train_must_be_chosen_again():
    form = RunForm(interactive=True, **PARAMS)
    form.train_button.click()
    form.widgets["seed"].value = 99  # what would train is no longer what was chosen
    assert "press Train again" in form.status.value
    with pytest.raises(ConfigError, match="changed after Train was pressed"):
        form.config()
    form.set(max_steps=5)  # a field off the form counts as a change too
    form.train_button.click()
    assert (form.config().seed, form.config().max_steps) == (99, 5)


def test_train_refuses_bad_values_and_chooses_nothing():
    form = RunForm(interactive=True, **PARAMS)
    form.widgets["subset_size"].value = "zero"
    form.train_button.click()
    assert "subset_size='zero'" in form.status.value
    form.widgets["subset_size"].value = "16"
    with pytest.raises(ConfigError, match="press Train"):
        form.config()


def test_headless_passes_straight_through_without_a_button():
    from chartrl_colab.colab.widgets import interactive_front_end

    assert interactive_front_end() is False  # no kernel here, as under papermill's execution
    assert RunForm(**PARAMS).config() == RunConfig(**PARAMS)


@pytest.mark.parametrize("allow_stdin, expected", [(True, True), (False, False)])
def test_a_front_end_is_told_from_a_headless_client_by_allow_stdin(monkeypatch, allow_stdin, expected):
    """Colab and Jupyter send each cell with allow_stdin=True; papermill's nbclient sends False."""
    import types

    import IPython

    from chartrl_colab.colab.widgets import interactive_front_end

    kernel = types.SimpleNamespace(get_parent=lambda: {"content": {"allow_stdin": allow_stdin}})
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(kernel=kernel))
    assert interactive_front_end() is expected
    form = RunForm(**PARAMS)  # interactive=None: decided when config() runs
    if expected:
        with pytest.raises(ConfigError):
            form.config()
    else:
        assert form.config() == RunConfig(**PARAMS)


# ------------------------------------------------------------------------------------ ipywidgets 7 (Colab's) and 8
FORM_SCRIPT = r'''
import json, sys
import ipywidgets
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from chartrl_colab.colab.widgets import RunForm

params = json.loads(sys.argv[1])
form = RunForm(interactive=True, colab=False, **params)
form.widgets["mode"].value = "w-reinforce"
form.widgets["lambda_psr"].value = 0.35
form.widgets["subset_size"].value = "24"
try:
    form.config()
    refused = False
except Exception as err:
    refused = "press Train" in str(err)
form.train_button.click()
chosen = form.status.value
cfg = form.config()
shell = InteractiveShell.instance()
shell.user_ns["form"] = form
with capture_output() as shown:
    shell.run_cell("form").raise_error()
print(json.dumps({"version": ipywidgets.__version__, "refused_before_train": refused, "mode": cfg.mode,
                  "lambda_psr": cfg.lambda_psr, "subset_size": cfg.subset_size, "lambda_shown": form.lambda_visible(),
                  "status": chosen, "displayed": len(shown.outputs)}))
'''


@pytest.fixture(scope="session")
def ipywidgets7():
    """Colab's ipywidgets 7.7.1 in a folder of its own (installed once by pip, then reused)."""
    import subprocess
    import sys
    from pathlib import Path

    target = Path.home() / ".cache" / "chartrl_colab" / "ipywidgets-7.7.1"
    if not (target / "ipywidgets" / "__init__.py").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        "ipywidgets==7.7.1", "ipython_genutils==0.2.0"], check=True)
    return target


@pytest.mark.parametrize("version", ["7.7.1", "8"])
def test_the_form_builds_and_its_button_works_with_ipywidgets_7_and_8(version, ipywidgets7):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    paths = ([str(ipywidgets7)] if version == "7.7.1" else []) + [str(root)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    out = subprocess.run([sys.executable, "-c", FORM_SCRIPT, json.dumps(PARAMS)], env=env, capture_output=True,
                         text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["version"].startswith(version)
    assert result["refused_before_train"] and result["displayed"] == 1
    assert (result["mode"], result["lambda_psr"], result["subset_size"], result["lambda_shown"]) == (
        "w-reinforce", 0.35, 24, True)
    assert "chosen: run w-reinforce-tiny-synthetic-24-7" in result["status"]


def test_in_colab_the_form_passes_colabs_fields_through_and_shows_them_as_text():
    """Colab's own form (the parameters cell) chose the values: no Train button to wait for under Run all."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    form = RunForm(interactive=True, colab=True, **PARAMS)
    assert form.config() == RunConfig(**PARAMS)
    shell = InteractiveShell.instance()
    try:
        shell.user_ns["form"] = form
        with capture_output() as captured:
            shell.run_cell("form").raise_error()
    finally:
        InteractiveShell.clear_instance()
    (shown,) = captured.outputs
    assert set(shown.data) == {"text/plain"} and shown.data["text/plain"].startswith("RunForm(mode='nsr'")
