"""pass@k against exact rational arithmetic; broadcasting, errors, and the bootstrap interval."""

import math
from fractions import Fraction

import numpy as np
import pytest

from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation import passk
from chartrl_colab.evaluation.passk import bootstrap_ci, pass_at_k, pass_at_k_curve


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def close_to_exact(got: float, want: Fraction) -> bool:
    # Relative to the exact value (small pass@k must keep its digits), plus a floor of a few ulps of 1.
    return abs(Fraction(got) - want) <= Fraction(1, 10**13) * want + Fraction(1, 10**15)


def random_triples(rng, count, ns=(1, 2, 3, 5, 16, 64, 100, 257, 512, 1000, 1024)):
    out = []
    for _ in range(count):
        n = int(rng.choice(ns))
        out.append((n, int(rng.integers(0, n + 1)), int(rng.integers(1, n + 1))))
    return out


EDGES = [(1, 0, 1), (1, 1, 1), (1024, 0, 1), (1024, 0, 1024), (1024, 1024, 1), (1024, 1024, 1024),
         (1024, 1, 1), (1024, 1, 1024), (1024, 1023, 1), (1024, 1, 2), (1024, 2, 1023), (1024, 512, 512),
         (1024, 3, 1022), (64, 0, 64), (64, 64, 64), (64, 1, 64), (7, 3, 7)]


def test_scalar_matches_exact_rational_reference():
    rng = np.random.default_rng(20250)
    for n, c, k in EDGES + random_triples(rng, 600):
        got = pass_at_k(n, c, k)
        assert isinstance(got, float)
        assert close_to_exact(got, exact(n, c, k)), (n, c, k, got, float(exact(n, c, k)))


def test_arrays_match_exact_reference_and_broadcast():
    rng = np.random.default_rng(7)
    triples = EDGES + random_triples(rng, 400)
    n, c, k = (np.array(col) for col in zip(*triples))
    got = pass_at_k(n, c, k)
    assert got.shape == n.shape
    for value, (ni, ci, ki) in zip(got, triples):
        assert close_to_exact(float(value), exact(ni, ci, ki))
    # A column of questions against a row of k values broadcasts to a (questions, k) grid.
    grid = pass_at_k(np.full((5, 1), 16), np.arange(0, 17, 4)[:, None], np.array([[1, 2, 8, 16]]))
    assert grid.shape == (5, 4)
    for i, ci in enumerate(range(0, 17, 4)):
        for j, kj in enumerate([1, 2, 8, 16]):
            assert close_to_exact(float(grid[i, j]), exact(16, ci, kj))


def test_curve_is_questions_by_k_and_per_question_n():
    rng = np.random.default_rng(3)
    n = rng.choice([256, 1024], size=50)
    c = np.array([int(rng.integers(0, m + 1)) for m in n])
    ks = [1, 2, 4, 8, 16, 64, 256]
    curve = pass_at_k_curve(n, c, ks)
    assert curve.shape == (50, len(ks))
    for q in range(50):
        for j, k in enumerate(ks):
            assert close_to_exact(float(curve[q, j]), exact(int(n[q]), int(c[q]), k))
    # pass@1 is the fraction correct, and pass@k never decreases in k.
    assert np.allclose(curve[:, 0], c / n, rtol=1e-14, atol=0)
    assert np.all(np.diff(curve, axis=1) >= -1e-15)
    # One n for every question broadcasts.
    shared = pass_at_k_curve(256, np.minimum(c, 256), ks)
    assert np.array_equal(shared, pass_at_k(256, np.minimum(c, 256)[:, None], np.array(ks)[None, :]))


def test_chunked_table_gives_the_same_values(monkeypatch):
    # Many distinct n make many (n, c) pairs: the table is then built in chunks.
    rng = np.random.default_rng(11)
    triples = random_triples(rng, 2000, ns=tuple(range(1, 300)))
    n, c, k = (np.array(col) for col in zip(*triples))
    whole = pass_at_k(n, c, k)
    monkeypatch.setattr(passk, "_TABLE_CHUNK", 1000)
    chunked = pass_at_k(n, c, k)
    assert np.array_equal(whole, chunked)


def test_k_above_n_is_an_error_that_says_so():
    with pytest.raises(ConfigError, match=r"k=65 exceeds n=64"):
        pass_at_k(64, 3, 65)
    with pytest.raises(ValueError, match=r"k=8 exceeds n=4"):  # ConfigError is a ValueError
        pass_at_k_curve([4, 8], [1, 1], [1, 8])


@pytest.mark.parametrize("n,c,k,message", [
    (4, 5, 1, r"c=5 is not valid for n=4"),
    (4, -1, 1, r"c=-1 is not valid"),
    (4, 1, 0, r"k=0 is not valid"),
    (0, 0, 1, r"n=0 is not valid"),
    (4, 1.5, 1, r"c must hold whole numbers"),
    (4, 1, True, r"k must hold whole numbers"),
])
def test_bad_counts_are_config_errors(n, c, k, message):
    with pytest.raises(ConfigError, match=message):
        pass_at_k(n, c, k)


def test_whole_floats_are_accepted():
    assert pass_at_k(8.0, 2.0, 2.0) == pass_at_k(8, 2, 2)


def test_bootstrap_interval_holds_the_mean_and_has_the_normal_width():
    rng = np.random.default_rng(5)
    values = (rng.random(400) < 0.3).astype(float)
    low, high = bootstrap_ci(values, n_bootstrap=4000, confidence=0.95, seed=1)
    mean = values.mean()
    assert low < mean < high
    # Bernoulli mean: the 95% interval is about +-1.96 standard errors.
    half = 1.96 * math.sqrt(mean * (1 - mean) / len(values))
    assert (high - low) == pytest.approx(2 * half, rel=0.15)
    assert bootstrap_ci(values, n_bootstrap=4000, seed=1) == (low, high)  # seeded
    assert bootstrap_ci(values, n_bootstrap=4000, seed=2) != (low, high)
    # A wider confidence gives a wider interval.
    low99, high99 = bootstrap_ci(values, n_bootstrap=4000, confidence=0.99, seed=1)
    assert low99 <= low and high99 >= high and (high99 - low99) > (high - low)


def test_bootstrap_of_a_curve_is_per_column():
    rng = np.random.default_rng(9)
    c = rng.integers(0, 17, size=120)
    curve = pass_at_k_curve(16, c, [1, 2, 4, 8, 16])
    low, high = bootstrap_ci(curve, n_bootstrap=500, seed=0)
    assert low.shape == high.shape == (5,)
    assert np.all(low <= curve.mean(axis=0)) and np.all(curve.mean(axis=0) <= high)
    # The same resamples serve every column, so each column's interval is that column's own bootstrap.
    for j in range(5):
        assert (low[j], high[j]) == pytest.approx(bootstrap_ci(curve[:, j], n_bootstrap=500, seed=0), abs=1e-12)
    # Monotone columns resampled together keep monotone bounds.
    assert np.all(np.diff(low) >= -1e-12) and np.all(np.diff(high) >= -1e-12)


def test_bootstrap_errors():
    with pytest.raises(ConfigError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ConfigError, match="confidence=1.5"):
        bootstrap_ci([1.0, 0.0], confidence=1.5)
    with pytest.raises(ConfigError, match="n_bootstrap=0"):
        bootstrap_ci([1.0, 0.0], n_bootstrap=0)


def test_summarize_is_per_question_values_mean_and_interval():
    from chartrl_colab.evaluation.passk import summarize

    rng = np.random.default_rng(2)
    c = rng.integers(0, 33, size=60)
    s = summarize(32, c, [1, 4, 32], n_bootstrap=300, seed=3)
    assert s["k"].tolist() == [1, 4, 32]
    assert np.array_equal(s["per_question"], pass_at_k_curve(32, c, [1, 4, 32]))
    for j, k in enumerate([1, 4, 32]):
        want = sum(exact(32, int(ci), k) for ci in c) / len(c)
        assert abs(Fraction(float(s["mean"][j])) - want) < Fraction(1, 10**13)
    low, high = bootstrap_ci(s["per_question"], n_bootstrap=300, seed=3)
    assert np.array_equal(s["ci_low"], low) and np.array_equal(s["ci_high"], high)
