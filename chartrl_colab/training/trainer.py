"""``ModeTrainer``: TRL's ``GRPOTrainer`` with the four objectives of :mod:`chartrl_colab.training.objectives`.

Three hooks, no copy of TRL's loop:

1. ``_calculate_rewards``: keep the reward matrix, gathered over all processes.
2. After ``_generate_and_score_completions``: the objective's advantages replace TRL's (computed on the
   gathered rewards, sliced to this process as TRL slices). When some sample is dropped (psr/nsr's other
   class, a sample the verifier could not score) the selection joins TRL's loss mask (``completion_mask *
   tool_mask``), ``num_items_in_batch`` is recounted and the kept count travels with the batch, so each
   slice TRL cuts it into (per optimizer step and iteration) carries its rows' advantages and mask.
3. After ``_compute_loss``: the loss types that average per completion (``grpo``, ``dr_grpo``, ``sapo``,
   ``luspo``) are rescaled from TRL's count of rows to the kept ones (``dapo`` reads the recounted
   ``num_items_in_batch``; ``bnpo`` is computed as ``dapo`` when a sample is dropped); a micro-batch whose
   mask is empty logs no entropy or clip ratio instead of TRL's 0.

The loss of one optimizer step. A rollout (generation batch) holds K kept completions with T kept tokens
over all processes; TRL splits it into ``steps_per_generation`` (S) slices, ``gradient_accumulation_steps``
(G) of which make one optimizer step, so a rollout makes S / G steps (S must be a multiple of G:
:func:`check_step_layout`). With l_it the clipped surrogate of token t of completion i, the step's loss is::

    token losses (dapo, bnpo):      L = (S / G) * sum_{i kept in the step} sum_t l_it / T
    per completion (grpo, dr_grpo): L = (S / G) * sum_{i kept in the step} mean_t l_it / K   (dr_grpo: sum_t / L_max)

i.e. each step is normalised as if the rollout's kept samples were spread evenly over its S / G steps
(K G / S completions each): the step's gradient is an unbiased estimate, over TRL's shuffle, of the
rollout's kept-only mean gradient. With S = G (the default) it is exactly the kept-only mean of the step.

Only kept rows are paid for: the policy's forward, and the no-grad one for old log-probs (S > G or
``num_iterations`` > 1), run on the rows with tokens in the loss mask, padded with dropped rows to the most
any process keeps, so collectives (ZeRO-3's parameter gathers, TRL's metric gathers) match up.

In ``grpo`` mode with every sample kept, TRL's loss is unchanged. Works with any model, reward functions and
data set that ``GRPOTrainer`` accepts, text-only included.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import RepeatSampler, split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from chartrl_colab.config import MODES
from chartrl_colab.errors import ConfigError
from chartrl_colab.training.objectives import Advantages, compute_advantages

# Metrics TRL computes in `_compute_loss` as means over the loss mask: meaningless when it is empty.
_MASKED_METRICS = ("entropy", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean")
# TRL loss types that divide by the number of completions in the micro-batch (times max_completion_length for
# dr_grpo) rather than by the tokens in the loss mask: dropped completions would stay in that count.
_PER_COMPLETION_LOSSES = ("grpo", "dr_grpo", "sapo", "luspo")


def check_step_layout(args) -> None:
    """Refuse (ConfigError) a ``GRPOConfig`` whose optimizer steps span rollouts: the kept samples are
    normalised per rollout, so such a step would weigh a lone kept sample of a sparse rollout several times."""
    spg, gas = getattr(args, "steps_per_generation", None), getattr(args, "gradient_accumulation_steps", 1)
    if spg is not None and spg % gas != 0:
        raise ConfigError(f"steps_per_generation={spg} is not valid with gradient_accumulation_steps={gas}; it must "
                          f"be a multiple of it ({gas}, {2 * gas}, ...), so that no optimizer step spans two rollouts")


def select_rows(batch: dict, index: torch.Tensor, rows: int) -> dict:
    """The rows ``index`` (sorted, 1-D) of a TRL batch of ``rows`` samples: per-sample tensors and lists,
    pixel values and image grids (split per sample by TRL and merged back); scalars pass."""
    split = split_pixel_values_by_grid(batch)
    out = {}
    for key, value in split.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
            out[key] = value[index.to(value.device)]
        elif isinstance(value, list) and len(value) == rows:
            out[key] = [value[i] for i in index.tolist()]
        else:
            out[key] = value
    return unsplit_pixel_values_by_grid(out)


def resolve_verifier(verifier: int | str | None, names: list[str]) -> int:
    """Index of the verifier among the reward functions ``names``, given its index, name or registry key;
    ``None``: the accuracy reward, else the only reward (ValueError when neither exists).

    >>> resolve_verifier("accuracy", ["format_reward", "accuracy_reward"])
    1
    """
    if verifier is None:
        if "accuracy_reward" in names:
            return names.index("accuracy_reward")
        if len(names) == 1:
            return 0
        raise ValueError(f"verifier is not set and there is no accuracy_reward; name the reward that judges "
                         f"correctness, one of: {', '.join(names)}")
    if isinstance(verifier, int) and not isinstance(verifier, bool):
        if 0 <= verifier < len(names):
            return verifier
    elif verifier in names:
        return names.index(verifier)
    elif f"{verifier}_reward" in names:
        return names.index(f"{verifier}_reward")
    raise ValueError(f"verifier={verifier!r} is not a reward function of this trainer; choose one of: "
                     f"{', '.join(names)} (or an index below {len(names)})")


class EpochRepeatSampler(RepeatSampler):
    """TRL's ``RepeatSampler`` whose order depends only on (seed, epoch), so a resumed run sees the same data.

    TRL's one generator advances epoch after epoch, so a restarted process would replay epoch 0's order; here
    ``set_epoch(e)`` (the Trainer calls it at every epoch start) replays the generator to epoch ``e``.
    """

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            self.generator = torch.Generator()
            if self.seed is not None:
                self.generator.manual_seed(self.seed)
            for _ in range(self.epoch):
                torch.randperm(self.num_samples, generator=self.generator)
        return super().__iter__()


class ModeTrainer(GRPOTrainer):
    """``GRPOTrainer`` plus ``mode``, ``reward_threshold``, ``lambda_psr`` and ``verifier`` (the reward judging
    correctness, :func:`resolve_verifier`); ``print_mode_lines`` prints one line per generation step."""

    def __init__(
        self,
        *args,
        mode: str = "grpo",
        reward_threshold: float = 0.5,
        lambda_psr: float = 0.1,
        verifier: int | str | None = None,
        print_mode_lines: bool = True,
        **kwargs,
    ):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not valid; choose one of: {', '.join(MODES)}")
        if not math.isfinite(reward_threshold):
            raise ValueError(f"reward_threshold={reward_threshold!r} is not valid; it must be a finite number")
        if not lambda_psr >= 0:
            raise ValueError(f"lambda_psr={lambda_psr!r} is not valid; it must be >= 0")
        check_step_layout(kwargs["args"] if "args" in kwargs else args[2] if len(args) > 2 else None)
        super().__init__(*args, **kwargs)
        if self.loss_type in _PER_COMPLETION_LOSSES and (self._entropy_bonus_enabled or self.aux_loss_enabled):
            raise ValueError(f"loss_type={self.loss_type!r} with an entropy bonus or a router aux loss is not "
                             f"supported (the kept completions' rescale would scale them too); use 'dapo' or 'bnpo'")
        self.mode = mode
        self.reward_threshold = float(reward_threshold)
        self.lambda_psr = float(lambda_psr)
        self.verifier_index = resolve_verifier(verifier, self.reward_func_names)
        self.print_mode_lines = print_mode_lines
        self._gathered_rewards: torch.Tensor | None = None
        self._defer_old_logps = False  # set while TRL's generation runs: its old log-probs wait for the objective
        self._deferred_forward: tuple | None = None

    def log(self, logs: dict, start_time: float | None = None) -> None:
        # A metric with no value (entropy over no kept token) is left out, not logged as None.
        metrics = self._metrics["train" if self.model.training else "eval"]
        for key in [k for k, values in metrics.items() if all(math.isnan(v) for v in values)]:
            del metrics[key]
        super().log(logs, start_time)

    def _get_train_sampler(self, dataset=None):
        s = super()._get_train_sampler(dataset)
        return EpochRepeatSampler(s.data_source, s.mini_repeat_count, s.batch_size, s.repeat_count, s.shuffle, s.seed)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards = rewards  # all processes' rewards: the objective needs whole groups
        return rewards

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, **kwargs):
        if self._defer_old_logps and not compute_entropy:
            # TRL's forward for old log-probs, before the rewards are known: run it on the kept rows later.
            self._defer_old_logps = False
            self._deferred_forward = (model, input_ids, attention_mask, logits_to_keep, batch_size, kwargs)
            return torch.zeros(input_ids.shape[0], logits_to_keep, device=input_ids.device), None, None
        return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                          batch_size=batch_size, compute_entropy=compute_entropy,
                                                          **kwargs)

    def _rows_to_run(self, mask: torch.Tensor) -> torch.Tensor | None:
        """Rows with tokens in ``mask`` (B, T), padded with empty ones to the most any process has (at least
        one); ``None``: all of them. A collective: every process calls it at the same point."""
        has = mask.sum(1) > 0
        count = int(has.sum())
        most = max(int(self.accelerator.gather(torch.tensor([count], device=mask.device)).max()), 1)
        if most >= mask.shape[0]:
            return None
        padding = (~has).nonzero().flatten()[: most - count]
        return torch.cat([has.nonzero().flatten(), padding]).sort().values

    def _deferred_old_logps(self, mask: torch.Tensor) -> torch.Tensor:
        """The old log-probs TRL asked for during generation, (B, T), computed on the rows kept by ``mask``
        only; the others get 0."""
        model, input_ids, attention_mask, logits_to_keep, batch_size, kwargs = self._deferred_forward
        self._deferred_forward = None
        rows = input_ids.shape[0]
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 **{k: v for k, v in kwargs.items() if v is not None}}
        index = self._rows_to_run(mask)
        if index is not None:
            batch = select_rows(batch, index, rows)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                model, batch.pop("input_ids"), batch.pop("attention_mask"), logits_to_keep, batch_size=batch_size,
                **batch)
        if index is None:
            return logps
        old = logps.new_zeros(rows, logits_to_keep)
        old[index.to(old.device)] = logps
        return old

    def _generate_and_score_completions(self, inputs):
        # Old log-probs can wait for the objective unless something at generation time reads them (vLLM's
        # importance sampling, the KL's reference forward).
        generate_every = self.args.steps_per_generation * self.num_iterations
        self._defer_old_logps = (self.args.gradient_accumulation_steps % generate_every != 0 and self.beta == 0.0
                                 and not (self.use_vllm and self.vllm_importance_sampling_correction))
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._defer_old_logps = False
        split = "train" if self.model.training else "eval"
        rewards = self._gathered_rewards
        objective = compute_advantages(
            rewards,
            mode=self.mode,
            verifier=self.verifier_index,
            reward_threshold=self.reward_threshold,
            lambda_psr=self.lambda_psr,
            num_generations=self.num_generations if split == "train" else self.num_generations_eval,
            reward_weights=self.reward_weights,
            scale_rewards=self.scale_rewards,
        )
        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))
        # grpo: ours equal TRL's sum-then-normalise advantages, except for a row that only zero-weight rewards
        # scored (TRL counts it as reward 0); TRL's other aggregation is left as it is.
        if self.mode != "grpo" or self.multi_objective_aggregation == "sum_then_normalize":
            output["advantages"] = objective.advantages[local].to(output["advantages"])
            logged = self._logs["advantages"]  # the completions table shows TRL's; show ours instead
            for _ in range(min(objective.advantages.numel(), len(logged))):
                logged.pop()
            logged.extend(objective.advantages.tolist())
        if not bool(objective.keep.all()):  # the same decision on every process: keep covers them all
            keep = objective.keep[local].to(output["completion_mask"]).unsqueeze(1)
            tool_mask = output.get("tool_mask")
            output["tool_mask"] = keep.expand_as(output["completion_mask"]) if tool_mask is None else tool_mask * keep
            loss_mask = output["completion_mask"] * output["tool_mask"]
            output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
            # A scalar: TRL's shuffle and split hand it unchanged to every slice of the generation batch.
            output["num_kept_completions"] = objective.keep.sum().to(output["advantages"])
        if self._deferred_forward is not None:
            mask = output["completion_mask"] * output.get("tool_mask", 1)
            output["old_per_token_logps"] = self._deferred_old_logps(mask)
        self._record(split, objective, rewards)
        return output

    def _record(self, split: str, objective: Advantages, rewards: torch.Tensor) -> None:
        """Log the counts of correct and incorrect samples; print the step's line (README: Training)."""
        n = objective.advantages.numel()
        pos, neg = int(objective.correct.sum()), int(objective.incorrect.sum())
        metrics = self._metrics[split]
        metrics["mode/num_positive"].append(float(pos))
        metrics["mode/num_negative"].append(float(neg))
        metrics["mode/positive_fraction"].append(pos / n)
        if self.print_mode_lines and split == "train" and self.accelerator.is_main_process:
            counts = {"psr": f"{pos}/{n} positive samples", "nsr": f"{neg}/{n} negative samples",
                      "w-reinforce": f"{pos} pos (λ={self.lambda_psr:g}) + {neg} neg (λ=1.0)",
                      "grpo": f"{pos}/{n} correct samples"}[self.mode]
            avg = float(torch.nanmean(rewards[:, self.verifier_index]))  # unscored samples have no reward
            # the optimizer step this rollout feeds (global_step counts those done), as the plots number it
            tqdm.write(f"{self.mode.upper()} [Step {self.state.global_step + 1}]: {counts} | Avg reward: {avg:.3f} "
                       f"| Avg advantage: {float(objective.advantages.float().mean()):.3f}")

    def _kept_rescale(self, inputs, split: str) -> float:
        """Factor taking TRL's per-completion loss from its count of rows (``rows * gradient_accumulation_steps``
        per micro-batch) to the kept completions spread evenly over the rollout's steps, as ``dapo`` spreads its
        tokens: ``kept / num_processes * gradient_accumulation_steps / steps_per_generation``."""
        kept = inputs.get("num_kept_completions")
        if kept is None or self.loss_type not in _PER_COMPLETION_LOSSES:
            return 1.0
        rows = inputs["advantages"].shape[0] * self.accelerator.num_processes
        if split == "train":
            rows *= self.args.steps_per_generation
        return rows / max(float(kept), 1.0)

    def _compute_loss(self, model, inputs):
        split = "train" if self.model.training else "eval"
        metrics = self._metrics[split]
        # .get: indexing the defaultdict would create keys TRL never fills (kl with beta=0) and log them as None.
        before = {key: len(metrics.get(key, ())) for key in _MASKED_METRICS}
        mask = inputs["completion_mask"] * inputs["tool_mask"] if "tool_mask" in inputs else inputs["completion_mask"]
        loss_type = self.loss_type
        if "num_kept_completions" in inputs:  # some sample is dropped: pay only for the kept ones
            index = self._rows_to_run(mask)
            if index is not None:
                inputs = select_rows(inputs, index, mask.shape[0])
            if loss_type == "bnpo":  # TRL's bnpo counts a micro-batch (or process) with no kept token as a full one
                self.loss_type = "dapo"
        try:
            loss = super()._compute_loss(model, inputs) * self._kept_rescale(inputs, split)
        finally:
            self.loss_type = loss_type
        # TRL's token means are over this micro-batch's mask on every process together (a collective, as TRL's).
        if float(self.accelerator.reduce(mask.sum().float(), reduction="sum")) == 0:
            # An empty mask (psr with no correct completion): token means over it would log a false 0.
            for key, count in before.items():
                if key in metrics:
                    metrics[key][count:] = [float("nan")] * (len(metrics[key]) - count)
        return loss
