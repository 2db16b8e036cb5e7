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


@torch.no_grad()
def importance_depths(depths: torch.Tensor, weights: torch.Tensor, n_importance: int,
                      u: torch.Tensor | None = None) -> torch.Tensor:
    """Fine depths [B, M, N, 1] drawn from the coarse weights [B, M, S - 1, 1] (smoothed by a max then an average
    pool, + 0.01) by inverse-CDF sampling over the coarse interval midpoints. u: [B * M, N] in [0, 1)."""
    b, m, s, _ = depths.shape
    depths = depths.reshape(b * m, s)
    weights = weights.reshape(b * m, -1)
    weights = F.max_pool1d(weights.unsqueeze(1).float(), 2, 1, padding=1)
    weights = F.avg_pool1d(weights, 2, 1).squeeze(1) + 0.01
    mids = 0.5 * (depths[:, :-1] + depths[:, 1:])
    return sample_pdf(mids, weights[:, 1:-1], n_importance, u).reshape(b, m, n_importance, 1)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, u: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-linear CDF. bins [R, S + 1] edges, weights [R, S] -> samples [R, N]."""
    n_rays, n_bins = weights.shape
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    u = torch.rand(n_rays, n_samples, device=bins.device) if u is None else u
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(inds - 1, 0)
    above = torch.clamp_max(inds, n_bins)
    inds_sampled = torch.stack([below, above], -1).view(n_rays, 2 * n_samples)
    cdf_g = torch.gather(cdf, 1, inds_sampled).view(n_rays, n_samples, 2)
    bins_g = torch.gather(bins, 1, inds_sampled).view(n_rays, n_samples, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])
