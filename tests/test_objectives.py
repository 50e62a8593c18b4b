"""The four objectives on hand-made rewards (formulas in chartrl_colab/training/objectives.py)."""

import math

import pytest
import torch

from chartrl_colab.training.objectives import compute_advantages, grpo_advantages, unscorable


def col(*values):
    """A (B, 1) reward matrix: the verifier is the only reward function."""
    return torch.tensor(values, dtype=torch.float32).unsqueeze(1)


def test_grpo_is_group_normalised_sum_with_bessel_std():
    r = col(1, 0, 1, 1)
    mean, std = 0.75, math.sqrt(sum((x - 0.75) ** 2 for x in (1, 0, 1, 1)) / 3)
    expected = [(x - mean) / (std + 1e-4) for x in (1, 0, 1, 1)]
    got = compute_advantages(r, mode="grpo", num_generations=4).advantages
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)


def test_grpo_sums_weighted_rewards_per_group():
    r = torch.tensor([[1.0, 2.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0]])
    w = torch.tensor([1.0, 0.5])
    summed = torch.tensor([2.0, 1.0, 1.0, 0.0])  # group 1: [2, 1]; group 2: [1, 0]
    got = grpo_advantages(r, num_generations=2, reward_weights=w)
    expected = torch.cat([(g - g.mean()) / (g.std() + 1e-4) for g in summed.view(2, 2)])
    assert torch.allclose(got, expected, atol=1e-6)


def test_grpo_scale_none_only_centres():
    got = grpo_advantages(col(3, 1, 0, 0), num_generations=2, scale_rewards="none")
    assert got.tolist() == [1.0, -1.0, 0.0, 0.0]


def test_all_correct_group_grpo_zero_psr_positive_nsr_silent():
    r = col(1, 1, 1, 1)
    assert compute_advantages(r, mode="grpo", num_generations=4).advantages.abs().max() < 1e-6
    psr = compute_advantages(r, mode="psr", num_generations=4)
    assert psr.advantages.tolist() == [1.0] * 4 and psr.keep.all()
    nsr = compute_advantages(r, mode="nsr", num_generations=4)
    assert nsr.advantages.tolist() == [0.0] * 4 and not nsr.keep.any()


def test_all_wrong_group_grpo_zero_nsr_negative_psr_silent():
    r = col(0, 0, 0, 0)
    assert compute_advantages(r, mode="grpo", num_generations=4).advantages.abs().max() < 1e-6
    nsr = compute_advantages(r, mode="nsr", num_generations=4)
    assert nsr.advantages.tolist() == [-1.0] * 4 and nsr.keep.all()
    psr = compute_advantages(r, mode="psr", num_generations=4)
    assert psr.advantages.tolist() == [0.0] * 4 and not psr.keep.any()


def test_psr_nsr_have_no_baseline_or_scaling():
    r = col(1, 0, 0, 0, 1, 1, 1, 0)  # different group means must not shift anything
    psr = compute_advantages(r, mode="psr", num_generations=4)
    nsr = compute_advantages(r, mode="nsr", num_generations=4)
    assert psr.advantages.tolist() == [1, 0, 0, 0, 1, 1, 1, 0]
    assert nsr.advantages.tolist() == [0, -1, -1, -1, 0, 0, 0, -1]
    assert psr.keep.tolist() == [bool(x) for x in (1, 0, 0, 0, 1, 1, 1, 0)]
    assert (nsr.keep == ~psr.keep).all()


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.5, 1.0])
def test_w_reinforce_weights_correct_by_lambda(lam):
    a = compute_advantages(col(1, 0, 1, 0), mode="w-reinforce", lambda_psr=lam, num_generations=2)
    assert torch.allclose(a.advantages, torch.tensor([lam, -1.0, lam, -1.0]))
    assert a.keep.all()  # both classes stay in the loss, correct ones down-weighted


def test_threshold_boundary_counts_as_correct():
    r = col(0.5, 0.49999, 0.5001, -3.0)
    a = compute_advantages(r, mode="psr", reward_threshold=0.5, num_generations=2)
    assert a.correct.tolist() == [True, False, True, False]
    assert a.incorrect.tolist() == [False, True, False, True]


def test_negative_and_large_thresholds():
    r = col(-1.0, -2.0)
    assert compute_advantages(r, mode="nsr", reward_threshold=-1.5, num_generations=2).advantages.tolist() == [0, -1]
    assert compute_advantages(r, mode="psr", reward_threshold=10, num_generations=2).keep.tolist() == [False, False]


def test_verifier_column_alone_decides_correctness():
    r = torch.tensor([[2.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 0.0]])  # column 0: format, column 1: accuracy
    a = compute_advantages(r, mode="psr", verifier=1, num_generations=2)
    assert a.advantages.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_unscored_verifier_drops_the_sample_in_every_reinforce_mode():
    r = col(float("nan"), 0.0)
    for mode in ("psr", "nsr", "w-reinforce"):
        a = compute_advantages(r, mode=mode, num_generations=2)
        assert not a.keep[0] and a.advantages[0] == 0
    assert compute_advantages(r, mode="grpo", num_generations=2).advantages[0] == 0  # TRL zeroes unscorable


def test_bad_mode_and_verifier_are_named():
    with pytest.raises(ValueError, match="mode='ppo'.*grpo, psr, nsr, w-reinforce"):
        compute_advantages(col(1, 0), mode="ppo", num_generations=2)
    with pytest.raises(ValueError, match="verifier index 3"):
        compute_advantages(col(1, 0), mode="psr", verifier=3, num_generations=2)


def test_grpo_on_weighted_rewards_drops_what_they_cannot_score():
    # Weight 0 on the format reward (grpo on the verifier alone): completion 0 has a format reward but no
    # verifier reward, so nothing it is trained on scored it. TRL would sum it to 0, a wrong answer in the baseline.
    nan = float("nan")
    r = torch.tensor([[1.0, nan], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    weights = torch.tensor([0.0, 1.0])
    assert unscorable(r, weights).tolist() == [True, False, False, False]
    assert unscorable(r).tolist() == [False] * 4  # with every weight, the format reward scored it
    a = compute_advantages(r, mode="grpo", verifier=1, num_generations=4, reward_weights=weights)
    s = math.sqrt(1 / 3) + 1e-4  # the scored [0, 1, 1]: mean 2/3, Bessel std sqrt(1/3)
    assert a.advantages.tolist() == pytest.approx([0.0, -2 / 3 / s, 1 / 3 / s, 1 / 3 / s], abs=1e-6)
    assert a.keep.tolist() == [False, True, True, True]
    assert compute_advantages(r, mode="grpo", num_generations=4).keep.all()
