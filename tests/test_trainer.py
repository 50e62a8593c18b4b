"""ModeTrainer end to end on the embedded default (tiny Qwen2.5-VL, synthetic charts), on CPU."""

import math

import pytest
import torch
import trl.trainer.grpo_trainer as trl_grpo
from trl import GRPOConfig

from chartrl_colab.errors import ConfigError
from chartrl_colab.models.loading import add_lora, load_model_and_processor
from chartrl_colab.rewards.package import accuracy_reward, format_reward, table_reward
from chartrl_colab.training.objectives import compute_advantages, grpo_advantages
from chartrl_colab.training.trainer import ModeTrainer, resolve_verifier


def parity_reward(completions, **kwargs):
    """A verifier with both outcomes on random text: correct when the completion has an even length."""
    return [float(len(c[0]["content"]) % 2 == 0) for c in completions]


def always(value):
    def constant_reward(completions, **kwargs):
        return [value] * len(completions)
    return constant_reward


def by_position(values, name="pattern_reward"):
    """A verifier whose reward depends only on the completion's position in the generation batch."""
    def reward(completions, **kwargs):
        assert len(completions) == len(values)
        return list(values)
    reward.__name__ = name
    return reward


FIVE_OF_EIGHT = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
UNSCORED_TWO = [1.0, 0.0, None, 1.0, None, 0.0, 0.0, 1.0]  # the verifier could not score completions 2 and 4


def loss_mask(inputs):
    return inputs["completion_mask"] * inputs.get("tool_mask", torch.ones_like(inputs["completion_mask"]))


class RecordingTrainer(ModeTrainer):
    """Keeps what the loss saw and the gradients it produced."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []  # (gathered rewards, advantages the loss used, loss mask rows kept)
        self.grads = []
        self.kept_tokens = []  # per completion: tokens in the loss mask
        self.num_items = []  # num_items_in_batch of each generation batch
        self.generated = []  # per generation batch: {(prompt ids, completion ids): (advantage, kept)}
        self.micro = []  # per micro-batch: what TRL's _compute_loss was given and what it logged
        self.forwards = []  # per forward through the model: (with entropy, i.e. the loss's; rows)
        self._logps = None
        self._index = None

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        mask = loss_mask(out)
        self.seen.append((self._gathered_rewards.clone(), out["advantages"].clone(), mask.sum(1) > 0,
                          out["completion_mask"].sum(1) > 0))
        self.kept_tokens.append(mask.sum(1).float())
        self.num_items.append(float(out["num_items_in_batch"]))
        rows = {}
        for p, pm, c, cm, a, m in zip(out["prompt_ids"], out["prompt_mask"], out["completion_ids"],
                                      out["completion_mask"], out["advantages"], mask):
            rows[(tuple(p[pm.bool()].tolist()), tuple(c[cm.bool()].tolist()))] = (float(a), bool(m.sum() > 0))
        self.generated.append(rows)
        return out

    def _get_per_token_logps_and_entropies(self, model, input_ids, *args, compute_entropy=False, **kwargs):
        # ModeTrainer defers this one (no forward)
        stand_in = getattr(self, "_defer_old_logps", False) and not compute_entropy
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(model, input_ids, *args,
                                                                          compute_entropy=compute_entropy, **kwargs)
        if not stand_in:
            self.forwards.append((compute_entropy, input_ids.shape[0]))
        if compute_entropy:  # the loss's forward pass (generation's old log-probs need no entropy)
            self._logps = logps.detach().clone()
        return logps, entropies, aux

    def _rows_to_run(self, mask):
        self._index = super()._rows_to_run(mask)
        return self._index

    def _compute_loss(self, model, inputs):
        self._index = None
        loss = super()._compute_loss(model, inputs)
        metrics = self._metrics["train"]
        mask = loss_mask(inputs)
        old = inputs.get("old_per_token_logps")
        rows = [(tuple(p[pm.bool()].tolist()), tuple(c[cm.bool()].tolist())) for p, pm, c, cm in
                zip(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], inputs["completion_mask"])]
        ran = torch.arange(mask.shape[0]) if self._index is None else self._index  # the loss's forward ran these
        ratio = torch.ones_like(mask, dtype=torch.float32)
        if old is not None:
            ratio[ran] = torch.exp(self._logps - old[ran])
        self.micro.append({"rows": rows, "advantages": inputs["advantages"].clone(), "mask": mask.clone(),
                           "ratio": ratio, "loss": float(loss), "entropy": metrics["entropy"][-1],
                           "clip": metrics["clip_ratio/region_mean"][-1], "ran": len(ran),
                           "inputs": {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}})
        return loss

    def training_step(self, model, inputs, num_items_in_batch):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.grads.append([p.grad.detach().clone() if p.grad is not None else None
                           for n, p in model.named_parameters() if "lora_" in n])
        return loss


def make_trainer(tmp_path, tiny_cache, charts, mode, reward_funcs, verifier, steps=2, settings=None, **kwargs):
    """A ModeTrainer on 2 prompts x 4 completions per step; ``settings``: GRPOConfig values to change."""
    model, processor = load_model_and_processor("tiny", cache_dir=tiny_cache, seed=0)
    model = add_lora(model, r=4, alpha=8, dropout=0.0, gradient_checkpointing=False)
    defaults = {"output_dir": str(tmp_path / mode), "per_device_train_batch_size": 8, "num_generations": 4,
                "max_completion_length": MAX_LEN, "max_steps": steps, "logging_steps": 1, "report_to": [],
                "use_cpu": True, "save_strategy": "no", "seed": 1, "remove_unused_columns": False}
    args = GRPOConfig(**{**defaults, **(settings or {})})
    kwargs.setdefault("print_mode_lines", False)
    return RecordingTrainer(model=model, processing_class=processor, reward_funcs=reward_funcs, args=args,
                            train_dataset=charts, mode=mode, verifier=verifier, **kwargs)


MAX_LEN = 12


def on_policy_loss(loss_type, advantages, tokens):
    """TRL's loss, by hand, on a step whose ratio is 1 (no clipping), over the completions with tokens in the
    mask only: per_token_loss = -advantage, normalised as ``loss_type`` does over the kept completions."""
    kept = tokens > 0
    a, t = advantages[kept], tokens[kept]
    if loss_type in ("dapo", "bnpo"):  # token mean
        return float(-(a * t).sum() / t.sum())
    if loss_type == "grpo":  # mean over completions of each one's token mean
        return float(-a.mean())
    if loss_type == "dr_grpo":  # token sum over completions * max_completion_length
        return float(-(a * t).sum() / (kept.sum() * MAX_LEN))
    raise AssertionError(loss_type)


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
    assert "entropy" not in trainer.state.log_history[0]  # a mean over no tokens: not logged, neither as 0 nor None


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


# --------------------------------------------------------------------------- exact objectives
@pytest.mark.parametrize("mode,verifier_rewards,loss_type", [
    ("psr", FIVE_OF_EIGHT, "grpo"),  # 5 of 8 kept: loss -1, TRL's own mean over all 8 rows gives -0.625
    ("psr", FIVE_OF_EIGHT, "dr_grpo"),
    ("nsr", FIVE_OF_EIGHT, "grpo"),
    ("nsr", FIVE_OF_EIGHT, "dr_grpo"),
    ("w-reinforce", UNSCORED_TWO, "dapo"),  # unscored: advantage 0 and out of num_items_in_batch
    ("w-reinforce", UNSCORED_TWO, "grpo"),
    ("grpo", UNSCORED_TWO, "dapo"),
    ("grpo", UNSCORED_TWO, "dr_grpo"),
])
def test_dropped_completions_are_out_of_the_loss_and_its_normalisation(mode, verifier_rewards, loss_type, tmp_path,
                                                                       tiny_cache, charts):
    trainer = make_trainer(tmp_path, tiny_cache, charts, mode, [by_position(verifier_rewards)], verifier=0, steps=1,
                           settings={"loss_type": loss_type})
    trainer.train()
    rewards, used, kept, nonempty = trainer.seen[0]
    expected = compute_advantages(rewards, mode=mode, verifier=0, num_generations=4)
    scored = torch.tensor([v is not None for v in verifier_rewards])
    if mode == "psr":
        assert expected.keep.tolist() == [v == 1.0 for v in verifier_rewards]
    elif mode == "nsr":
        assert expected.keep.tolist() == [v == 0.0 for v in verifier_rewards]
    else:  # every scored completion, and only those
        assert torch.equal(expected.keep, scored)
    assert torch.equal(used, expected.advantages) and torch.equal(kept, expected.keep & nonempty)
    assert torch.all(used[~scored] == 0)
    tokens = trainer.kept_tokens[0]
    assert trainer.num_items[0] == float(tokens.sum())  # the dropped completions' tokens are not counted
    loss = trainer.state.log_history[0]["loss"]
    assert loss == pytest.approx(on_policy_loss(loss_type, used, tokens), abs=1e-6)
    if verifier_rewards is FIVE_OF_EIGHT and loss_type == "grpo":
        assert loss == pytest.approx(-1.0 if mode == "psr" else 1.0, abs=1e-6)


def test_grpo_on_the_verifier_alone_ignores_the_other_rewards_but_logs_them(tmp_path, tiny_cache, charts):
    # reward_weights 1 for the verifier, 0 for the rest (RunConfig's grpo_rewards="verifier"); the verifier could
    # not score completions 2 and 4, which the format reward did score: TRL would sum them to 0 (a wrong answer in
    # its group's baseline); they are out of the baseline and of the loss instead.
    funcs = [always(1.0), by_position(UNSCORED_TWO)]
    trainer = make_trainer(tmp_path, tiny_cache, charts, "grpo", funcs, verifier=1, steps=1,
                           settings={"reward_weights": [0.0, 1.0]})
    trainer.train()
    rewards, used, kept, _ = trainer.seen[0]
    by_hand = grpo_advantages(rewards[:, [1]], num_generations=4)  # the verifier column alone, NaN for None
    assert torch.allclose(used, by_hand, atol=1e-6)
    # group 1 = [1, 0, None, 1]: mean 2/3, std sqrt(1/3); group 2 = [None, 0, 0, 1]: mean 1/3, std sqrt(1/3)
    s = math.sqrt(1 / 3) + 1e-4
    assert used.tolist() == pytest.approx([1 / 3 / s, -2 / 3 / s, 0, 1 / 3 / s, 0, -1 / 3 / s, -1 / 3 / s, 2 / 3 / s],
                                          abs=1e-5)
    assert kept.tolist() == [v is not None for v in UNSCORED_TWO]
    history = trainer.state.log_history[0]
    assert history["rewards/constant_reward/mean"] == 1.0  # still computed and logged
    assert history["rewards/pattern_reward/mean"] == pytest.approx(3 / 6)  # over the scored completions
    assert history["reward"] == pytest.approx(3 / 8)  # TRL's weighted sum: only the verifier, None summed as 0


def test_a_micro_batch_with_nothing_to_learn_logs_no_entropy(tmp_path, tiny_cache, charts):
    # Gradient accumulation 2: the generation batch of 8 is split in two micro-batches of 4; one correct
    # completion in 8, so psr has an empty mask in one of them whatever TRL's shuffle does.
    one = [1.0] + [0.0] * 7
    trainer = make_trainer(tmp_path, tiny_cache, charts, "psr", [by_position(one)], verifier=0, steps=1,
                           settings={"loss_type": "grpo", "per_device_train_batch_size": 4,
                                     "gradient_accumulation_steps": 2})
    trainer.train()
    assert len(trainer.micro) == 2
    empty, full = sorted(trainer.micro, key=lambda m: float(m["mask"].sum()))
    assert float(empty["mask"].sum()) == 0 and float(full["mask"].sum()) > 0
    assert math.isnan(empty["entropy"]) and math.isnan(empty["clip"])  # a mean over no tokens: not 0
    history = trainer.state.log_history[0]
    assert history["entropy"] == pytest.approx(full["entropy"], rel=1e-6)  # not halved by a false 0
    assert history["clip_ratio/region_mean"] == 0.0
    # one completion kept in the whole generation batch: the step's grpo loss is its -1, not -1 / 8
    assert empty["loss"] == 0.0 and history["loss"] == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("settings", [{"steps_per_generation": 2, "per_device_train_batch_size": 4},
                                      {"num_iterations": 2}])
def test_several_updates_per_generation_batch_are_clipped_off_policy_steps(settings, tmp_path, tiny_cache, charts):
    epsilon, spg = 0.01, settings.get("steps_per_generation", 1)
    trainer = make_trainer(tmp_path, tiny_cache, charts, "psr", [by_position(FIVE_OF_EIGHT)], verifier=0, steps=2,
                           settings={"loss_type": "grpo", "learning_rate": 0.05, "epsilon": epsilon, **settings})
    trainer.train()
    assert len(trainer.generated) == 1 and len(trainer.micro) == 2  # one generation batch, two optimizer steps
    generated = trainer.generated[0]
    assert len(generated) == 8  # (prompt, completion) identifies a row
    # Each step's slice carries its own rows' advantages and loss mask, as the objective set them.
    seen_rows = []
    for micro in trainer.micro:
        for row, advantage, mask_row in zip(micro["rows"], micro["advantages"].tolist(), micro["mask"]):
            assert (advantage, bool(mask_row.sum() > 0)) == generated[row]
            seen_rows.append(row)
    assert sorted(seen_rows) == sorted(list(generated) * (2 // spg))  # spg: split in two; num_iterations: used twice
    first, second = trainer.micro
    kept_mask = [m["mask"].bool() for m in (first, second)]
    assert (first["ratio"][kept_mask[0]] - 1).abs().max() < 1e-4  # the first update is on the sampling policy
    assert (second["ratio"][kept_mask[1]] - 1).abs().max() > 1e-2  # the second is off-policy: the ratio moved
    history = [h for h in trainer.state.log_history if "loss" in h]
    for h, micro in zip(history, trainer.micro):
        ratio, mask, advantages = micro["ratio"], micro["mask"], micro["advantages"].unsqueeze(1)
        clipped = ((ratio > 1 + epsilon) & (advantages > 0)) | ((ratio < 1 - epsilon) & (advantages < 0))
        assert h["clip_ratio/region_mean"] == pytest.approx(float((clipped * mask).sum() / mask.sum()), abs=1e-6)
        # TRL's clipped surrogate by hand, averaged per completion over the 5 kept ones of the generation batch
        # (each of the spg slices holds its share of them)
        surrogate = -torch.min(ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages)
        per_completion = (surrogate * mask).sum(1) / mask.sum(1).clamp(min=1)
        assert h["loss"] == pytest.approx(float(per_completion.sum() / (5 / spg)), abs=1e-5)
    assert history[1]["clip_ratio/region_mean"] > 0  # the clip acts


def test_mode_line_prints_the_verifier_reward_and_the_advantage_apart(tmp_path, tiny_cache, charts, capsys):
    trainer = make_trainer(tmp_path, tiny_cache, charts, "nsr", [always(0.5), by_position(FIVE_OF_EIGHT)],
                           verifier=1, steps=1, print_mode_lines=True)
    trainer.train()
    assert "NSR [Step 1]: 3/8 negative samples | Avg reward: 0.625 | Avg advantage: -0.375" in capsys.readouterr().out


# ------------------------------------------------------- steps, rollouts and the kept rows' compute
def identity_shuffle(monkeypatch):
    """TRL's shuffle of the generation batch fixed to the identity: slice k holds rows k*b .. (k+1)*b - 1."""
    monkeypatch.setattr(trl_grpo, "shuffle_sequence_dict", lambda batch: batch)


MODEL_INPUTS = ("pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids", "token_type_ids")


def kept_only_gradient(trainer, start, micros):
    """The gradient of -sum(ratio * advantage) / (kept tokens) over the micro-batches' kept tokens, on-policy, at
    the LoRA weights ``start``: the step's loss if the dropped rows had never been there."""
    model = trainer.model
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in start:
                p.copy_(start[n])
    model.train()
    model.zero_grad()
    total = sum(float(m["mask"].sum()) for m in micros)
    loss = 0.0
    for m in micros:
        inp = m["inputs"]
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            model, torch.cat([inp["prompt_ids"], inp["completion_ids"]], 1),
            torch.cat([inp["prompt_mask"], inp["completion_mask"]], 1), inp["completion_ids"].shape[1],
            **{k: inp[k] for k in MODEL_INPUTS if k in inp})
        ratio = torch.exp(logps - logps.detach())
        loss = loss - (ratio * inp["advantages"].unsqueeze(1) * m["mask"]).sum() / total
    loss.backward()
    return float(loss), [p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n]


def test_bnpo_with_accumulation_normalises_over_the_steps_kept_tokens(monkeypatch, tmp_path, tiny_cache, charts):
    # psr, 8 completions, 4 correct, all in the first of two micro-batches: TRL's bnpo divides that one by its own
    # tokens and counts the empty one as a full micro-batch (loss -0.5, half the gradient).
    identity_shuffle(monkeypatch)
    trainer = make_trainer(tmp_path, tiny_cache, charts, "psr", [by_position([1.0] * 4 + [0.0] * 4)], verifier=0,
                           steps=1, settings={"loss_type": "bnpo", "per_device_train_batch_size": 4,
                                              "gradient_accumulation_steps": 2})
    start = lora_state(trainer)
    trainer.train()
    first, second = trainer.micro
    assert bool((first["mask"].sum(1) > 0).all()) and float(second["mask"].sum()) == 0
    assert trainer.state.log_history[0]["loss"] == pytest.approx(-1.0, abs=1e-6)
    assert (first["ran"], second["ran"]) == (4, 1)  # the empty micro-batch runs one row, with an empty mask
    by_hand, expected = kept_only_gradient(trainer, start, trainer.micro)
    assert by_hand == pytest.approx(-1.0, abs=1e-6)
    got = trainer.grads[-1]  # accumulated over both micro-batches, before clipping
    assert max(float((g - e).abs().max()) for g, e in zip(got, expected)) < 1e-6
    assert max(float(e.abs().max()) for e in expected) > 1e-4  # a gradient that is there to compare


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo"])
def test_several_steps_per_rollout_are_normalised_as_the_readme_says(loss_type, monkeypatch, tmp_path, tiny_cache,
                                                                     charts):
    # steps_per_generation S = 2, accumulation G = 1: one rollout of 8 makes two steps of 4 rows. psr keeps rows
    # 0, 1, 2 (first step) and 4 (second step): K = 4 kept completions, T kept tokens. Each step's loss is
    # (S / G) * sum over its kept tokens of l / T (dapo, bnpo), or (S / G) * sum over its kept rows of mean_t l / K
    # (grpo), with l = -min(r * A, clip(r, 0.8, 1.2) * A), A = 1.
    identity_shuffle(monkeypatch)
    trainer = make_trainer(tmp_path, tiny_cache, charts, "psr", [by_position([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0])],
                           verifier=0, steps=2, settings={"loss_type": loss_type, "steps_per_generation": 2,
                                                          "per_device_train_batch_size": 4, "learning_rate": 0.05})
    trainer.train()
    assert len(trainer.generated) == 1 and len(trainer.micro) == 2
    kept_rows = [int((m["mask"].sum(1) > 0).sum()) for m in trainer.micro]
    assert kept_rows == [3, 1] and [m["ran"] for m in trainer.micro] == [3, 1]
    assert (False, 4) in trainer.forwards and (False, 8) not in trainer.forwards  # old log-probs: kept rows only
    tokens = trainer.num_items[0]
    history = [h for h in trainer.state.log_history if "loss" in h]
    for h, m in zip(history, trainer.micro):
        ratio, mask = m["ratio"], m["mask"]
        per_token = -torch.min(ratio, ratio.clamp(0.8, 1.2))
        if loss_type == "grpo":
            rows = mask.sum(1) > 0
            by_hand = 2 * float(((per_token * mask).sum(1)[rows] / mask.sum(1)[rows]).sum()) / 4
        else:
            by_hand = 2 * float((per_token * mask).sum()) / tokens
        assert h["loss"] == pytest.approx(by_hand, abs=1e-5)
    first_tokens = float(trainer.micro[0]["mask"].sum())
    assert history[0]["loss"] == pytest.approx(-1.5 if loss_type == "grpo" else -2 * first_tokens / tokens, abs=1e-5)
    assert (trainer.micro[1]["ratio"][trainer.micro[1]["mask"].bool()] - 1).abs().max() > 1e-3  # off-policy


@pytest.mark.parametrize("spg,gas", [(1, 2), (3, 2)])
def test_optimizer_steps_that_span_rollouts_are_refused(spg, gas, tmp_path):
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4, use_cpu=True,
                      steps_per_generation=spg, gradient_accumulation_steps=gas, report_to=[])
    with pytest.raises(ConfigError, match=f"^steps_per_generation={spg} is not valid with gradient_accumulation_steps="
                                          f"{gas}; it must be a multiple of it"):
        ModeTrainer(model=None, reward_funcs=[always(1.0)], args=args, mode="psr")
