"""How the package speaks: every module logs through ``logging.getLogger(__name__)``; :func:`configure_logging`
(called by each CLI's ``run_cli`` and each notebook's setup) says where it goes. The handlers look up
``sys.stdout``/``sys.stderr`` when they write, so pytest's ``capsys``, papermill and a Colab cell see the lines.

>>> import logging
>>> _ = configure_logging()
>>> logging.getLogger("chartrl_colab.example").info("step 1/4")
step 1/4
"""

from __future__ import annotations

import logging
import sys

PACKAGE = "chartrl_colab"


class _CurrentStream(logging.StreamHandler):
    """A StreamHandler writing to whatever ``sys.<name>`` is at the time of each record."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    @property
    def stream(self):
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, _value):  # StreamHandler.__init__ assigns one; the current one is looked up instead
        pass


class _Prefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def configure_logging(level: int = logging.INFO) -> logging.Logger:
    """Route the package's loggers: INFO on stdout as plain lines, WARNING and above on stderr prefixed
    ``warning:``/``error:``. Idempotent but for the level; records do not propagate to the root logger (a notebook's
    own logging setup would print them twice). Returns the package's logger."""
    names = [PACKAGE]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith(PACKAGE + "."):
        names.append("__main__")  # `python -m chartrl_colab.train`: that module's logger is named __main__
    for name in names:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, _CurrentStream) for h in logger.handlers):
            out, err = _CurrentStream("stdout"), _CurrentStream("stderr")
            out.addFilter(lambda record: record.levelno < logging.WARNING)
            err.setLevel(logging.WARNING)
            for handler in (out, err):
                handler.setFormatter(_Prefix())
                logger.addHandler(handler)
        logger.propagate = False
    return logging.getLogger(PACKAGE)
