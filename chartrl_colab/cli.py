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


def run_cli(job) -> int:
    """A CLI's exit code: ``job()``'s own when it returns an int, else 0; for a user's mistake (ConfigError,
    a missing file) one ``error:`` line on stderr, no traceback, and 2. Every ``main(argv)`` ends here."""
    try:
        code = job()
    except (ConfigError, FileNotFoundError) as err:
        return user_error(err)
    return code if isinstance(code, int) else 0
