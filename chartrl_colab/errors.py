"""The one exception a user's mistake raises, the checks that raise it, and the one line a fault of the machine
reads as (:func:`os_fault`); a CLI prints either as one ``error:`` line and exits 2 (:func:`chartrl_colab.cli.run_cli`).
"""

from __future__ import annotations

import errno
import math

from chartrl_colab.files import file_in_the_way

# A fault of the machine or the path a user gave, as one line: what happened to which path, and what to do.
_FULL = "no space left on the device holding {path}; free space there (or choose another folder) and rerun"
OS_FAULTS = {
    errno.ENOSPC: _FULL,
    errno.EDQUOT: _FULL,
    errno.EROFS: "{path} is on a read-only file system; choose a folder you can write to (e.g. --output-root runs)",
    errno.EACCES: "permission denied for {path}; choose a folder you can write to",
    errno.EPERM: "permission denied for {path}; choose a folder you can write to",
    errno.ENOTDIR: "{path} needs a folder where there is a file ({blocker}); move that file away or choose another "
                   "path",
    errno.EEXIST: "{path} is a file where a folder is expected; move it away or choose another path",
    errno.EISDIR: "{path} is a folder where a file is expected; give the path of a file",
    errno.ENOTCONN: "{path} is not reachable ({reason}); remount Google Drive (or the disk) and rerun",
    errno.EIO: "reading or writing {path} failed ({reason}); check the disk or remount Google Drive and rerun",
}


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


def os_fault(err: OSError) -> str | None:
    """One line for a machine or path fault (full disk, read-only, a file where a folder goes...), else None.

    >>> os_fault(OSError(errno.ENOSPC, "No space left on device", "runs/x/checkpoint-2"))
    'no space left on the device holding runs/x/checkpoint-2; free space there (or choose another folder) and rerun'
    """
    template = OS_FAULTS.get(err.errno)
    if template is None:
        return None
    path = err.filename if err.filename is not None else "a file"
    return template.format(path=path, blocker=file_in_the_way(path) or path, reason=err.strerror or err)
