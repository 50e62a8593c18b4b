"""One rank of a 2-process CPU run (launched by tests/test_distributed.py with torchrun).

Each rank writes what its loss used: the gathered rewards, its local advantages and loss-mask rows. Scenario
``sparse`` (psr, bnpo, two steps per rollout, TRL's shuffle fixed): rank 0 has one correct completion, rank 1
none, so rank 1 runs its forwards on a row with an empty mask; each rank also writes the rows of every forward
and the logged losses.
"""

import json
import os
import sys


def parity_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 2 == 0) for c in completions]


def sparse_reward(completions, **kwargs):
    """Correct: the first completion of rank 0's generation batch, nothing else."""
    rank = int(os.environ["RANK"])
    return [float(rank == 0 and i == 0) for i in range(len(completions))]


def run(out_dir: str, mode: str, scenario: str = "plain") -> None:
    import torch
    import trl.trainer.grpo_trainer as trl_grpo
    from trl import GRPOConfig

    from chartrl_colab.data.loading import load_chart_dataset
    from chartrl_colab.models.loading import add_lora, load_model_and_processor
    from chartrl_colab.training.trainer import ModeTrainer

    class Recorder(ModeTrainer):
        records = []
        forwards = []

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            mask = out["completion_mask"] * out.get("tool_mask", torch.ones_like(out["completion_mask"]))
            self.records.append({"rank": self.accelerator.process_index, "local": len(inputs),
                                 "rewards": self._gathered_rewards.tolist(), "advantages": out["advantages"].tolist(),
                                 "kept": (mask.sum(1) > 0).tolist(),
                                 "nonempty": (out["completion_mask"].sum(1) > 0).tolist(),
                                 "num_items": float(out["num_items_in_batch"]), "local_items": float(mask.sum())})
            return out

        def _get_per_token_logps_and_entropies(self, model, input_ids, *args, compute_entropy=False, **kwargs):
            stand_in = self._defer_old_logps and not compute_entropy  # deferred by ModeTrainer: no forward
            result = super()._get_per_token_logps_and_entropies(model, input_ids, *args,
                                                                compute_entropy=compute_entropy, **kwargs)
            if not stand_in:
                self.forwards.append([compute_entropy, input_ids.shape[0]])
            return result

    settings, reward = {}, parity_reward
    if scenario == "sparse":
        trl_grpo.shuffle_sequence_dict = lambda batch: batch  # rows stay in order: rank 0's kept row in step 1
        settings, reward = {"loss_type": "bnpo", "steps_per_generation": 2, "logging_steps": 1}, sparse_reward
    model, processor = load_model_and_processor("tiny", cache_dir=os.environ["TINY_CACHE"], seed=0)
    model = add_lora(model, r=4, alpha=8, dropout=0.0, gradient_checkpointing=False)
    args = GRPOConfig(**{"output_dir": out_dir, "per_device_train_batch_size": 4, "num_generations": 4,
                         "max_completion_length": 12, "max_steps": 2, "report_to": [], "use_cpu": True,
                         "save_strategy": "no", "seed": 1, "remove_unused_columns": False, **settings})
    trainer = Recorder(model=model, processing_class=processor, reward_funcs=[reward], args=args,
                       train_dataset=load_chart_dataset("synthetic", subset_size=8, seed=3), mode=mode,
                       verifier=reward.__name__, print_mode_lines=False)
    trainer.train()
    rank = trainer.accelerator.process_index
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(Recorder.records, f)
    with open(os.path.join(out_dir, f"rank{rank}-{scenario}.json"), "w") as f:
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        json.dump({"forwards": Recorder.forwards, "losses": losses}, f)


if __name__ == "__main__":
    run(*sys.argv[1:])
