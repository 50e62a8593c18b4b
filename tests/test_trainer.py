"""ModeTrainer end to end on the embedded default (tiny Qwen2.5-VL, synthetic charts), on CPU."""

import math

import pytest
import torch
from trl import GRPOConfig

from chartrl_colab.models import add_lora, load_model_and_processor
from chartrl_colab.objectives import compute_advantages
from chartrl_colab.rewards import accuracy_reward, format_reward, table_reward
from chartrl_colab.trainer import ModeTrainer, resolve_verifier


def parity_reward(completions, **kwargs):
    """A verifier with both outcomes on random text: correct when the completion has an even length."""
    return [float(len(c[0]["content"]) % 2 == 0) for c in completions]


def always(value):
    def constant_reward(completions, **kwargs):
        return [value] * len(completions)
    return constant_reward


class RecordingTrainer(ModeTrainer):
    """Keeps what the loss saw and the gradients it produced."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []  # (gathered rewards, advantages the loss used, loss mask rows kept)
        self.grads = []
        self.kept_tokens = []  # per completion: tokens in the loss mask

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        mask = out["completion_mask"] * out.get("tool_mask", torch.ones_like(out["completion_mask"]))
        self.seen.append((self._gathered_rewards.clone(), out["advantages"].clone(), mask.sum(1) > 0,
                          out["completion_mask"].sum(1) > 0))
        self.kept_tokens.append(mask.sum(1).float())
        return out

    def training_step(self, model, inputs, num_items_in_batch):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.grads.append([p.grad.detach().clone() if p.grad is not None else None
                           for n, p in model.named_parameters() if "lora_" in n])
        return loss


def make_trainer(tmp_path, tiny_cache, charts, mode, reward_funcs, verifier, steps=2, **kwargs):
    model, processor = load_model_and_processor("tiny", cache_dir=tiny_cache, seed=0)
    model = add_lora(model, r=4, alpha=8, dropout=0.0, gradient_checkpointing=False)
    args = GRPOConfig(output_dir=str(tmp_path / mode), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=12, max_steps=steps, logging_steps=1, report_to=[], use_cpu=True,
                      save_strategy="no", seed=1, remove_unused_columns=False)
    return RecordingTrainer(model=model, processing_class=processor, reward_funcs=reward_funcs, args=args,
                            train_dataset=charts, mode=mode, verifier=verifier, print_mode_lines=False, **kwargs)


def lora_state(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("mode", ["grpo", "psr", "nsr", "w-reinforce"])
def test_every_mode_uses_the_objectives_advantages_and_moves_lora(mode, tmp_path, tiny_cache, charts):
    funcs = [format_reward, accuracy_reward, table_reward, parity_reward]
    trainer = make_trainer(tmp_path, tiny_cache, charts, mode, funcs, verifier="parity_reward", lambda_psr=0.3)
    before = lora_state(trainer)
    trainer.train()
    after = lora_state(trainer)

    assert len(trainer.seen) == 2
    for rewards, used, kept, nonempty in trainer.seen:
        assert rewards.shape == (8, 4)
        expected = compute_advantages(rewards, mode=mode, verifier=3, lambda_psr=0.3, num_generations=4,
                                      reward_weights=trainer.reward_weights)
        assert torch.allclose(used, expected.advantages, atol=1e-6)
        if mode in ("psr", "nsr"):  # the other class is out of the loss entirely
            assert torch.equal(kept, expected.keep & nonempty)
        else:
            assert torch.equal(kept, nonempty)
    assert any(not torch.equal(before[n], after[n]) for n in before), "LoRA weights did not change"

    # First step: the policy is the sampling policy (ratio 1, no clipping), so TRL's dapo loss must be the
    # token-weighted mean of -advantage over the tokens left in the mask, and nothing else (no KL).
    tokens, used = trainer.kept_tokens[0], trainer.seen[0][1]
    expected_loss = float(-(used * tokens).sum() / tokens.sum().clamp(min=1))
    history = trainer.state.log_history
    assert history[0]["loss"] == pytest.approx(expected_loss, abs=1e-5)
    for key in ("mode/num_positive", "mode/num_negative", "mode/positive_fraction", "loss", "entropy", "reward"):
        assert key in history[0], key
    assert history[0]["mode/num_positive"] + history[0]["mode/num_negative"] == 8
    assert math.isclose(history[0]["mode/positive_fraction"], history[0]["mode/num_positive"] / 8)


@pytest.mark.parametrize("mode,verifier_value", [("psr", 0.0), ("nsr", 1.0)])
def test_batch_without_the_trained_class_gives_zero_gradient(mode, verifier_value, tmp_path, tiny_cache, charts):
    trainer = make_trainer(tmp_path, tiny_cache, charts, mode, [format_reward, always(verifier_value)],
                           verifier=1, steps=1)
    before = lora_state(trainer)
    trainer.train()
    assert trainer.grads and all(g is None or torch.count_nonzero(g) == 0 for g in trainer.grads[0])
    assert all(torch.equal(before[n], p) for n, p in lora_state(trainer).items())
    loss = trainer.state.log_history[0]["loss"]
    assert math.isfinite(loss) and loss == 0.0
    assert trainer.state.log_history[0]["entropy"] is None  # a mean over no tokens is not logged as 0


def test_grpo_all_equal_rewards_give_zero_advantage_but_psr_does_not(tmp_path, tiny_cache, charts):
    grpo = make_trainer(tmp_path, tiny_cache, charts, "grpo", [always(1.0)], verifier=0, steps=1)
    grpo.train()
    assert grpo.seen[0][1].abs().max() == 0
    psr = make_trainer(tmp_path, tiny_cache, charts, "psr", [always(1.0)], verifier=0, steps=1)
    psr.train()
    assert torch.equal(psr.seen[0][1], torch.ones(8))


def test_verifier_is_resolved_by_name_registry_key_or_index():
    names = ["format_reward", "accuracy_reward"]
    assert resolve_verifier("accuracy_reward", names) == 1
    assert resolve_verifier("accuracy", names) == 1
    assert resolve_verifier(0, names) == 0
    with pytest.raises(ValueError, match="verifier='bleu'.*format_reward, accuracy_reward"):
        resolve_verifier("bleu", names)
    with pytest.raises(ValueError, match="verifier=5"):
        resolve_verifier(5, names)
    assert resolve_verifier(None, names) == 1  # the accuracy reward by default
    assert resolve_verifier(None, ["parity_reward"]) == 0  # the only one
    with pytest.raises(ValueError, match="verifier is not set.*format_reward, parity_reward"):
        resolve_verifier(None, ["format_reward", "parity_reward"])


def test_bad_mode_is_refused_before_building(tmp_path, tiny_cache, charts):
    with pytest.raises(ValueError, match="mode='ppo' is not valid; choose one of: grpo, psr, nsr, w-reinforce"):
        make_trainer(tmp_path, tiny_cache, charts, "ppo", [always(1.0)], verifier=0)
