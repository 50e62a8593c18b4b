"""The one exception a user's mistake raises, and the checks that raise it.

Every CLI turns :class:`ConfigError` into one ``error:`` line and exit code 2 (see :mod:`chartrl_colab.cli`);
the notebooks show its message as it is. Pure: imports nothing from the package.
"""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A setting a user can get wrong; the message is one line naming the bad value and the valid ones."""

    def _render_traceback_(self) -> list[str]:
        """What IPython (Jupyter, Colab, papermill) shows for it: the one line, no traceback."""
        return [f"error: {self}"]


def one_of(name: str, value, valid) -> None:
    """Raise unless ``value`` is one of ``valid``.

    >>> one_of("mode", "nsr", ("psr", "nsr"))
    >>> one_of("mode", "nrs", ("psr", "nsr"))
    Traceback (most recent call last):
    chartrl_colab.errors.ConfigError: mode='nrs' is not valid; choose one of: psr, nsr
    """
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(map(str, valid))}")


def at_least(name: str, value, low, hint: str = "") -> None:
    """Raise unless ``value`` is a finite number (not a bool) >= ``low``.

    >>> at_least("temperature", 1.0, 0)
    >>> at_least("temperature", -1, 0)
    Traceback (most recent call last):
    chartrl_colab.errors.ConfigError: temperature=-1 is not valid; it must be a number >= 0
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < low:
        raise ConfigError(f"{name}={value!r} is not valid; it must be a number >= {low}{hint}")


def check_split(dataset: str, split, valid) -> None:
    """Raise unless ``split`` is one of the ``valid`` splits of ``dataset``.

    >>> check_split("evochart", "test", ("test",))
    >>> check_split("evochart", "train", ("test",))
    Traceback (most recent call last):
    chartrl_colab.errors.ConfigError: unknown split 'train' for evochart; valid splits: test
    """
    if split not in valid:
        raise ConfigError(f"unknown split {split!r} for {dataset}; valid splits: {', '.join(valid)}")
