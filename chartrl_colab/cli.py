"""What every ``python -m chartrl_colab.X`` shares: flags from dataclasses on TRL's parser, and the error convention.

A user's mistake (a :class:`~chartrl_colab.errors.ConfigError`, a missing file) is one ``error:`` line on
stderr and exit code 2, never a traceback.

Flags, YAML recipes (``--config``) and notebook parameters all go through :func:`parser_for`: ``trl.TrlParser``
(``--x_y``/``--x-y``, ``--no-x`` for booleans, ``none`` for an optional number, the YAML file) plus what it cannot
do, each marked in the code: ``full``/``all`` for an optional number, ``auto`` for a True/False/auto field,
``tuple`` fields, one-line messages for a closed set, the original scripts' names
(:data:`chartrl_colab.config.ALIASES`), and one setting given under two names.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import typing
from pathlib import Path

from chartrl_colab.errors import ConfigError, os_fault
from chartrl_colab.messages import configure_logging

USER_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
NONE_WORDS = ("none", "full", "all", "")  # an optional number left out: the whole set, the model's own bound

# What PyTorch and safetensors say when a write fails for want of space (torch.save: "[enforce fail at
# inline_container.cc:...] ... unexpected pos"; safetensors: "No space left on device (os error 28)").
WRITE_FAILED = ("inline_container", "No space left on device", "os error 28", "file write failed")


def tri_state(text):
    """``auto``/``true``/``false`` (and yes/no/1/0, any case) for a setting that is True, False or decided by the
    machine.

    >>> tri_state("AUTO"), tri_state("no"), tri_state(True)
    ('auto', False, True)
    """
    if isinstance(text, bool):
        return text
    value = {"auto": "auto", "true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
        str(text).strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; choose auto, true or false")
    return value


def none_or(kind):
    """A parser of ``kind`` (int or float) that reads none/full/all (any case) as None.

    >>> none_or(int)("Full"), none_or(int)("100"), none_or(float)("none")
    (None, 100, None)
    """
    def parse(text):
        if text is None or str(text).strip().lower() in NONE_WORDS:
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give one, or none") from None
    parse.__name__ = kind.__name__
    return parse


def _optional(kind):
    """``int`` for ``int | None``, ``float`` for ``float | None``, else None."""
    return next((number for number in (int, float) if set(typing.get_args(kind)) == {number, type(None)}), None)


def _element_type(kind):
    """``int`` for ``tuple[int, ...]`` (or ``tuple[int, ...] | None``); None when ``kind`` is no tuple."""
    tuples = [option for option in (kind, *typing.get_args(kind)) if typing.get_origin(option) is tuple]
    return typing.get_args(tuples[0])[0] if tuples else None


def _keeping(default: str, parse):
    """``parse``, but the field's own str default read as itself: a parsed default equals the dataclass's."""
    def keep(text):
        return default if text == default else parse(text)
    keep.__name__ = getattr(parse, "__name__", "value")
    return keep


def _flags(name: str, negative: bool = False) -> tuple[str, str]:
    """``--x-y`` and ``--x_y`` for the field ``x_y`` (``--no-x-y`` and ``--no_x_y`` when ``negative``)."""
    no = "no_" if negative else ""
    return "--" + (no + name).replace("_", "-"), f"--{no}{name}"


def _inverted(action) -> bool:
    """Whether ``action`` is an inverted alias (``--disable-gradient-checkpointing``)."""
    return action.nargs == "?" and action.const is False


def parser_for(cls, prog: str, description: str, skip=()) -> argparse.ArgumentParser:
    """TRL's parser over the dataclass ``cls`` (but its fields in ``skip``) with the additions the module docstring
    lists; its errors are ConfigErrors. ``parser.parse(argv)`` returns the ``cls`` instance."""
    from trl import TrlParser  # imported here: the modules importing this one stay light

    class ConfigParser(TrlParser):
        def __init__(self):
            super().__init__([cls], prog=prog, description=description)
            self.config_class = cls
            hints = typing.get_type_hints(cls)
            fields = {f.name: f for f in dataclasses.fields(cls)}
            for action in list(self._actions):
                if action.dest in skip:
                    self._remove_action(action)
                    for flag in action.option_strings:
                        self._option_string_actions.pop(flag, None)
                if action.dest not in fields or action.dest in skip or isinstance(action, argparse._StoreFalseAction):
                    continue
                kind = hints[action.dest]
                if number := _optional(kind):  # TRL's parser reads none/null, not the original scripts' full/all
                    action.type = none_or(number)
                elif kind == bool | str:  # HfArgumentParser keeps only the bool: "auto" would fail
                    action.type = tri_state
                    self.add_argument(*_flags(action.dest, negative=True), dest=action.dest, action="store_const",
                                      const=False, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                elif (element := _element_type(kind)) is not None:  # HfArgumentParser knows list only
                    action.nargs, action.type = "+", element
                    if isinstance(action.default, tuple):
                        action.default = list(action.default)
                if action.choices is not None:  # a bad value is validate()'s one line, as for every setting
                    action.metavar = "{" + ",".join(map(str, action.choices)) + "}"
                    action.type, action.choices = str, None
                if action.default is None and fields[action.dest].default not in (None, dataclasses.MISSING):
                    action.default = fields[action.dest].default  # HfArgumentParser: a list's plain default is none
                if isinstance(action.default, str) and action.type not in (None, str):  # argparse would convert it
                    action.type = _keeping(action.default, action.type)
            for alias, (dest, inverted) in getattr(cls, "aliases", {}).items():  # further names of a field
                if dest not in fields or dest in skip:
                    continue
                if inverted:  # --disable-gradient-checkpointing [true|false]: gradient_checkpointing = not it
                    from transformers.hf_argparser import string_to_bool

                    self.add_argument(*_flags(alias), dest=dest, nargs="?", const=False,
                                      type=lambda text: not string_to_bool(text), default=argparse.SUPPRESS,
                                      metavar="BOOL",
                                      help=f"The original scripts' flag: --{dest.replace('_', '-')} false.")
                    continue
                for action in [a for a in self._actions if a.dest == dest]:
                    negative = isinstance(action, argparse._StoreFalseAction)
                    for flag in _flags(alias, negative):
                        action.option_strings.append(flag)
                        self._option_string_actions[flag] = action

        def error(self, message):
            raise ConfigError(message)

        def set_defaults_with_config(self, **kwargs):
            # A recipe's keys may use the original scripts' names too (num_epochs: 2); the same checks as flags.
            check_given(self, [f"--{key}" for key in kwargs])
            by_field = {}
            for key, value in kwargs.items():
                action = self._option_string_actions.get(f"--{key}")
                if action is not None and action.dest != key and _inverted(action):
                    by_field[action.dest] = not tri_state(value)
                else:
                    by_field[action.dest if action is not None else key] = value
            return super().set_defaults_with_config(**by_field)

        def parse(self, argv=None):
            """The config of ``argv`` (default ``sys.argv[1:]``; ``--config FILE``: a YAML recipe the flags
            override)."""
            argv = list(sys.argv[1:] if argv is None else argv)
            if "--config" in argv:
                path = (argv[argv.index("--config") + 1:] or [""])[0]
                if not Path(path).is_file():
                    raise ConfigError(f"--config {path!r} is not a file; give a YAML recipe (e.g. recipes/poc.yaml)")
            check_given(self, [a for a in argv if a.startswith("--") and a != "--config"])
            config, rest = self.parse_args_and_config(argv, return_remaining_strings=True)
            if rest:
                raise ConfigError(f"unknown setting {rest[0]!r}; see --help for the settings")
            return config

    return ConfigParser()


def check_given(parser, argv) -> None:
    """Refuse one setting given under two names (``--num-epochs 2 --num-train-epochs 3``), a pair of
    ``config_class.conflicts`` given together, and a derived setting (a property: ``run_name``)."""
    names: dict[str, set] = {}
    for flag in (word.split("=", 1)[0] for word in argv):
        if (action := parser._option_string_actions.get(flag)) is not None:
            names.setdefault(action.dest, set()).add(flag.lstrip("-").replace("-", "_").removeprefix("no_"))
    for dest, spellings in names.items():
        if len(spellings) > 1:
            raise ConfigError(f"{' and '.join(sorted(spellings))} are one setting ({dest}); give it once")
        if isinstance(getattr(parser.config_class, dest, None), property):
            raise ConfigError(f"{dest} is derived from the other settings and cannot be set")
    for pair in getattr(parser.config_class, "conflicts", ()):
        if set(pair) <= names.keys():
            a, b = (f"--{name.replace('_', '-')}" for name in pair)
            raise ConfigError(f"{a} and {b} both set the batch: give one ({a} counts prompts, {b} completions)")


def settings_from(parser, values: dict, keep=(), known_only: bool = False) -> dict:
    """Notebook parameters (papermill's strings) read as the CLI reads them, keyed by field; a value refused names
    the parameter. ``keep``: names whose ``"auto"`` the notebook decides; ``known_only``: drop names that are no
    setting.

    >>> from chartrl_colab.config import RunConfig
    >>> settings_from(parser_for(RunConfig, "x", ""), {"use_lora": "False", "report_to": "tensorboard"})
    {'use_peft': False, 'report_to': ['tensorboard']}
    """
    if known_only:
        values = {k: v for k, v in values.items() if f"--{k}" in parser._option_string_actions}
    check_given(parser, [f"--{name}" for name in values])
    out = {}
    for name, value in values.items():
        action = parser._option_string_actions.get(f"--{name}")
        if action is None:
            raise ConfigError(f"parameter {name!r} is not a setting of {parser.config_class.__name__}")
        if value == "auto" and name in keep:
            out[action.dest] = value
            continue
        parse, words = action.type or str, _boolean_words(action)
        try:
            if action.nargs == "+":  # a string alone is a one-element list, not its letters
                items = list(value) if isinstance(value, (list, tuple)) else [value]
                out[action.dest] = [parse(v) if isinstance(v, str) else v for v in items]
            elif isinstance(value, str) or words:  # papermill's strings, and 1/0 for a boolean
                out[action.dest] = parse(_tokens(value)[0])
            else:
                out[action.dest] = value  # already a Python value: the config validates it
        except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
            why = f"choose {words}" if words else str(err).rstrip(".")
            raise ConfigError(f"{name}={value!r} is not valid; {why}") from None
    return out


def _boolean_words(action) -> str | None:
    """What a True/False flag (TRL's string_to_bool, or an inverted alias) or a True/False/auto one takes, else None."""
    kind = getattr(action.type, "__name__", "")
    if kind == "tri_state":
        return "auto, true or false"
    if kind == "string_to_bool" or _inverted(action):
        return "true or false (yes/no, 1/0)"
    return None


def _tokens(value) -> list[str]:
    """A Python value as the command-line words that give it."""
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if value is None:
        return ["none"]
    if isinstance(value, (list, tuple)):
        return [w for v in value for w in _tokens(v)] or ["none"]
    if isinstance(value, dict):
        return [json.dumps(value)]
    return [str(value)]


def argv_for(cfg) -> list[str]:
    """The flags that rebuild the dataclass ``cfg`` through :func:`parser_for` (fields at their default omitted).

    >>> from chartrl_colab.config import RunConfig
    >>> argv_for(RunConfig(mode="psr", subset_size=None, use_peft=False, rewards=["format", "accuracy"],
    ...                    output_root="runs"))  # doctest: +NORMALIZE_WHITESPACE
    ['--use-peft', 'false', '--learning-rate', '1e-06', '--rewards', 'format', 'accuracy', '--reward-preset',
     'package', '--subset-size', 'none', '--mode', 'psr', '--batch-size', '2', '--output-root', 'runs']
    """
    argv = []
    for f in dataclasses.fields(cfg):
        if not f.init or isinstance(getattr(type(cfg), f.name, None), property):
            continue
        value = getattr(cfg, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        empty = [v is None or (isinstance(v, (list, tuple, str)) and not v) for v in (value, default)]
        if value == default or all(empty) or (isinstance(value, (list, tuple)) and list(value) == list(default or ())):
            continue  # at its default ("" and None alike: the parser reads an empty default as None)
        argv += ["--" + f.name.replace("_", "-"), *_tokens(value)]
    return argv


def run_cli(job) -> int:
    """A CLI's exit code: ``job()``'s own when it returns an int, else 0. A user's mistake (ConfigError, a missing
    file) or a fault of the machine (:data:`chartrl_colab.errors.OS_FAULTS`) is one ``error:`` line on stderr and
    2; Ctrl-C is one line and 130."""
    configure_logging()
    try:
        code = job()
    except (ConfigError, OSError) as err:
        line = err if isinstance(err, (ConfigError, FileNotFoundError)) else os_fault(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt as err:
        print(str(err) or "interrupted; rerun to continue", file=sys.stderr)
        return INTERRUPTED
    return code if isinstance(code, int) else 0


@contextlib.contextmanager
def training_faults(write_dir: str, step, resume_hint, out_of_memory, cleanup=lambda: None, hold=None):
    """Around ``trainer.train()``: each way a run can stop, as the one line :func:`run_cli` prints.

    Ctrl-C: ``KeyboardInterrupt("interrupted at step <step()>; <resume_hint()>")``; a write that failed for want of
    space (:data:`WRITE_FAILED`): a ConfigError naming ``write_dir``; CUDA out of memory: ``out_of_memory()``,
    raised after the handler so its traceback does not pin the model's memory. ``cleanup()`` runs however it ends;
    ``hold`` (the run's lock) is held for the whole block.
    """
    oom = False
    with hold if hold is not None else contextlib.nullcontext():
        try:
            yield
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"interrupted at step {step()}; {resume_hint()}") from None
        except Exception as err:
            if type(err).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
                oom = True
            elif any(sign in str(err) for sign in WRITE_FAILED):
                first = str(err).strip().splitlines()[0]
                raise ConfigError(f"writing to {write_dir} failed ({first}); the disk is probably full: free space "
                                  f"there (or choose another --output-root/--staging-dir) and {resume_hint()}"
                                  ) from None
            else:
                raise
        finally:
            cleanup()
        if oom:
            raise out_of_memory()
