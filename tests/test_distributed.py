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


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["nsr", "w-reinforce"])
def test_two_ranks_slice_the_gathered_objective(mode, tmp_path, tiny_cache):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = dict(os.environ, TINY_CACHE=tiny_cache, OMP_NUM_THREADS="1")
    proc = subprocess.run(torchrun + [str(WORKER), str(tmp_path), mode], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
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
