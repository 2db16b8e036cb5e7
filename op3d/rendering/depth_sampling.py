"""Where to sample along each ray (spec 2.3, 2.5): stratified depths between fixed or box-derived limits, and
importance sampling from the coarse weights.

Random draws are RNG-compatible with the official renderer: the stratified jitter is one `torch.rand` of shape
[B, M, S, 1] (filled sample-major, [S, B, M, 1], when the limits are per ray as with 'auto') and the importance
sampler one `torch.rand` of shape [B * M, N_importance]. Both functions accept the
draw as an argument (`jitter`, `u`) so tests can inject recorded draws.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ray_box_limits(origins: torch.Tensor, directions: torch.Tensor, box_side: float):
    """Entry/exit distances of rays into the axis-aligned cube of side box_side centred at the origin (slab test).

    origins, directions: [..., 3] -> (t_near [..., 1], t_far [..., 1]); rays that miss get -1 / -2."""
    shape = origins.shape[:-1]
    o = origins.detach().reshape(-1, 3)
    inv_d = 1 / directions.detach().reshape(-1, 3)
    half = box_side / 2
    t0 = (-half - o) * inv_d
    t1 = (half - o) * inv_d
    # Pick the entry/exit plane by the direction's sign (not min/max), so zero components behave as officially.
    negative = inv_d < 0
    t_min, t_max = torch.where(negative, t1, t0), torch.where(negative, t0, t1)
    # Apply the slabs in x, y, z order, as the official test does (validity checked against the running interval).
    near, far = t_min[:, 0], t_max[:, 0]
    valid = torch.ones_like(near, dtype=torch.bool)
    for axis in (1, 2):
        valid &= ~((near > t_max[:, axis]) | (t_min[:, axis] > far))
        near = torch.maximum(near, t_min[:, axis])
        far = torch.minimum(far, t_max[:, axis])
    near = torch.where(valid, near, torch.full_like(near, -1))
    far = torch.where(valid, far, torch.full_like(far, -2))
    return near.reshape(*shape, 1), far.reshape(*shape, 1)


def auto_ray_limits(origins: torch.Tensor, directions: torch.Tensor, box_side: float):
    """Per-ray limits from the box. Rays that miss it get near = min of the valid nears and far = max of the valid
    nears: the official rule (they render an empty interval in front of the box instead of failing)."""
    near, far = ray_box_limits(origins, directions, box_side)
    valid = far > near
    # Without a host sync: rays keep their limits where valid, or where no ray is (then nothing changes).
    keep = valid | ~valid.any()
    near_min = torch.where(valid, near, torch.full_like(near, float("inf"))).amin()
    near_max = torch.where(valid, near, torch.full_like(near, float("-inf"))).amax()
    return torch.where(keep, near, near_min), torch.where(keep, far, near_max)


def stratified_depths(n_batch: int, n_rays: int, ray_start, ray_end, n_samples: int, device,
                      disparity_space: bool = False, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """Evenly spaced depths plus a uniform jitter of one spacing: [B, M, S, 1].

    ray_start/ray_end: floats, or tensors [B, M, 1] of per-ray limits. jitter: [B, M, S, 1] in [0, 1)
    (drawn with torch.rand when None)."""
    if disparity_space:
        base = torch.linspace(0, 1, n_samples, device=device).reshape(1, 1, n_samples, 1).repeat(n_batch, n_rays, 1, 1)
        jitter = torch.rand_like(base) if jitter is None else jitter
        t = base + jitter * (1 / (n_samples - 1))
        return 1. / (1. / ray_start * (1. - t) + 1. / ray_end * t)
    if isinstance(ray_start, torch.Tensor):
        steps = torch.arange(n_samples, dtype=torch.float32, device=device) / (n_samples - 1)
        depths = ray_start.unsqueeze(2) + steps.reshape(1, 1, -1, 1) * (ray_end - ray_start).unsqueeze(2)
        delta = ((ray_end - ray_start) / (n_samples - 1)).unsqueeze(2)
        if jitter is None:
            # The official per-ray depths are a sample-major tensor viewed as [B, M, S, 1], and its rand_like
            # fills memory in that order: draw [S, B, M, 1] and view it the same way to get the same numbers.
            jitter = torch.rand(n_samples, n_batch, n_rays, 1, device=device).permute(1, 2, 0, 3)
    else:
        depths = torch.linspace(ray_start, ray_end, n_samples, device=device)
        depths = depths.reshape(1, 1, n_samples, 1).repeat(n_batch, n_rays, 1, 1)
        delta = (ray_end - ray_start) / (n_samples - 1)
    jitter = torch.rand_like(depths) if jitter is None else jitter
    return depths + jitter * delta


def smoothed_weights(weights: torch.Tensor) -> torch.Tensor:
    """Coarse interval weights [R, S - 1] -> [R, S - 1]: the larger of each pair of neighbours (a max over
    windows of 2 with one zero of padding at each end, S windows), the mean of consecutive window maxima (back to
    S - 1), + 0.01 so that no interval is left out. Computed in float32."""
    padded_max = F.max_pool1d(weights.unsqueeze(1).float(), 2, 1, padding=1)
    return F.avg_pool1d(padded_max, 2, 1).squeeze(1) + 0.01


@torch.no_grad()
def importance_depths(depths: torch.Tensor, weights: torch.Tensor, n_importance: int,
                      u: torch.Tensor | None = None) -> torch.Tensor:
    """Fine depths [B, M, N, 1] drawn from the coarse weights [B, M, S - 1, 1] (see smoothed_weights) by
    inverse-CDF sampling over the coarse interval midpoints. u: [B * M, N] in [0, 1).

    The S - 1 midpoints bound S - 2 bins; bin k (between midpoints k and k + 1) gets the smoothed weight of
    interval k + 1, so the first and last intervals' weights are left out."""
    b, m, s, _ = depths.shape
    per_ray = depths.reshape(b * m, s)
    midpoints = 0.5 * (per_ray[:, :-1] + per_ray[:, 1:])
    bin_weights = smoothed_weights(weights.reshape(b * m, -1))[:, 1:-1]
    return sample_pdf(midpoints, bin_weights, n_importance, u).reshape(b, m, n_importance, 1)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, u: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    """Inverse transform sampling of a piecewise-constant density: bin k = [bins[k], bins[k + 1]] holds
    probability proportional to weights[k] + eps, spread uniformly over the bin, so the CDF is piecewise linear
    with knots (bins[k], cdf[k]), cdf[k] = the probability of bins 0..k-1. bins [R, S + 1] edges,
    weights [R, S] -> samples [R, N].

    u [R, N] in [0, 1) (drawn with torch.rand when None) is mapped through the inverse CDF: find the knots
    k, k + 1 around u (searchsorted right; clamped to the ends) and interpolate linearly between bins[k] and
    bins[k + 1]. Bins whose probability is below eps are treated as having probability 1 (their samples land
    close to the bin's lower edge instead of dividing by ~0)."""
    n_rays, n_bins = weights.shape
    probability = weights + eps
    probability = probability / torch.sum(probability, -1, keepdim=True)
    cdf = F.pad(torch.cumsum(probability, -1), (1, 0))  # [R, S + 1], starting at 0
    u = (torch.rand(n_rays, n_samples, device=bins.device) if u is None else u).contiguous()
    above = torch.searchsorted(cdf, u, right=True)  # first knot with cdf > u (n_bins + 1 when none)
    knot_lo, knot_hi = torch.clamp_min(above - 1, 0), torch.clamp_max(above, n_bins)
    cdf_lo, cdf_hi = torch.gather(cdf, 1, knot_lo), torch.gather(cdf, 1, knot_hi)
    edge_lo, edge_hi = torch.gather(bins, 1, knot_lo), torch.gather(bins, 1, knot_hi)
    mass = cdf_hi - cdf_lo
    mass = torch.where(mass < eps, torch.ones_like(mass), mass)
    return edge_lo + (u - cdf_lo) / mass * (edge_hi - edge_lo)
