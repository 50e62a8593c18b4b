"""One rank of a 2-process CPU run (launched by tests/test_distributed.py with torchrun).

Each rank writes what its loss used: the gathered rewards, its local advantages and loss-mask rows.
"""

import json
import os
import sys


def parity_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 2 == 0) for c in completions]


def run(out_dir: str, mode: str) -> None:
    import torch
    from trl import GRPOConfig

    from chartrl_colab.data.loading import load_chart_dataset
    from chartrl_colab.models.loading import add_lora, load_model_and_processor
    from chartrl_colab.training.trainer import ModeTrainer

    class Recorder(ModeTrainer):
        records = []

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            mask = out["completion_mask"] * out.get("tool_mask", torch.ones_like(out["completion_mask"]))
            self.records.append({"rank": self.accelerator.process_index, "local": len(inputs),
                                 "rewards": self._gathered_rewards.tolist(), "advantages": out["advantages"].tolist(),
                                 "kept": (mask.sum(1) > 0).tolist(), "nonempty": (out["completion_mask"].sum(1) > 0).tolist(),
                                 "num_items": float(out["num_items_in_batch"]), "local_items": float(mask.sum())})
            return out

    model, processor = load_model_and_processor("tiny", cache_dir=os.environ["TINY_CACHE"], seed=0)
    model = add_lora(model, r=4, alpha=8, dropout=0.0, gradient_checkpointing=False)
    args = GRPOConfig(output_dir=out_dir, per_device_train_batch_size=4, num_generations=4, max_completion_length=12,
                      max_steps=2, report_to=[], use_cpu=True, save_strategy="no", seed=1, remove_unused_columns=False)
    trainer = Recorder(model=model, processing_class=processor, reward_funcs=[parity_reward], args=args,
                       train_dataset=load_chart_dataset("synthetic", subset_size=8, seed=3), mode=mode,
                       verifier="parity_reward", print_mode_lines=False)
    trainer.train()
    with open(os.path.join(out_dir, f"rank{trainer.accelerator.process_index}.json"), "w") as f:
        json.dump(Recorder.records, f)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
