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
import sys
import typing

from chartrl_colab.errors import ConfigError

USER_ERROR = 2


def _parse_as(kind):
    if kind in (int | None, typing.Optional[int]):
        return lambda s: None if s.lower() in ("none", "full", "all") else int(s)
    if kind in (float | None, typing.Optional[float]):
        return lambda s: None if s.lower() == "none" else float(s)
    if kind in (str | None, typing.Optional[str]):
        return str
    return kind


def parser_for(cls, prog: str, description: str) -> argparse.ArgumentParser:
    """One flag per dataclass field, same name with dashes, the field's help text and default.

    Booleans get ``--x/--no-x``; tuple fields take several values; ``None``/``full``/``all`` mean None
    for optional integers (``--subset-size full``).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag, kind, default = "--" + f.name.replace("_", "-"), hints[f.name], f.default
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", default=list(default), help=help_text)
        else:
            parser.add_argument(flag, type=_parse_as(kind), default=default, help=f"{help_text} (default: {default})")
    return parser


def user_error(err: BaseException) -> int:
    """Print a user's mistake as one ``error:`` line on stderr; the exit code to return."""
    print(f"error: {err}", file=sys.stderr)
    return USER_ERROR


def run_cli(job) -> int:
    """A CLI's exit code: 0 when ``job()`` runs (or ``job()``'s own int); for a user's mistake
    (ConfigError, a missing file) one ``error:`` line on stderr, no traceback, and 2."""
    try:
        code = job()
    except (ConfigError, FileNotFoundError) as err:
        return user_error(err)
    return code if isinstance(code, int) else 0
