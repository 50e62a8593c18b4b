"""Rewards -> per-sample advantages for the four training objectives.

The objectives come from Zhu et al., 2025, *The Surprising Effectiveness of Negative Reinforcement in
LLM Reasoning* (arXiv 2506.01347), whose code is RLVR-Decomposed
(``verl/trainer/ppo/core_algos.py::compute_psr_nsr_outcome_advantage`` and ``ray_trainer.py``).

A batch holds ``B = num_prompts * G`` completions (``G = num_generations``, one group per prompt) and a
matrix ``R`` of rewards, one column per reward function (NaN where a function does not apply). One column,
the *verifier* (by default the accuracy reward), judges correctness::

    correct_i   = R[i, verifier] >= reward_threshold
    incorrect_i = R[i, verifier] <  reward_threshold        (NaN: neither; such a sample is dropped)

With ``r_i = 1`` for correct and ``0`` for incorrect samples the advantages are

=============  ===================================================  ==================================
mode           advantage A_i                                        samples in the loss
=============  ===================================================  ==================================
grpo           (s_i - mean_group(s)) / (std_group(s) + 1e-4),       all scored samples (TRL's GRPO)
               s_i = sum_k w_k R[i, k]  (TRL's weighted sum)
psr            r_i                 (+1 correct)                     correct only
nsr            r_i - 1             (-1 incorrect)                   incorrect only
w-reinforce    lambda_psr * r_i  if correct,  r_i - 1 otherwise     all scored samples
=============  ===================================================  ==================================

psr, nsr and w-reinforce use no group baseline and no std scaling: an all-correct or all-wrong group
still carries signal (GRPO's advantages are zero there). Samples outside ``keep`` are neither in the loss
nor in its normalisation, whatever TRL's ``loss_type``, nor in the model's forward (how, and the per-step
formula: :mod:`chartrl_colab.training.trainer`). A sample the verifier could not score (reward None) is in
no mode's loss; in grpo, one that no reward with a non-zero weight scored (:func:`unscorable`).

The rest of the paper's recipe is the default of :class:`chartrl_colab.config.RunConfig`: a PPO-clipped
surrogate (epsilon 0.2), TRL's ``dapo`` token normalisation, no KL term (beta 0), 8 rollouts per prompt,
temperature 1.0, learning rate 1e-6 (1e-5 with LoRA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from trl.trainer.utils import nanstd  # grpo must match TRL bit for bit: its own Bessel-corrected std ignoring NaNs

from chartrl_colab.config import MODES


@dataclass(frozen=True)
class Advantages:
    """What an objective decides for one batch, one entry per completion."""

    advantages: torch.Tensor  # float (B,)
    keep: torch.Tensor  # bool (B,): the completion's tokens enter the loss and its normalisation
    correct: torch.Tensor  # bool (B,): verifier reward >= threshold
    incorrect: torch.Tensor  # bool (B,): verifier reward < threshold (NaN is neither)


def unscorable(rewards_per_func: torch.Tensor, reward_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Rows that no reward with a non-zero weight scored (all NaN there): bool (B,).

    TRL's ``unscorable_mask`` counts only rows with every reward None; one whose weighted rewards are all None
    (grpo on the verifier alone) it would sum to 0, a wrong answer in its group's baseline.

    >>> r = torch.tensor([[1.0, float("nan")], [float("nan"), 0.0], [float("nan"), float("nan")]])
    >>> unscorable(r).tolist(), unscorable(r, torch.tensor([0.0, 1.0])).tolist()
    ([False, False, True], [True, False, True])
    """
    weights = torch.ones(rewards_per_func.shape[1]) if reward_weights is None else reward_weights
    weighted = weights.to(rewards_per_func.device) != 0
    return torch.isnan(rewards_per_func[:, weighted]).all(dim=1)


def grpo_advantages(
    rewards_per_func: torch.Tensor,
    num_generations: int,
    reward_weights: torch.Tensor | None = None,
    scale_rewards: str = "group",
) -> torch.Tensor:
    """TRL's GRPO advantages (``multi_objective_aggregation="sum_then_normalize"``).

    >>> r = torch.tensor([[1.0], [0.0], [1.0], [1.0]])
    >>> [round(a, 3) for a in grpo_advantages(r, num_generations=2).tolist()]
    [0.707, -0.707, 0.0, 0.0]
    """
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards={scale_rewards!r}: expected one of group, batch, none")
    weights = torch.ones(rewards_per_func.shape[1]) if reward_weights is None else reward_weights
    rewards = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    rewards[unscorable(rewards_per_func, weights)] = torch.nan  # out of the baseline, advantage 0
    grouped = rewards.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
    advantages = rewards - mean
    if scale_rewards == "group":
        advantages = advantages / (nanstd(grouped, dim=1).repeat_interleave(num_generations) + 1e-4)
    elif scale_rewards == "batch":
        advantages = advantages / (nanstd(rewards, dim=0) + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def compute_advantages(
    rewards_per_func: torch.Tensor,
    *,
    mode: str,
    verifier: int = 0,
    reward_threshold: float = 0.5,
    lambda_psr: float = 0.1,
    num_generations: int = 8,
    reward_weights: torch.Tensor | None = None,
    scale_rewards: str = "group",
) -> Advantages:
    """Advantages of one batch under ``mode``; ``rewards_per_func`` is (B, num_reward_funcs).

    >>> r = torch.tensor([[1.0], [0.0], [1.0], [1.0]])   # verifier column 0, two groups of 2
    >>> compute_advantages(r, mode="psr", num_generations=2).advantages.tolist()
    [1.0, 0.0, 1.0, 1.0]
    >>> compute_advantages(r, mode="nsr", num_generations=2).keep.tolist()
    [False, True, False, False]
    >>> a = compute_advantages(r, mode="w-reinforce", lambda_psr=0.25, num_generations=2)
    >>> a.advantages.tolist()
    [0.25, -1.0, 0.25, 0.25]
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    if rewards_per_func.dim() != 2 or not 0 <= verifier < rewards_per_func.shape[1]:
        raise ValueError(
            f"verifier index {verifier} is out of range for rewards of shape {tuple(rewards_per_func.shape)}"
        )
    score = rewards_per_func[:, verifier]
    correct = score >= reward_threshold  # NaN compares False both ways
    incorrect = score < reward_threshold
    if mode == "grpo":
        advantages = grpo_advantages(rewards_per_func, num_generations, reward_weights, scale_rewards)
        keep = ~unscorable(rewards_per_func, reward_weights)
    elif mode == "psr":
        advantages, keep = correct.float(), correct
    elif mode == "nsr":
        advantages, keep = -incorrect.float(), incorrect
    else:  # w-reinforce
        advantages = lambda_psr * correct.float() - incorrect.float()
        keep = correct | incorrect
    return Advantages(advantages=advantages, keep=keep, correct=correct, incorrect=incorrect)
