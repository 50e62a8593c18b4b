"""What every ``python -m chartrl_colab.X`` shares: flags built from a dataclass, and the error convention.

A user's mistake (a :class:`~chartrl_colab.errors.ConfigError`, a missing file) is one ``error:`` line on
stderr and exit code 2, never a traceback.

Why not ``transformers.HfArgumentParser``: it would do most of this, but users of this package need three
things it does not do: ``--subset-size full`` (``None`` for an optional integer), tuple fields taking several
values (``--rewards accuracy format``), and ``--x/--no-x`` with dashes as the README and the seed project
spell them (it writes ``--no_x``).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import typing
from pathlib import Path

from chartrl_colab.errors import ConfigError
from chartrl_colab.messages import configure_logging

USER_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

# A fault of the machine or the path a user gave, as one line: what happened to which path, and what to do.
_FULL = "no space left on the device holding {path}; free space there (or choose another folder) and rerun"
OS_FAULTS = {
    errno.ENOSPC: _FULL,
    errno.EDQUOT: _FULL,
    errno.EROFS: "{path} is on a read-only file system; choose a folder you can write to (e.g. --output-root runs)",
    errno.EACCES: "permission denied for {path}; choose a folder you can write to",
    errno.EPERM: "permission denied for {path}; choose a folder you can write to",
    errno.ENOTDIR: "{path} needs a folder where there is a file ({blocker}); move that file away or choose another path",
    errno.EEXIST: "{path} is a file where a folder is expected; move it away or choose another path",
    errno.EISDIR: "{path} is a folder where a file is expected; give the path of a file",
    errno.ENOTCONN: "{path} is not reachable ({reason}); remount Google Drive (or the disk) and rerun",
    errno.EIO: "reading or writing {path} failed ({reason}); check the disk or remount Google Drive and rerun",
}


def _parse_as(kind):
    if kind in (int | None, typing.Optional[int]):
        return lambda s: None if s.lower() in ("none", "full", "all") else int(s)
    if kind in (float | None, typing.Optional[float]):
        return lambda s: None if s.lower() == "none" else float(s)
    if kind in (str | None, typing.Optional[str]):
        return str
    return kind


def _tri_state(text: str):
    """``auto``/``true``/``false`` (and yes/no/1/0) for a setting that is True, False or decided by the machine."""
    value = {"auto": "auto", "true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
        text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; choose auto, true or false")
    return value


def _element_type(kind):
    """``int`` for ``tuple[int, ...]`` (or ``tuple[int, ...] | None``); None when ``kind`` is no tuple."""
    for option in (kind, *typing.get_args(kind)):
        if typing.get_origin(option) is tuple:
            return typing.get_args(option)[0]
    return None


def parser_for(cls, prog: str, description: str, skip=()) -> argparse.ArgumentParser:
    """One flag per dataclass field (but ``skip``), same name with dashes, the field's help text and default.

    Booleans get ``--x/--no-x``; ``bool | str`` fields (True, False or ``"auto"``) also take a value
    (``--x auto``); tuple fields take several values; ``None``/``full``/``all`` mean None
    for optional integers (``--subset-size full``); a field without a default is a required flag; a field's
    ``metadata["aliases"]`` are further spellings of its flag.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        kind, default, help_text = hints[f.name], f.default, f.metadata.get("help", "")
        required = default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kwargs = {"required": True} if required else {"default": default}
        if kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, help=help_text, **kwargs)
        elif kind == bool | str:  # True, False or "auto": --x (True), --x auto|true|false, --no-x (False)
            parser.add_argument(*flags, nargs="?", const=True, type=_tri_state, dest=f.name,
                                help=help_text + f" (default: {default})", **kwargs)
            parser.add_argument("--no-" + flags[0][2:], dest=f.name, action="store_const", const=False,
                                help=argparse.SUPPRESS)
        elif (element := _element_type(kind)) is not None:
            if isinstance(default, tuple):
                kwargs["default"] = list(default)
            parser.add_argument(*flags, nargs="+", type=element, dest=f.name, help=help_text, **kwargs)
        else:
            shown = "" if required else f" (default: {default})"
            parser.add_argument(*flags, type=_parse_as(kind), dest=f.name, help=help_text + shown, **kwargs)
    return parser


def argv_for(cfg) -> list[str]:
    """The flags that rebuild the dataclass ``cfg`` through :func:`parser_for` (fields at their default omitted).

    >>> from chartrl_colab.config import RunConfig
    >>> argv_for(RunConfig(mode="psr", subset_size=None, use_lora=False, rewards=("format", "accuracy"),
    ...                    output_root="runs"))  # doctest: +NORMALIZE_WHITESPACE
    ['--mode', 'psr', '--subset-size', 'none', '--rewards', 'format', 'accuracy', '--reward-preset', 'package',
     '--learning-rate', '1e-06', '--no-use-lora', '--output-root', 'runs']
    """
    argv = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            argv.append(flag if value else "--no-" + flag[2:])  # argparse.BooleanOptionalAction
        elif isinstance(value, (tuple, list)):
            argv += [flag, *map(str, value)] if value else [flag, "none"]
        elif value is None:
            argv += [flag, "none"]
        else:
            argv += [flag, str(value)]
    return argv


def user_error(err: BaseException) -> int:
    """Print a user's mistake as one ``error:`` line on stderr; the exit code to return."""
    print(f"error: {err}", file=sys.stderr)
    return USER_ERROR


def _blocker(path: str) -> str:
    """The part of ``path`` that exists and is not a folder (what makes ENOTDIR), else ``path`` itself."""
    for p in [path, *map(str, Path(path).parents)]:
        if os.path.exists(p) and not os.path.isdir(p):
            return p
    return path


def os_fault(err: OSError) -> str | None:
    """One line for a machine or path fault (full disk, read-only, a file where a folder goes...), else None.

    >>> os_fault(OSError(errno.ENOSPC, "No space left on device", "runs/x/checkpoint-2"))
    'no space left on the device holding runs/x/checkpoint-2; free space there (or choose another folder) and rerun'
    """
    template = OS_FAULTS.get(err.errno)
    if template is None:
        return None
    path = err.filename if err.filename is not None else "a file"
    return template.format(path=path, blocker=_blocker(str(path)), reason=err.strerror or err)


def run_cli(job) -> int:
    """A CLI's exit code: ``job()``'s own when it returns an int, else 0. A user's mistake (ConfigError, a
    missing file) or a fault of the machine (full disk, read-only folder, a file where a folder goes, see
    :data:`OS_FAULTS`) is one ``error:`` line on stderr, no traceback, and 2; Ctrl-C is one line and 130.
    Every ``main(argv)`` ends here."""
    configure_logging()
    try:
        code = job()
    except (ConfigError, FileNotFoundError) as err:
        return user_error(err)
    except OSError as err:
        if (line := os_fault(err)) is None:
            raise
        return user_error(line)
    except KeyboardInterrupt as err:
        print(str(err) or "interrupted; rerun to continue", file=sys.stderr)
        return INTERRUPTED
    return code if isinstance(code, int) else 0
