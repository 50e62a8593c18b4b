"""Reward presets: which functions score the seven rewards, and the system prompt that asks for their layout.

``chart-rvr``: the original Chart-RVR signal (``rewards.chart_rvr``, its bugs fixed); ``package``: this package's
bounded, whitespace-tolerant set (``rewards.package``). A run picks one with ``RunConfig.reward_preset``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from chartrl_colab.errors import one_of
from chartrl_colab.rewards import chart_rvr
from chartrl_colab.rewards import package as rewards


@dataclass(frozen=True)
class RewardPreset:
    funcs: Mapping[str, Callable[..., list[float | None]]]
    system_prompt: str  # ends with "Example:\n" + example
    example: str  # a completion the preset's own format reward scores full marks
    # Each reward's (low, high): a verifier's threshold outside makes every sample correct, or none.
    ranges: Mapping[str, tuple[float, float]]


PRESETS: dict[str, RewardPreset] = {
    "chart-rvr": RewardPreset(chart_rvr.REWARD_FUNCS, chart_rvr.CHART_RVR_PROMPT, chart_rvr.CHART_RVR_EXAMPLE,
                              # the original's scales (chart_rvr's docstring); table grows with the columns
                              {"format": (0.0, 2.0), "accuracy": (0.0, 1.0), "length": (0.0, 2.5), "tags": (0.0, 2.0),
                               "chart_type": (0.0, 1.0), "table": (0.0, math.inf), "reasoning": (-1.0, 1.0)}),
    "package": RewardPreset(
        rewards.REWARD_FUNCS,
        "You are a vision-language assistant that answers questions about chart images. " + rewards.ANSWER_FORMAT,
        rewards.ANSWER_FORMAT.split("Example:\n", 1)[1],
        {"format": (0.0, 2.0), "accuracy": (0.0, 1.0), "length": (0.0, 1.0), "tags": (0.0, 1.0),
         "chart_type": (0.0, 1.0), "table": (0.0, 1.0), "reasoning": (0.0, 1.0)}),
}
PRESET_NAMES = tuple(PRESETS)
DEFAULT_PRESET = "chart-rvr"
AUTO = "auto"


def resolve_preset(preset: str, dataset_name: str) -> str:
    """``preset`` itself, or for ``"auto"`` the one a data set trains with.

    >>> resolve_preset("auto", "chart-rvr"), resolve_preset("auto", "synthetic"), resolve_preset("package", "chartqa")
    ('chart-rvr', 'package', 'package')
    """
    if preset != AUTO:
        return preset
    # The synthetic charts keep the package's short prompt: the tiny embedded models read it (the warm base learned
    # it), and on a CPU a four times longer prompt is four times the work for no gain.
    return "package" if dataset_name == "synthetic" else DEFAULT_PRESET


def get_preset(name: str) -> RewardPreset:
    """The preset called ``name``; ConfigError naming the valid ones otherwise."""
    one_of("reward_preset", name, PRESET_NAMES)
    return PRESETS[name]


def get_reward_funcs(names: Sequence[str], preset: str = DEFAULT_PRESET) -> list[Callable[..., list[float | None]]]:
    """The functions of ``preset`` for the reward ``names``, in the given order."""
    funcs = get_preset(preset).funcs
    for name in names:
        one_of("reward", name, tuple(funcs))
    return [funcs[name] for name in names]
