"""pass@k for every k <= n: the vectorised estimator against a per-question Python loop.

    python benchmarks/passk_speed.py            # --questions 10000 --n 256 --repeats 3

The baseline is Chen et al.'s reference estimator (``1 - prod(1 - k / arange(n - c + 1, n + 1))``), called
once per question and k, as a per-question evaluation script would. Both run in this process on the same
counts; the script prints both times (best of ``--repeats``), the ratio, and the largest difference
between the two results. Target: ratio >= 50, difference <= 1e-12.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from chartrl_colab.evaluation.passk import pass_at_k_curve


def reference_pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021), Figure 3: the numerically stable per-question estimator."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def loop(n: int, c: np.ndarray, ks: list[int]) -> np.ndarray:
    return np.array([[reference_pass_at_k(n, int(ci), k) for k in ks] for ci in c])


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="vectorised runs (best taken)")
    parser.add_argument("--loop-repeats", type=int, default=1, help="loop runs (best taken; each is slow)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    # A realistic mix: many questions never solved or always solved, the rest spread out.
    p = rng.beta(0.5, 0.5, size=args.questions)
    c = rng.binomial(args.n, p)
    ks = list(range(1, args.n + 1))

    fast_s, fast = best_of(args.repeats, lambda: pass_at_k_curve(args.n, c, ks))
    slow_s, slow = best_of(args.loop_repeats, lambda: loop(args.n, c, ks))
    diff = float(np.max(np.abs(fast - slow)))
    print(f"{args.questions} questions, n={args.n}, k=1..{args.n} ({fast.size:,} values)")
    print(f"  per-question loop : {slow_s:9.3f} s")
    print(f"  vectorised        : {fast_s:9.3f} s")
    print(f"  ratio             : {slow_s / fast_s:9.1f}x  (target >= 50x)")
    print(f"  max |difference|  : {diff:.2e}  (target <= 1e-12)")
    return 0 if diff <= 1e-12 else 1


if __name__ == "__main__":
    raise SystemExit(main())
