"""How much the embedded warm base reads the chart: pass@1 / pass@n on held-out synthetic test questions, sampled
with the real image and with the image blanked (a white square of the same size), same questions, same seeds.

    OMP_NUM_THREADS=1 python benchmarks/warm_reading.py --questions 96 --samples 16 [--seed 0] [--fresh]

``--fresh`` builds the base in memory (timing the build) instead of loading the cached copy. Prints one line per
question kind and the totals; results go in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np


def report(result: dict, samples: int) -> None:
    from chartrl_colab.evaluation.passk import pass_at_k

    kinds = defaultdict(list)
    for i, kind in enumerate(result["kind"]):
        kinds[kind].append(i)
    n = np.full(len(result["kind"]), samples)
    for which in ("real", "blank"):
        c = np.array(result[which])
        print(f"{which:5s} pass@1 {pass_at_k(n, c, 1).mean():.3f}  "
              f"pass@{samples} {pass_at_k(n, c, samples).mean():.3f}  "
              + "  ".join(f"{k} {c[idx].sum() / (len(idx) * samples):.2f}" for k, idx in sorted(kinds.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=96)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="the base's seed")
    parser.add_argument("--data-seed", type=int, default=2025, help="the test questions' seed")
    parser.add_argument("--fresh", action="store_true", help="build in memory, timing the build")
    args = parser.parse_args()
    import torch

    from chartrl_colab.models import warm

    t0, c0 = time.time(), time.process_time()
    if args.fresh:
        model, processor = warm.build_warm_fresh(args.seed)
    else:
        model, processor = warm.build_warm(None, args.seed)
    print(f"base ready: {time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")
    torch.set_num_threads(1)
    t0 = time.time()
    result = warm.reading(model, processor, args.questions, args.samples, args.data_seed)
    print(f"sampled {args.questions} questions x {args.samples} x 2 in {time.time() - t0:.0f} s")
    report(result, args.samples)


if __name__ == "__main__":
    main()
