"""The POC, mechanics only (never the paper's effect): the sampling stage's wiring, the table, the checks, the
entropy recorded with each sample, and what the comparison prints about the runs it compares."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from chartrl_colab.colab import pipelines, poc
from chartrl_colab.config import MODES


def model_entry(label, p1, pn, entropy, n=4, questions=3):
    return {"n": n, "num_questions": questions, "pass_at_1": {"mean": p1, "ci_low": p1 / 2, "ci_high": min(1, p1 * 2)},
            "pass_at_n": {"mean": pn, "ci_low": pn / 2, "ci_high": min(1, pn * 2)}, "mean_entropy": entropy,
            "curve": {"k": list(range(1, n + 1)), "mean": [p1] * n, "ci_low": [0] * n, "ci_high": [1] * n},
            "generation": {"dataset_name": "synthetic", "split": "test", "temperature": 1.0}}


# ----------------------------------------------------------------------------------------------- the table
def test_table_has_one_row_per_model_with_the_paper_columns():
    models = {"Base": model_entry("Base", 0.25, 0.5, 1.25), "NSR": model_entry("NSR", 0.3, 0.6, None)}
    rows = poc.results_table(models)
    assert [r["model"] for r in rows] == ["Base", "NSR"]
    assert set(rows[0]) == {"model", "n", "questions", "pass_at_1", "pass_at_1_ci", "pass_at_n", "pass_at_n_ci",
                            "mean_entropy"}
    assert rows[0]["pass_at_1_ci"] == [0.125, 0.5] and rows[1]["mean_entropy"] is None

    text = poc.format_table(rows, {"models": models})
    lines = text.splitlines()
    assert lines[0].startswith("POC results on 3 held-out questions (synthetic test split), temperature 1.0")
    assert "n = 4 samples per question" in lines[0] and poc.ENTROPY_DEFINITION in lines[0]
    assert lines[2:] == ["| model | pass@1 | pass@n | mean entropy |", "|---|---|---|---|",
                         "| Base | 0.250 [0.125, 0.500] | 0.500 [0.250, 1.000] | 1.250 |",
                         "| NSR | 0.300 [0.150, 0.600] | 0.600 [0.300, 1.000] | n/a |"]


def test_table_shows_paired_differences_to_the_base_and_between_modes(tmp_path):
    models = {"Base": model_entry("Base", 0.25, 0.5, 1.0), "PSR": model_entry("PSR", 0.5, 0.75, 0.9),
              "NSR": model_entry("NSR", 0.25, 0.5, 1.1)}

    def cell(diff, low, high):
        return {"diff": diff, "ci_low": low, "ci_high": high, "significant": low > 0 or high < 0}

    diffs = [{"reference": "Base", "other": "PSR", "k": {"1": cell(0.25, 0.1, 0.4), "4": cell(0.25, -0.1, 0.5)}},
             {"reference": "Base", "other": "NSR", "k": {"1": cell(0.0, -0.1, 0.1), "4": cell(0.0, 0.0, 0.0)}},
             {"reference": "PSR", "other": "NSR", "k": {"1": cell(-0.25, -0.4, -0.1), "4": cell(-0.25, -0.5, 0.1)}}]
    (tmp_path / "metrics.json").write_text(json.dumps({"differences": diffs}))
    text = poc.format_table(poc.results_table(models), {"models": models, "metrics_json": str(tmp_path / "metrics.json")})
    lines = text.splitlines()
    assert "paired bootstrap interval], * where the interval excludes 0" in lines[0]
    assert lines[2] == "| model | pass@1 | pass@n | mean entropy | pass@1 - base | pass@n - base |"
    assert lines[4].endswith("| 1.000 | | |")  # the base itself
    assert lines[5].endswith("| +0.250 [+0.100, +0.400] * | +0.250 [-0.100, +0.500] |")
    assert lines[6].endswith("| +0.000 [-0.100, +0.100] | +0.000 [+0.000, +0.000] |")
    assert lines[-1] == "- NSR - PSR: pass@1 -0.250 [-0.400, -0.100] *; pass@4 -0.250 [-0.500, +0.100]"


# ----------------------------------------------------------------------------------------------- checks
RUN = {"global_step": 4, "checkpoint": "r/checkpoint-4", "totals": {"mode/num_positive": 0, "mode/num_negative": 32}}


def test_psr_on_the_random_base_is_expected_not_a_failure():
    lines = poc.checks({"psr": RUN, "nsr": RUN}, base="tiny")
    assert lines[0].startswith("– PSR: 4 steps") and "as expected: the base 'tiny' has random weights" in lines[0]
    assert lines[1].startswith("✓ NSR")
    # A base that can answer and still gave psr nothing: the explanatory ✗ stays.
    other = poc.checks({"psr": RUN}, base="qwen2-5-3b")[0]
    assert other.startswith("✗ PSR") and "no correct samples in any step, so nothing to learn from" in other
    # A real failure on the random base is still a ✗, the expected part said beside it.
    broken = poc.checks({"psr": {**RUN, "checkpoint": None}}, base="tiny")[0]
    assert broken.startswith("✗ PSR") and "no complete checkpoint" in broken and "as expected" in broken


# ----------------------------------------------------------------------------------------------- wiring
@pytest.fixture
def fake_stages(monkeypatch, tmp_path):
    """run_poc with training, sampling and the monitor replaced by recorders."""

    import chartrl_colab.monitor

    seen = {"trained": [], "evaluated": []}

    def train_run(cfg):
        seen["trained"].append(cfg)
        ckpt = None if cfg.mode == "psr" else f"{cfg.run_dir}/checkpoint-{cfg.max_steps}"
        return {"global_step": cfg.max_steps, "checkpoint": ckpt, "run_dir": cfg.run_dir,
                "totals": {"mode/num_positive": 1, "mode/num_negative": 1}}

    def evaluate_runs(checkpoints, labels, **kwargs):
        seen["evaluated"].append((list(checkpoints), list(labels), kwargs))
        models = {label: model_entry(label, 0.1, 0.2, 2.0) for label in ["Base", *labels]}
        return {"figures": [str(tmp_path / "passk_curves.png"), str(tmp_path / "passk_bars.png")], "models": models}

    report = SimpleNamespace(figures=[tmp_path / "loss.png"], summary_txt=tmp_path / "summary.txt",
                             summary_json=tmp_path / "summary.json", summaries={}, errors=[])
    monkeypatch.setattr(pipelines, "train_run", train_run)
    monkeypatch.setattr(pipelines, "evaluate_runs", evaluate_runs)
    monkeypatch.setattr(chartrl_colab.monitor, "monitor", lambda *a, **k: report)
    return seen


def test_run_poc_samples_the_base_and_every_checkpointed_mode_on_the_test_split(fake_stages, tmp_path, capsys):
    result = poc.run_poc(output_dir=tmp_path / "cmp", eval_samples=4, eval_questions=3,
                         output_root=str(tmp_path), max_steps=2, seed=7, max_completion_length=12, temperature=0.9)
    lines = capsys.readouterr().out.splitlines()
    assert [cfg.mode for cfg in fake_stages["trained"]] == list(MODES)
    (checkpoints, labels, kwargs), = fake_stages["evaluated"]
    assert labels == ["GRPO", "NSR", "W-REINFORCE"]  # psr saved no checkpoint: left out, and said so
    assert checkpoints == [f"{tmp_path}/{m}-tiny-synthetic-100-7/checkpoint-2" for m in ("grpo", "nsr", "w-reinforce")]
    assert kwargs["include_base"] is True and kwargs["output_dir"] == tmp_path / "cmp"
    assert (kwargs["split"], kwargs["num_samples"], kwargs["subset_size"], kwargs["seed"]) == ("test", 4, 3, 7)
    assert (kwargs["vlm_name"], kwargs["temperature"], kwargs["max_new_tokens"]) == ("tiny", 0.9, 12)
    assert any("PSR: no complete checkpoint to sample" in e for e in result["errors"])

    assert [r["model"] for r in result["table"]] == ["Base", "GRPO", "NSR", "W-REINFORCE"]
    table = tmp_path / "cmp" / poc.TABLE_MD
    assert result["table_md"] == str(table) and table.read_text() == result["table_markdown"]
    assert [p.rsplit("/", 1)[-1] for p in result["figures"]] == ["passk_curves.png", "passk_bars.png", "loss.png"]
    assert set(result["passk"]) == {"Base", "GRPO", "NSR", "W-REINFORCE"}
    headers = [line.strip() for line in lines if "STAGE" in line]
    assert [h.split(":")[0] for h in headers] == ["======== STAGE 1/3", "======== STAGE 2/3", "======== STAGE 3/3"]
    assert set(result["seconds"]) == {"train", "sample", "compare"}
    json.dumps(result, default=str)  # what the notebook writes to poc_results.json


def test_run_poc_without_sampling(fake_stages, tmp_path):
    result = poc.run_poc(modes=("nsr",), output_dir=tmp_path, eval_samples=0,
                         output_root=str(tmp_path), max_steps=1)
    assert fake_stages["evaluated"] == [] and result["table"] == [] and result["table_md"] is None
    assert set(result["seconds"]) == {"train", "compare"}


def test_run_poc_refuses_a_bad_sample_count(tmp_path):
    from chartrl_colab.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_samples=-1 is not valid"):
        poc.run_poc(eval_samples=-1, output_root=str(tmp_path))


# ----------------------------------------------------------------------------------------------- entropy
def test_mean_entropy_is_token_weighted_and_none_without_records(tmp_path):
    from chartrl_colab.evaluate import load_samples

    def row(i, entropy, tokens):
        return {"id": f"q{i}", "correct": [True, False], "num_tokens": tokens, "entropy": entropy}

    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [row(0, [1.0, 2.0], [1, 3]), row(1, [4.0, None], [4, 9])]) + "\n")
    assert load_samples(path, metric="verifier").mean_entropy == pytest.approx((1 * 1 + 2 * 3 + 4 * 4) / 8)
    old = tmp_path / "old.jsonl"  # a file written before entropy was recorded
    old.write_text(json.dumps({"id": "q0", "correct": [True], "num_tokens": [3]}) + "\n")
    assert load_samples(old, metric="verifier").mean_entropy is None


def test_recorded_entropy_is_that_of_the_distribution_each_token_was_drawn_from():
    """The sampler's per-completion entropy equals the one recomputed by a forward pass over prompt + completion
    (softmax(logits / temperature) with the image token suppressed, averaged over the completion's tokens)."""
    import torch

    from chartrl_colab.data.loading import load_chart_dataset
    from chartrl_colab.generate import GenerateConfig, build_prompts
    from chartrl_colab.models.loading import load_model_and_processor
    from chartrl_colab.models.samplers import TransformersSampler

    model, processor = load_model_and_processor("tiny", seed=0)
    model.eval()
    cfg = GenerateConfig(vlm_name="tiny", max_new_tokens=6, temperature=0.7, output="unused.jsonl")
    sampler = TransformersSampler(model, processor, cfg)
    row = load_chart_dataset("synthetic", split="test", subset_size=1, seed=0)[0]
    prompts = build_prompts([row])
    (completions,) = sampler.sample(prompts, 2, seed=1)
    (recorded,) = sampler.entropy
    assert len(recorded) == 2 and all(math.isfinite(e) and 0 < e < math.log(1024) for e in recorded)

    prompt_ids, fields = sampler.tokenize(prompts)
    for ids, entropy in zip(completions, recorded):
        full = torch.tensor([prompt_ids[0] + ids])
        with torch.no_grad():
            logits = model(input_ids=full, attention_mask=torch.ones_like(full), pixel_values=fields["pixel_values"],
                           image_grid_thw=fields["image_grid_thw"]).logits[0].float()
        steps = logits[len(prompt_ids[0]) - 1:-1] / 0.7  # the logits each completion token was drawn from
        steps[:, model.config.image_token_id] = -np.inf
        expected = torch.special.entr(torch.softmax(steps, dim=-1)).sum(-1).mean()
        assert entropy == pytest.approx(float(expected), rel=1e-4)


# ----------------------------------------------------------------------------------------------- the comparison
VERIFIER = "GRPO rewards: verifier (grpo's advantage from the verifier alone, as psr/nsr/w-reinforce)"


@pytest.mark.parametrize("grpo_rewards,said", [("verifier", VERIFIER),
                                               ("all", "GRPO rewards: all (grpo's advantage from the sum of all rewards)")])
def test_comparison_says_which_rewards_grpo_learned_from(grpo_rewards, said, tmp_path, monkeypatch, capsys):
    import chartrl_colab.colab.pipelines
    import chartrl_colab.monitor
    from chartrl_colab.colab.poc import run_poc

    trained = []
    monkeypatch.setattr(chartrl_colab.colab.pipelines, "train_run", lambda cfg: trained.append(cfg) or {"global_step": 1})
    report = SimpleNamespace(figures=[], summary_txt="summary.txt", summary_json="summary.json", summaries={},
                             errors=[])
    monkeypatch.setattr(chartrl_colab.monitor, "monitor", lambda *args, **kwargs: report)
    # eval_samples=0: no sampling stage; the line is printed by the comparing stage, which runs either way.
    run_poc(modes=("grpo", "nsr"), output_dir=tmp_path, output_root=str(tmp_path),
            grpo_rewards=grpo_rewards, eval_samples=0)
    lines = capsys.readouterr().out.splitlines()
    assert [cfg.grpo_rewards for cfg in trained] == [grpo_rewards] * 2  # in each run's config, so in run.json
    assert said in lines


def test_training_plots_keep_runs_with_equal_values_visible():
    """Two modes that logged the very same values (e.g. nsr and w-reinforce with nothing correct) both show:
    the later one drawn thinner and dashed over the earlier, the legend beside the axes."""
    from chartrl_colab.evaluation.monitor_plots import plot_metric

    history = [{"step": s, "loss": 1.0 / s} for s in range(1, 9)]
    ax = plot_metric({"NSR": history, "W-REINFORCE": list(history)}, "loss").axes[0]
    nsr, wr = [line for line in ax.get_lines() if line.get_label() in ("NSR", "W-REINFORCE")]
    assert list(nsr.get_ydata()) == list(wr.get_ydata())
    assert wr.get_linewidth() < nsr.get_linewidth() and wr.get_linestyle() != nsr.get_linestyle()
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # right of the axes
