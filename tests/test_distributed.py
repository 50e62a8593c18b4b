"""Two processes (torchrun, CPU, gloo): objectives on the gathered rewards, sliced per rank as TRL slices."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chartrl_colab.training.objectives import compute_advantages

WORKER = Path(__file__).with_name("distributed_worker.py")


def two_ranks(tmp_path, tiny_cache, *argv):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = dict(os.environ, TINY_CACHE=tiny_cache, OMP_NUM_THREADS="1")
    proc = subprocess.run(torchrun + [str(WORKER), str(tmp_path), *argv], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["nsr", "w-reinforce"])
def test_two_ranks_slice_the_gathered_objective(mode, tmp_path, tiny_cache):
    two_ranks(tmp_path, tiny_cache, mode)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for step in range(2):
        a, b = ranks[0][step], ranks[1][step]
        assert a["rewards"] == b["rewards"] and len(a["rewards"]) == 8  # both ranks see all 8 completions
        expected = compute_advantages(torch.tensor(a["rewards"]), mode=mode, verifier=0, num_generations=4)
        for rec in (a, b):
            local = slice(rec["rank"] * rec["local"], (rec["rank"] + 1) * rec["local"])
            assert rec["advantages"] == pytest.approx(expected.advantages[local].tolist(), abs=1e-6)
            keep = expected.keep[local].tolist() if mode == "nsr" else [True] * rec["local"]
            assert rec["kept"] == [k and n for k, n in zip(keep, rec["nonempty"])]
        # the token normaliser counts the kept tokens of both ranks
        assert a["num_items"] == b["num_items"] == a["local_items"] + b["local_items"]


@pytest.mark.slow
def test_a_rank_with_nothing_kept_runs_one_empty_row_and_bnpo_counts_the_steps_tokens(tmp_path, tiny_cache):
    # psr, bnpo, 2 steps per rollout: one correct completion in 16, on rank 0, in the first step. Every forward
    # (old log-probs, each step's loss) runs one row on both ranks (rank 1's with an empty mask): no hang, no
    # mismatched gather. Step 1's loss is (S / G) * (-T) / T = -2 (mean of rank 0's -4 and rank 1's 0); TRL's
    # bnpo would log -0.5 (rank 0's own token mean, halved by rank 1).
    two_ranks(tmp_path, tiny_cache, "psr", "sparse")
    ranks = [json.loads((tmp_path / f"rank{r}-sparse.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["forwards"] == [[False, 1], [True, 1], [True, 1]]
    assert ranks[0]["losses"] == pytest.approx([-2.0, 0.0], abs=1e-6)
