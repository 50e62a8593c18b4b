"""The POC's comparison, without training: what it prints about the runs it compares."""

from types import SimpleNamespace

import pytest

VERIFIER = "GRPO rewards: verifier (grpo's advantage from the verifier alone, as psr/nsr/w-reinforce)"


@pytest.mark.parametrize("grpo_rewards,said", [("verifier", VERIFIER),
                                               ("all", "GRPO rewards: all (grpo's advantage from the sum of all rewards)")])
def test_comparison_says_which_rewards_grpo_learned_from(grpo_rewards, said, tmp_path, monkeypatch):
    import chartrl_colab.colab.pipelines
    import chartrl_colab.monitor
    from chartrl_colab.colab.poc import run_poc

    trained = []
    monkeypatch.setattr(chartrl_colab.colab.pipelines, "train_run", lambda cfg: trained.append(cfg) or {"global_step": 1})
    report = SimpleNamespace(figures=[], summary_txt="summary.txt", summary_json="summary.json", summaries={},
                             errors=[])
    monkeypatch.setattr(chartrl_colab.monitor, "monitor", lambda *args, **kwargs: report)
    lines = []
    # eval_samples=0: no sampling stage; the line is printed by the comparing stage, which runs either way.
    run_poc(modes=("grpo", "nsr"), output_dir=tmp_path, echo=lines.append, output_root=str(tmp_path),
            grpo_rewards=grpo_rewards, eval_samples=0)
    assert [cfg.grpo_rewards for cfg in trained] == [grpo_rewards] * 2  # in each run's config, so in run.json
    assert said in lines
