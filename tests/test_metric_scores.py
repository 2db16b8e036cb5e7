"""The metric formulas against closed forms and direct implementations of their definitions."""

import numpy as np
import pytest

from op3d.metrics import scores
from op3d.metrics.features import FeatureStats


def _stats(x, **kwargs):
    stats = FeatureStats(**kwargs)
    for chunk in np.array_split(x, 3):
        stats.append(chunk)
    return stats


def test_feature_stats_mean_cov_and_cap():
    x = np.random.RandomState(0).randn(50, 6).astype(np.float32)
    stats = _stats(x, capture_all=True, capture_mean_cov=True, max_items=40)
    assert stats.num_items == 40 and stats.is_full()
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x[:40].astype(np.float64).mean(0), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x[:40].astype(np.float64), rowvar=False, bias=True), atol=1e-10)
    np.testing.assert_array_equal(stats.get_all(), x[:40])
    restored = FeatureStats.from_arrays(stats.to_arrays(), capture_all=True, capture_mean_cov=True)
    np.testing.assert_array_equal(restored.get_mean_cov()[1], cov)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.RandomState(1).randn(300, 8)
    mean, cov = _stats(x, capture_mean_cov=True).get_mean_cov()
    assert abs(scores.frechet_distance(mean, cov, mean, cov)) <= 1e-6


def _random_cov(rng, d):
    a = rng.randn(d, d)
    return a @ a.T + 0.1 * np.eye(d)


def test_fid_equals_closed_form_for_gaussians():
    rng = np.random.RandomState(2)
    d = 5
    mu_a, mu_b = rng.randn(d), rng.randn(d)
    cov_a, cov_b = _random_cov(rng, d), _random_cov(rng, d)
    # W2^2 between Gaussians: |dmu|^2 + Tr(A + B - 2 (A^1/2 B A^1/2)^1/2), square roots by eigendecomposition.
    def sym_sqrt(m):
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    root_a = sym_sqrt(cov_a)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * sym_sqrt(root_a @ cov_b @ root_a))
    got = scores.frechet_distance(mu_a, cov_a, mu_b, cov_b)
    assert abs(got - expected) <= 1e-4 * abs(expected)


def _kernel(x, y):
    return (x @ y.T / x.shape[1] + 1) ** 3


def test_kid_matches_unbiased_mmd_definition():
    rng = np.random.RandomState(3)
    real, fake = rng.randn(40, 6), rng.randn(40, 6) + 0.3
    m = 40
    kxx, kyy, kxy = _kernel(fake, fake), _kernel(real, real), _kernel(fake, real)
    direct = 0.0
    for i in range(m):
        for j in range(m):
            if i != j:
                direct += (kxx[i, j] + kyy[i, j]) / (m * (m - 1))
            direct -= 2 * kxy[i, j] / (m * m)
    # One subset of all items: a permutation of each set, and the unbiased MMD does not depend on the order.
    got = scores.kernel_inception_distance(real, fake, num_subsets=1, max_subset_size=1000)
    assert got == pytest.approx(direct, rel=1e-9, abs=1e-12)
    same = scores.kernel_inception_distance(rng.randn(400, 6), rng.randn(400, 6), num_subsets=5, max_subset_size=300)
    assert abs(same) < 0.1 * got  # independent samples of one distribution: about zero, far below a shifted set


def _direct_precision_recall(real, fake, k):
    real = real.astype(np.float16).astype(np.float64)
    fake = fake.astype(np.float16).astype(np.float64)

    def coverage(manifold, probes):
        d_mm = np.linalg.norm(manifold[:, None] - manifold[None], axis=2)
        radius = np.sort(d_mm, axis=1)[:, k].astype(np.float16).astype(np.float64)  # k-th neighbour besides itself
        d_pm = np.linalg.norm(probes[:, None] - manifold[None], axis=2)
        return np.mean([(d_pm[i] <= radius).any() for i in range(len(probes))])

    return coverage(real, fake), coverage(fake, real)


def test_precision_recall_match_definition_and_batching():
    rng = np.random.RandomState(4)
    real, fake = rng.randn(60, 5), rng.randn(50, 5) * 1.5 + 0.5
    expected = _direct_precision_recall(real, fake, k=3)
    got = scores.precision_recall(real, fake, nhood_size=3)
    assert got == pytest.approx(expected, abs=1e-6)
    assert scores.precision_recall(real, fake, nhood_size=3, row_batch_size=7, col_batch_size=11) == got
    assert 0 < got[0] < 1 and 0 < got[1] < 1


def test_inception_score_bounds():
    uniform = np.full((100, 10), 0.1)
    mean, std = scores.inception_score(uniform, num_splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0, abs=1e-12)
    confident = np.full((100, 10), 1e-6)
    confident[np.arange(100), np.arange(100) % 10] = 1 - 9e-6
    assert scores.inception_score(confident, num_splits=10)[0] == pytest.approx(10, rel=1e-3)
    with pytest.raises(ValueError, match="at least 10"):
        scores.inception_score(uniform[:5], num_splits=10)
