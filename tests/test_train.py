"""The training command end to end, as a user runs it (a subprocess on the embedded default)."""

import json
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("mode,line", [
    ("psr", r"PSR \[Step 1\]: \d+/8 positive samples \| Avg reward: \d\.\d{3} \| Avg advantage: \d\.\d{3}"),
    ("w-reinforce", r"W-REINFORCE \[Step 1\]: \d+ pos \(λ=0\.2\) \+ \d+ neg \(λ=1\.0\) \| Avg reward: \d\.\d{3} "
                    r"\| Avg advantage: -?\d\.\d{3}"),
])
def test_train_command_writes_a_run_directory(mode, line, tmp_path):
    cmd = [sys.executable, "-m", "chartrl_colab.train", "--mode", mode, "--vlm-name", "tiny", "--dataset-name",
           "synthetic", "--seed", "2025", "--subset-size", "8", "--num-epochs", "1", "--num-generations", "4",
           "--batch-size", "2", "--reward-threshold", "0.5", "--lambda-psr", "0.2", "--max-steps", "2",
           "--max-completion-length", "16", "--logging-steps", "1", "--save-steps", "1",
           "--output-root", str(tmp_path), "--disable-gradient-checkpointing"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"{mode.upper()} TRAINING CONFIGURATION:" in out
    assert re.search(r"trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d", out)
    assert re.search(line, out), out[-3000:]

    run = tmp_path / f"{mode}-tiny-synthetic-8-2025"
    config = json.loads((run / "run.json").read_text())["config"]
    assert (config["grpo_rewards"], config["learning_rate"]) == ("verifier", 1e-5)  # the defaults, resolved
    state = json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    for key in ("mode/num_positive", "mode/num_negative", "mode/positive_fraction", "reward",
                "rewards/accuracy_reward/mean", "loss", "grad_norm", "learning_rate"):
        assert key in logged[0], key
    kept = {"psr": logged[0]["mode/num_positive"], "nsr": logged[0]["mode/num_negative"]}.get(mode, 8)
    assert ("entropy" in logged[0]) == (kept > 0)  # a mean over no kept token is not logged (neither 0 nor None)
    assert "kl" not in logged[0]  # beta=0: no KL term, so none is logged
    assert logged[0]["mode/num_positive"] + logged[0]["mode/num_negative"] == 8
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/mode/num_positive", "train/mode/num_negative", "train/mode/positive_fraction",
            "train/loss", "train/reward"} <= tags, tags
    assert [e.value for e in events.Scalars("train/mode/num_negative")] == [
        e["mode/num_negative"] for e in logged]
    assert (run / "adapter_model.safetensors").exists() and (run / "checkpoint-1").is_dir()


def test_text_only_model_trains_with_mode_trainer(tmp_path):
    """ModeTrainer is not tied to images: a text-only causal LM and plain prompts work too."""
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig

    from chartrl_colab.training.trainer import ModeTrainer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(["what is two plus two? four"] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def odd_length(completions, **kwargs):
        return [float(len(c) % 2) for c in completions]

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=8, max_steps=2, report_to=[], use_cpu=True, save_strategy="no",
                      learning_rate=1e-3)
    trainer = ModeTrainer(model=model, processing_class=tok, reward_funcs=[odd_length], args=args,
                          train_dataset=Dataset.from_dict({"prompt": ["what is two plus two?"] * 8}),
                          mode="nsr", verifier="odd_length", print_mode_lines=False)
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert trainer.state.log_history[-1]["train_loss"] > 0  # nsr: -(-1) * ratio over the negatives


@pytest.mark.slow
def test_same_run_name_resumes_from_its_newest_checkpoint(tmp_path):
    base = [sys.executable, "-m", "chartrl_colab.train", "--mode", "nsr", "--subset-size", "8",
            "--num-generations", "4", "--batch-size", "2", "--max-completion-length", "8", "--logging-steps", "1",
            "--save-steps", "1", "--rewards", "format", "accuracy", "--output-root", str(tmp_path)]
    first = subprocess.run(base + ["--max-steps", "2"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and "starting fresh" in first.stdout, first.stderr[-2000:]
    second = subprocess.run(base + ["--max-steps", "3"], capture_output=True, text=True, timeout=600)
    run = tmp_path / "nsr-tiny-synthetic-8-2025"
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"Resuming from {run / 'checkpoint-2'}" in second.stdout
    state = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3]
