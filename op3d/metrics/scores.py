"""The metric formulas on feature arrays: FID, KID, precision/recall, Inception score (spec section 7).

Inputs are detector outputs as numpy arrays ([N, D] features, or [N, classes] probabilities); nothing here knows
about generators, datasets or devices."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians N(mu_a, cov_a) and N(mu_b, cov_b) ([D] means, [D, D] covariances):
    |mu_a - mu_b|^2 + Tr(cov_a + cov_b - 2 sqrtm(cov_a cov_b)); the real part, as the official tool reports."""
    mean_term = np.square(mu_a - mu_b).sum()
    root = scipy.linalg.sqrtm(np.dot(cov_a, cov_b))
    return float(np.real(mean_term + np.trace(cov_a + cov_b - root * 2)))


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> float:
    """KID: the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over
    `num_subsets` random subsets of m = min(len(real), len(fake), max_subset_size) items of each set.

    real [N_r, D], fake [N_f, D]. Subsets are drawn (without replacement) from a RandomState(seed), so a result is
    repeatable; the official tool draws them from numpy's global generator."""
    dim = real.shape[1]
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 real and 2 generated items, got {real.shape[0]} and {fake.shape[0]}")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)].astype(np.float64)
        y = real[rng.choice(real.shape[0], m, replace=False)].astype(np.float64)
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        across = (x @ y.T / dim + 1) ** 3
        total += (within.sum() - np.diag(within).sum()) / (m - 1) - across.sum() * 2 / m
    return float(total / num_subsets / m)


def _kth_neighbour_radii(manifold: torch.Tensor, nhood_size: int, row_batch_size: int,
                         col_batch_size: int) -> torch.Tensor:
    """Distance from each manifold point [N, D] to its nhood_size-th nearest other point -> [N] (float16-rounded)."""
    radii = []
    for rows in manifold.split(row_batch_size):
        dist = _distances(rows, manifold, col_batch_size)
        radii.append(dist.kthvalue(nhood_size + 1, dim=1).values.to(torch.float16))
    return torch.cat(radii)


def _distances(rows: torch.Tensor, cols: torch.Tensor, col_batch_size: int) -> torch.Tensor:
    """Euclidean distances [R, C] between float16 feature rows, computed in float32 in column batches."""
    return torch.cat([torch.cdist(rows.float(), block.float()) for block in cols.split(col_batch_size)], dim=1)


def precision_recall(real: np.ndarray, fake: np.ndarray, nhood_size: int = 3, row_batch_size: int = 10000,
                     col_batch_size: int = 10000, device="cpu") -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of fake [N_f, D] against real [N_r, D] features.

    Each set spans a manifold of balls around its points, radius = distance to the nhood_size-th nearest neighbour.
    precision = fraction of fakes inside the real manifold, recall = fraction of reals inside the fake manifold.
    Features and radii are rounded to float16 as the official tool stores them; distances are computed in float32
    (CPUs lack half-precision cdist)."""
    real_t = torch.as_tensor(real).to(device=device, dtype=torch.float16)
    fake_t = torch.as_tensor(fake).to(device=device, dtype=torch.float16)
    results = []
    for manifold, probes in ((real_t, fake_t), (fake_t, real_t)):
        radii = _kth_neighbour_radii(manifold, nhood_size, row_batch_size, col_batch_size)
        inside = [(_distances(batch, manifold, col_batch_size) <= radii.float()).any(dim=1)
                  for batch in probes.split(row_batch_size)]
        results.append(float(torch.cat(inside).float().mean()))
    return results[0], results[1]


def inception_score(probs: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """Inception score of class probabilities [N, classes]: exp(E_x KL(p(y|x) || p(y))) per split of the items
    (in order), returned as (mean, std) over the splits."""
    n = probs.shape[0]
    if n < num_splits:
        raise ValueError(f"Inception score needs at least {num_splits} items (one per split), got {n}")
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits].astype(np.float64)
        marginal = part.mean(axis=0, keepdims=True)
        kl = part * (np.log(part) - np.log(marginal))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
