"""The notebook form for Jupyter and VS Code: the parameters cell's values in, a validated :class:`RunConfig` out.

Jupyter and VS Code get widgets for :data:`FORM_FIELDS` (ipywidgets 7 or 8); in Colab (whose parameters cell is
a form) and headless the values pass straight through, shown as one line. Under Run all the next cell runs before
anyone could touch the widgets, so with a person at the front end (:func:`interactive_front_end`) ``config()``
refuses until **Train** was pressed for the values shown: training never starts with values nobody chose.

>>> form = RunForm(mode="nsr", subset_size=16, seed=3, max_steps=4)  # headless here: no button needed
>>> form.set(mode="w-reinforce", lambda_psr=0.3)
>>> cfg = form.config()
>>> cfg.mode, cfg.lambda_psr, cfg.subset_size, cfg.max_steps
('w-reinforce', 0.3, 16, 4)
"""

from __future__ import annotations

import argparse
import html

from chartrl_colab.cli import none_or
from chartrl_colab.colab.environment import interactive_front_end
from chartrl_colab.config import DATASET_NAMES, MODE_DESCRIPTIONS, MODEL_NAMES, MODES, RunConfig
from chartrl_colab.errors import ConfigError
from chartrl_colab.runs.storage import with_output_root

FORM_FIELDS = ("mode", "reward_threshold", "lambda_psr", "vlm_name", "dataset_name", "subset_size", "seed")
NOT_CHOSEN = ("choose the settings in the form above and press Train, then run this cell and the ones below "
              "(Runtime > Run cell and below)")
CHANGED = "the form changed after Train was pressed: press Train again, then run this cell and the ones below"


def _parse_subset(text) -> int | None:
    """The subset-size box's text as a whole number, or None for the whole set (as the CLI reads it).

    >>> _parse_subset(" 100 "), _parse_subset("all"), _parse_subset(None)
    (100, None, None)
    """
    if text is None or isinstance(text, int):
        return text
    s = str(text).strip()
    try:
        return none_or(int)(s)
    except argparse.ArgumentTypeError:
        raise ConfigError(f"subset_size={s!r} is not valid; it must be a whole number >= 1, or 'all'") from None


class RunForm:
    """Widgets for one run's main settings, from any RunConfig fields (a bad one: ConfigError at once).
    ``interactive``: a person is at the notebook; ``colab``: Colab's form chose the values (None: detect)."""

    def __init__(self, interactive: bool | None = None, colab: bool | None = None, **params):
        import ipywidgets as w

        from chartrl_colab.runs.storage import in_colab

        self.interactive = interactive
        self.colab = in_colab() if colab is None else colab
        self._chosen: dict | None = None  # the values when Train was pressed
        self._params = dict(params)
        cfg = RunConfig(**self._params)
        style = {"description_width": "130px"}
        wide = w.Layout(width="480px")
        self.widgets = {
            "mode": w.Dropdown(options=list(MODES), value=cfg.mode, description="mode", style=style),
            "reward_threshold": w.FloatSlider(value=cfg.reward_threshold, min=min(0.0, cfg.reward_threshold),
                                              max=max(1.0, cfg.reward_threshold), step=0.05,
                                              description="reward threshold", style=style, layout=wide),
            "lambda_psr": w.FloatSlider(value=cfg.lambda_psr, min=0.0, max=max(1.0, cfg.lambda_psr), step=0.05,
                                        description="lambda_psr", style=style, layout=wide),
            "vlm_name": w.Dropdown(options=list(MODEL_NAMES), value=cfg.vlm_name, description="model", style=style),
            "dataset_name": w.Dropdown(options=list(DATASET_NAMES), value=cfg.dataset_name, description="data set",
                                       style=style),
            "subset_size": w.Text(value="all" if cfg.subset_size is None else str(cfg.subset_size),
                                  description="subset size", placeholder="a number, or all", style=style),
            "seed": w.IntText(value=cfg.seed, description="seed", style=style),
        }
        self.description = w.HTML()
        self.status = w.HTML()
        self.train_button = w.Button(description="Train", button_style="success", icon="play",
                                     tooltip="Use these settings; then run the cells below")
        self.train_button.on_click(lambda _: self.confirm())
        for widget in self.widgets.values():
            widget.observe(self._refresh, names="value")
        self.box = w.VBox([self.widgets[name] for name in FORM_FIELDS] +
                          [self.description, self.train_button, self.status])
        self._refresh()

    def values(self) -> dict:
        """The form's settings as RunConfig keyword arguments (not yet validated)."""
        values = {name: widget.value for name, widget in self.widgets.items()}
        values["subset_size"] = _parse_subset(values["subset_size"])
        return {**self._params, **values}

    def config(self) -> RunConfig:
        """The validated RunConfig of the form's values; ConfigError (shown on the form) if refused, or when a
        person is at the form and did not press Train for these values."""
        interactive = interactive_front_end() if self.interactive is None else self.interactive
        if interactive and not self.colab and self._chosen != self.values():
            message = NOT_CHOSEN if self._chosen is None else CHANGED
            self._show_status(message, ok=False)
            raise ConfigError(message)
        try:
            cfg = with_output_root(RunConfig(**self.values()))
        except ConfigError as err:
            self._show_status(str(err), ok=False)
            raise
        self._show_status(f"run {cfg.run_name} in {cfg.run_dir}", ok=True)
        return cfg

    def confirm(self) -> bool:
        """Take the form's current values as the user's choice (the Train button); False if one is refused."""
        try:
            cfg = with_output_root(RunConfig(**self.values()))
        except ConfigError as err:
            self._chosen = None
            self._show_status(str(err), ok=False)
            return False
        self._chosen = self.values()
        self._show_status(f"chosen: run {cfg.run_name} in {cfg.run_dir}. Now run the cells below "
                          "(Runtime > Run cell and below).", ok=True)
        return True

    def set(self, **values) -> None:
        """Change any RunConfig fields; ConfigError if a value is refused, and then nothing changes."""
        trial = {**self.values(), **values}
        trial["subset_size"] = _parse_subset(trial.get("subset_size"))
        RunConfig(**trial)  # validates every value before any widget moves
        for name, value in values.items():
            if name not in self.widgets:
                self._params[name] = value
                continue
            widget = self.widgets[name]
            if name in ("reward_threshold", "lambda_psr"):
                # A slider clamps values outside its range silently; widen it instead.
                widget.min, widget.max = min(widget.min, value), max(widget.max, value)
            widget.value = ("all" if trial[name] is None else str(trial[name])) if name == "subset_size" else value

    def lambda_visible(self) -> bool:
        """lambda_psr only matters to w-reinforce, so the slider is shown for that mode only."""
        return self.widgets["lambda_psr"].layout.display != "none"

    def _refresh(self, change=None) -> None:
        mode = self.widgets["mode"].value
        self.widgets["lambda_psr"].layout.display = "" if mode == "w-reinforce" else "none"
        self.description.value = f"<b>{html.escape(mode)}</b>: {html.escape(MODE_DESCRIPTIONS[mode], quote=False)}"
        try:
            cfg = with_output_root(RunConfig(**self.values()))
        except ConfigError as err:
            self._show_status(str(err), ok=False)
        else:
            changed = self._chosen is not None and self._chosen != self.values()
            self._show_status(f"run {cfg.run_name} in {cfg.run_dir}" + (": changed, press Train again" if changed
                                                                         else ""), ok=not changed)

    def _show_status(self, text: str, ok: bool) -> None:
        color, mark = ("green", "✓") if ok else ("#c00", "✗")
        self.status.value = f'<span style="color:{color}">{mark} {html.escape(text, quote=False)}</span>'

    def _ipython_display_(self) -> None:
        # The values as text for Colab (whose form is the parameters cell) and for a headless notebook's reader.
        from IPython.display import display

        if self.colab:
            display({"text/plain": repr(self)}, raw=True)
        elif getattr(self.box, "_repr_mimebundle_", None) is None:  # ipywidgets 7 displays itself
            display(self.box)
        else:
            display({**(self.box._repr_mimebundle_() or {}), "text/plain": repr(self)}, raw=True)

    def __repr__(self) -> str:
        values = self.values()
        shown = ", ".join(f"{k}={values[k]!r}" for k in FORM_FIELDS)
        try:
            where = f" -> {with_output_root(RunConfig(**self.values())).run_dir}"
        except ConfigError as err:
            where = f" -> refused: {err}"
        return f"RunForm({shown}){where}"

