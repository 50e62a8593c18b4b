"""The notebook form: the parameters cell's values in, a validated :class:`RunConfig` out.

The form shows the settings a user most often changes (mode, reward threshold, lambda_psr for
w-reinforce, model, data set, subset size, seed) with a line saying what the chosen mode does; every
other setting passes through from the parameters cell untouched. It never waits for input: in Colab or
Jupyter the user changes the widgets and then runs the next cell; headless (papermill, no front end) the
widgets keep the parameters' values, so ``form.config()`` is the parameters cell's configuration.

>>> form = RunForm(mode="nsr", subset_size=16, seed=3, max_steps=4)
>>> form.set(mode="w-reinforce", lambda_psr=0.3)
>>> cfg = form.config()
>>> cfg.mode, cfg.lambda_psr, cfg.subset_size, cfg.max_steps
('w-reinforce', 0.3, 16, 4)
>>> form.set(subset_size=0)
Traceback (most recent call last):
...
chartrl_colab.config.ConfigError: subset_size=0 is not valid; it must be a number >= 1 (or None for the whole set)
"""

from __future__ import annotations

import html

from chartrl_colab.config import DATASET_NAMES, MODEL_NAMES, MODES, RunConfig
from chartrl_colab.errors import ConfigError
from chartrl_colab.storage import with_output_root

# The settings on the form, in display order; the rest of RunConfig passes straight through.
FORM_FIELDS = ("mode", "reward_threshold", "lambda_psr", "vlm_name", "dataset_name", "subset_size", "seed")
ALL_WORDS = ("all", "full", "none", "")  # subset_size text meaning "the whole set"


def _mode_descriptions() -> dict[str, str]:
    from chartrl_colab.config import MODE_DESCRIPTIONS

    return MODE_DESCRIPTIONS


def _parse_subset(text) -> int | None:
    """The subset-size box's text as RunConfig wants it: a whole number, or None for the whole set.

    >>> _parse_subset(" 100 "), _parse_subset("all"), _parse_subset(None)
    (100, None, None)
    """
    if text is None or isinstance(text, int):
        return text
    s = str(text).strip()
    if s.lower() in ALL_WORDS:
        return None
    try:
        return int(s)
    except ValueError:
        raise ConfigError(f"subset_size={s!r} is not valid; it must be a whole number >= 1, or 'all'") from None


class RunForm:
    """Widgets for one run's main settings, starting from the parameters cell's values.

    ``RunForm(**params)`` takes any RunConfig fields (a bad one raises ConfigError at once, naming it);
    display the form by making it a cell's last expression. ``config()`` reads the widgets and returns the
    validated RunConfig (ConfigError, also shown on the form, when a value is refused). ``set(**values)``
    changes settings from code with the same checks.
    """

    def __init__(self, **params):
        import ipywidgets as w

        self._params = dict(params)
        cfg = RunConfig(**self._params)  # a bad parameters cell fails here, with its one-line message
        self._descriptions = _mode_descriptions()
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
        for widget in self.widgets.values():
            widget.observe(self._refresh, names="value")
        self.box = w.VBox([self.widgets[name] for name in FORM_FIELDS] + [self.description, self.status])
        self._refresh()

    # ------------------------------------------------------------------------------------ values
    def values(self) -> dict:
        """The form's settings as RunConfig keyword arguments (not yet validated)."""
        values = {name: widget.value for name, widget in self.widgets.items()}
        values["subset_size"] = _parse_subset(values["subset_size"])
        return {**self._params, **values}

    def config(self) -> RunConfig:
        """The validated RunConfig of the form's current values; ConfigError (shown on the form) if refused."""
        try:
            cfg = with_output_root(RunConfig(**self.values()))
        except ConfigError as err:
            self._show_status(str(err), ok=False)
            raise
        self._show_status(f"run {cfg.run_name} in {cfg.run_dir}", ok=True)
        return cfg

    def set(self, **values) -> None:
        """Change settings (form fields or any other RunConfig field); ConfigError if a value is refused.

        Nothing changes when any value is refused, so the form never shows a half-applied update.
        """
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

    # ------------------------------------------------------------------------------------ display
    def lambda_visible(self) -> bool:
        """lambda_psr only matters to w-reinforce, so the slider is shown for that mode only."""
        return self.widgets["lambda_psr"].layout.display != "none"

    def _refresh(self, change=None) -> None:
        mode = self.widgets["mode"].value
        self.widgets["lambda_psr"].layout.display = "" if mode == "w-reinforce" else "none"
        self.description.value = f"<b>{html.escape(mode)}</b>: {html.escape(self._descriptions[mode], quote=False)}"
        try:
            cfg = with_output_root(RunConfig(**self.values()))
        except ConfigError as err:
            self._show_status(str(err), ok=False)
        else:
            self._show_status(f"run {cfg.run_name} in {cfg.run_dir}", ok=True)

    def _show_status(self, text: str, ok: bool) -> None:
        color, mark = ("green", "✓") if ok else ("#c00", "✗")
        self.status.value = f'<span style="color:{color}">{mark} {html.escape(text, quote=False)}</span>'

    def _ipython_display_(self) -> None:
        # The widgets for a front end, and for the reader of a headless (papermill) notebook the values as
        # text instead of the widgets' repr.
        from IPython.display import display

        _enable_colab_widgets()
        bundle = getattr(self.box, "_repr_mimebundle_", None)
        if bundle is None:  # ipywidgets 7 (Colab's own) displays itself
            display(self.box)
            return
        data = dict(bundle() or {})
        data["text/plain"] = repr(self)
        display(data, raw=True)

    def __repr__(self) -> str:
        values = self.values()
        shown = ", ".join(f"{k}={values[k]!r}" for k in FORM_FIELDS)
        try:
            where = f" -> {with_output_root(RunConfig(**self.values())).run_dir}"
        except ConfigError as err:
            where = f" -> refused: {err}"
        return f"RunForm({shown}){where}"


def _enable_colab_widgets() -> None:
    """Colab renders ipywidgets 8 only through its custom widget manager; elsewhere nothing to do."""
    from chartrl_colab.storage import in_colab

    if in_colab():
        try:
            from google.colab import output  # type: ignore[import-not-found]

            output.enable_custom_widget_manager()
        except Exception:  # noqa: BLE001 - an older Colab renders the core widgets without it
            pass
