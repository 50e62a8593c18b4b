"""The POC's comparison, without training: what it prints about the runs it compares."""

from types import SimpleNamespace

import pytest

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
