"""Sample generation on the embedded default: file schema, rescoring, training-identical prompts, resume."""

import json
import math
import shutil

import pytest
import torch

from chartrl_colab import generate as gen
from chartrl_colab.data.loading import load_chart_dataset
from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation.samples import read_rows
from chartrl_colab.generate import GenerateConfig, generate_samples
from chartrl_colab.models import samplers
from chartrl_colab.models.samplers import TransformersSampler
from chartrl_colab.models.source import resolve_source
from chartrl_colab.rewards.presets import get_reward_funcs

SEED = 7
QUESTIONS = 4
N = 6
ROW_KEYS = {"id", "question", "answer", "chart_type", "table", "reasoning", "completions", "num_tokens", "truncated",
            "entropy", "rewards", "correct", "n", "num_correct", "generation"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model's matrices are a few dozen wide: on a shared 2-core machine thread hand-offs cost more
    # than the arithmetic.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rows():
    return [dict(r) for r in load_chart_dataset("synthetic", split="test", subset_size=QUESTIONS, seed=SEED)]


def config(path, **overrides):
    settings = dict(vlm_name="tiny", dataset_name="synthetic", split="test", subset_size=QUESTIONS, num_samples=N,
                    max_new_tokens=12, batch_size=N, seed=SEED, output=str(path))
    settings.update(overrides)
    return GenerateConfig(**settings)


def canned(row: dict) -> str:
    """A completion in the answer format, carrying this row's gold fields."""
    return (f"<think><type>{row['chart_type']}</type><table>{row['table']}</table> {row['reasoning']}</think>"
            f"<answer>{row['answer']}</answer>")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, rows):
    """A samples file where completion j of every question is the gold completion of question j (j < 4): each
    question then has one right answer, three well-formed wrong ones and two of the model's own samples."""
    texts = [canned(r) for r in rows]
    original = TransformersSampler.sample

    def sample(self, prompts, per_prompt, seed):
        out = original(self, prompts, per_prompt, seed)
        for ids in out:
            for j, text in enumerate(texts[:per_prompt]):
                ids[j] = self.tokenizer.encode(text, add_special_tokens=False) + [self.eos_token_ids[0]]
        return out

    path = tmp_path_factory.mktemp("scored") / "samples.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TransformersSampler, "sample", sample)
        generate_samples(config(path, batch_size=2 * N))  # two questions per generate call
    return path, texts


def test_file_schema(scored, rows):
    path, texts = scored
    lines = path.read_text().splitlines()
    got = [json.loads(line) for line in lines]
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for row, gold in zip(got, rows):
        assert set(row) == ROW_KEYS
        assert row["question"] == gold["prompt"][-1]["content"]
        assert (row["answer"], row["chart_type"], row["table"], row["reasoning"]) == (
            gold["answer"], gold["chart_type"], gold["table"], gold["reasoning"])
        assert row["n"] == N and len(row["completions"]) == N and len(row["correct"]) == N
        assert all(isinstance(c, str) for c in row["completions"])
        assert row["completions"][:4] == texts  # decoded without the EOS token, as TRL decodes
        assert set(row["rewards"]) == {"format", "accuracy", "length", "tags", "chart_type", "table", "reasoning"}
        assert all(len(v) == N for v in row["rewards"].values())
        assert row["num_correct"] == sum(row["correct"])
        assert row["truncated"][:4] == [False] * 4
        for tokens, truncated in zip(row["num_tokens"][4:], row["truncated"][4:]):
            assert 1 <= tokens <= 12
            assert not truncated or tokens == 12  # cut by the length limit, not by an EOS
        generation = row["generation"]
        assert generation["num_samples"] == N and generation["seed"] == SEED and generation["temperature"] == 1.0
        assert generation["checkpoint"] is None and generation["vlm_name"] == "tiny"
        assert generation["verifier"] == "accuracy" and generation["reward_threshold"] == 0.5


def test_rewards_equal_the_reward_functions_applied_again(scored, rows):
    path, _ = scored
    names = ["format", "accuracy", "length", "tags", "chart_type", "table", "reasoning"]
    all_correct = []
    for row, gold in zip(read_rows(path), rows):
        completions = [[{"role": "assistant", "content": text}] for text in row["completions"]]
        golds = {key: [gold[key]] * N for key in ("answer", "chart_type", "table", "reasoning")}
        for name, func in zip(names, get_reward_funcs(names, "package")):  # synthetic data: the package preset
            again = func(completions, **golds)
            assert row["rewards"][name] == pytest.approx(again, abs=1e-6), name
        assert row["correct"] == [r is not None and r >= 0.5 for r in row["rewards"]["accuracy"]]
        all_correct += row["correct"]
        assert row["rewards"]["format"][:4] == [2.0] * 4
    # Each question's own gold completion is right; the test would mean little if every sample scored the same.
    assert all(row["correct"][i] for i, row in enumerate(read_rows(path)))
    assert 0 < sum(all_correct) < len(all_correct)


def test_prompts_and_sampling_settings_are_the_training_ones(tmp_path, monkeypatch):
    """One real training step: the prompt token ids TRL generates from equal the ones generate builds."""
    from chartrl_colab.config import RunConfig
    from chartrl_colab.models.loading import load_model_and_processor
    from chartrl_colab.train import train
    from chartrl_colab.training.trainer import ModeTrainer

    seen = {}
    original = ModeTrainer._generate_single_turn

    def capture(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        seen["ids"] = [list(ids) for ids in prompt_ids]
        seen["grid"] = multimodal_fields["image_grid_thw"].tolist()
        seen["pixels"] = multimodal_fields["pixel_values"]
        seen["generation_config"] = self.generation_config
        return original(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs)

    monkeypatch.setattr(ModeTrainer, "_generate_single_turn", capture)
    run = RunConfig(mode="grpo", subset_size=2, num_generations=2, batch_size=2, max_steps=1, seed=SEED,
                    max_completion_length=9, temperature=0.7, output_root=str(tmp_path), report_to=("none",),
                    save_steps=100)
    train(run)

    data = [dict(r) for r in load_chart_dataset("synthetic", split="train", subset_size=2, seed=SEED)]
    model, processor = load_model_and_processor("tiny", seed=SEED)
    sampler = TransformersSampler(model, processor, config(tmp_path / "x.jsonl", max_new_tokens=9, temperature=0.7))
    ids, fields = sampler.tokenize(gen.build_prompts(data))
    # TRL repeats each prompt num_generations (2) times in its batch.
    assert sorted(map(tuple, ids)) == sorted(set(map(tuple, seen["ids"]))) and len(seen["ids"]) == 2 * len(ids)
    assert sorted(fields["image_grid_thw"].tolist() * 2) == sorted(seen["grid"])

    def images(pixels, grid):  # one block of patch rows per image
        sizes = [int(torch.tensor(g).prod()) for g in grid]
        return {block.numpy().tobytes() for block in torch.split(pixels, sizes)}

    assert images(fields["pixel_values"], fields["image_grid_thw"].tolist()) == images(seen["pixels"], seen["grid"])
    trained = seen["generation_config"]
    ours = sampler.kwargs
    for key in ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                "pad_token_id", "bos_token_id", "suppress_tokens"):
        assert getattr(trained, key) == ours[key], key
    assert list(trained.eos_token_id) == ours["eos_token_id"]


def test_resume_after_an_interruption_gives_the_uninterrupted_file(tmp_path, monkeypatch):
    # batch_size < n: each question takes two generate calls, and the run dies in the third.
    reference = generate_samples(config(tmp_path / "whole.jsonl", subset_size=3, num_samples=4, batch_size=2))
    path = tmp_path / "cut.jsonl"
    calls = {"n": 0}
    original = TransformersSampler.sample

    def dies(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(TransformersSampler, "sample", dies)
    with pytest.raises(KeyboardInterrupt):
        generate_samples(config(path, subset_size=3, num_samples=4, batch_size=2))
    monkeypatch.setattr(TransformersSampler, "sample", original)
    assert len(read_rows(path)) == 1
    with path.open("a") as f:  # and a write cut short by a dead runtime
        f.write('{"id": "synthetic/test/7/1", "completions": ["<thi')

    generate_samples(config(path, subset_size=3, num_samples=4, batch_size=2))
    assert path.read_text() == reference.read_text()

    # A finished file is left alone; the model is not even loaded.
    monkeypatch.setattr(samplers, "load_for_generation", lambda *a: pytest.fail("loaded a model for a finished file"))
    generate_samples(config(path, subset_size=3, num_samples=4, batch_size=2))
    assert path.read_text() == reference.read_text()


def test_resume_refuses_other_settings_and_damaged_files(tmp_path):
    path = generate_samples(config(tmp_path / "s.jsonl", subset_size=1, num_samples=2, max_new_tokens=4))
    with pytest.raises(ConfigError, match=r"temperature=1\.0, not 0\.5"):
        generate_samples(config(path, subset_size=2, num_samples=2, max_new_tokens=4, temperature=0.5))
    with pytest.raises(ConfigError, match=r"num_samples=2, not 3"):
        generate_samples(config(path, subset_size=2, num_samples=3, max_new_tokens=4))
    lines = path.read_text().splitlines()
    path.write_text("not json\n" + "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"line 1 is not a samples row"):
        read_rows(path)


def test_cli_writes_samples_and_reports_bad_flags(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    assert gen.main(["--vlm-name", "tiny", "--dataset-name", "synthetic", "--split", "test", "--subset-size", "2",
                     "--num-samples", "3", "--max-new-tokens", "4", "--seed", str(SEED), "--rewards", "format",
                     "accuracy", "--output", str(out)]) == 0
    got = read_rows(out)
    assert len(got) == 2 and all(r["n"] == 3 and set(r["rewards"]) == {"format", "accuracy"} for r in got)
    capsys.readouterr()
    assert gen.main(["--num-samples", "0", "--output", str(out)]) == 2
    assert "error: num_samples=0 is not valid" in capsys.readouterr().err
    assert gen.main(["--checkpoint", str(tmp_path / "nowhere"), "--output", str(out)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert gen.main(["--rewards", "format", "--verifier", "accuracy", "--output", str(out)]) == 2
    assert "verifier='accuracy' is not among the rewards" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- trained checkpoints
@pytest.fixture
def run_dir(finished_run, tmp_path):
    """The session's finished nsr run (checkpoint-1 and checkpoint-2, seed 3), copied: a test here changes it."""
    return shutil.copytree(finished_run, tmp_path / finished_run.name)


@pytest.mark.slow
def test_checkpoint_sources(run_dir, tmp_path, capsys):
    (run_dir / "checkpoint-3").mkdir()  # a newer checkpoint cut short: no trainer_state.json
    source = resolve_source(config(tmp_path / "a.jsonl", checkpoint=str(run_dir)))
    assert source.checkpoint == (run_dir / "checkpoint-2").resolve()
    assert "skipping incomplete checkpoint" in capsys.readouterr().err
    assert (source.vlm_name, source.init, source.seed) == ("tiny", "pretrained", 3)  # the run's, not --seed 7

    one = resolve_source(config(tmp_path / "b.jsonl", checkpoint=str(run_dir / "checkpoint-1")))
    assert one.checkpoint == (run_dir / "checkpoint-1").resolve() and one.seed == 3
    with pytest.raises(ConfigError, match="checkpoint-3 is incomplete"):
        resolve_source(config(tmp_path / "c.jsonl", checkpoint=str(run_dir / "checkpoint-3")))

    # run.json, when there, names the base model; without it, the adapter's base path does.
    run_json = run_dir / "run.json"
    saved = run_json.read_text() if run_json.exists() else None
    try:
        run_json.write_text(json.dumps({"config": {"vlm_name": "tiny", "init": "random", "seed": 11}}))
        assert (lambda s: (s.init, s.seed))(resolve_source(config(tmp_path / "d.jsonl", checkpoint=str(run_dir)))) \
            == ("random", 11)
        run_json.unlink()
        fallback = resolve_source(config(tmp_path / "e.jsonl", checkpoint=str(run_dir)))
        assert (fallback.vlm_name, fallback.init, fallback.seed) == ("tiny", "pretrained", 3)
    finally:
        if saved is not None:
            run_json.write_text(saved)


@pytest.mark.slow
def test_generation_from_a_run_uses_its_trained_adapter(run_dir, tmp_path):
    from chartrl_colab.models.loading import load_model_and_processor

    source = resolve_source(config(tmp_path / "a.jsonl", checkpoint=str(run_dir)))
    trained, _ = samplers.load_for_generation(source)
    base, _ = load_model_and_processor("tiny", seed=3)
    base_weights = dict(base.named_parameters())
    changed = [name for name, p in trained.named_parameters() if not torch.equal(p, base_weights[name])]
    # The merged LoRA moved exactly the language model's adapted projections; the vision tower is untouched.
    assert changed and all(".language_model.layers." in name and name.endswith("proj.weight") for name in changed)
    assert not any("visual" in name for name in changed)

    path = generate_samples(config(tmp_path / "trained.jsonl", checkpoint=str(run_dir), subset_size=2,
                                   num_samples=2, max_new_tokens=4))
    got = read_rows(path)
    assert len(got) == 2
    assert got[0]["generation"]["checkpoint"] == str(source.checkpoint)
    assert got[0]["generation"]["model_seed"] == 3 and got[0]["generation"]["seed"] == SEED
    assert all(not math.isnan(v) for r in got for v in r["rewards"]["format"])
