"""Volume compositing along rays (spec 2.4): midpoint quadrature with softplus(sigma - 1) densities."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def interval_weights(densities: torch.Tensor, depths: torch.Tensor):
    """Raw densities [B, M, S, 1] at sorted depths [B, M, S, 1] -> (weights [B, M, S - 1, 1] of the intervals
    between consecutive samples, the intervals' mid depths [B, M, S - 1, 1]).

    Interval i uses the average density of samples i and i+1; alpha = 1 - exp(-softplus(sigma - 1) * delta)."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-F.softplus(densities_mid - 1) * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    weights = alpha * torch.cumprod(alpha_shifted, -2)[:, :, :-1]
    return weights, depths_mid


def _composite(composite_rgb, weights, depths_mid, depths, white_back: bool):
    """The outputs of march_rays from the weighted colour sum: (features in [-1, 1] scale, depth). The expected
    depth is clamped to the range of all input depths (rays with no weight get the far end)."""
    weight_total = weights.sum(2)
    composite_depth = torch.sum(weights * depths_mid, -2) / weight_total
    composite_depth = torch.nan_to_num(composite_depth, float("inf"))
    composite_depth = torch.clamp(composite_depth, torch.min(depths), torch.max(depths))
    if white_back:
        composite_rgb = composite_rgb + 1 - weight_total
    return composite_rgb * 2 - 1, composite_depth


def march_rays(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, white_back: bool = False):
    """colors [B, M, S, C], raw densities [B, M, S, 1], sorted depths [B, M, S, 1] ->
    (features [B, M, C] in [-1, 1] scale, depth [B, M, 1], weights [B, M, S - 1, 1]).

    Interval i uses the averages of samples i and i+1 (colours too); see interval_weights."""
    weights, depths_mid = interval_weights(densities, depths)
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    composite_rgb = torch.sum(weights * colors_mid, -2)
    features, depth = _composite(composite_rgb, weights, depths_mid, depths, white_back)
    return features, depth, weights


def march_sample_sets(sample_sets, white_back: bool = False):
    """march_rays over the depth-sorted union of sample sets [(colors [B, M, S_k, C], raw densities [B, M, S_k, 1],
    depths [B, M, S_k, 1]), ...] (each set sorted or not), without sorting or averaging the colours.

    The colour sum over intervals, sum_i w_i (c_i + c_i+1) / 2 over the sorted samples, is sum_j c_j (w_j-1 + w_j) / 2:
    each sample's weight is half of the two intervals it bounds. Those weights are computed in sorted order (the
    densities and depths are one channel), put back in each set's own order, and the colours of every set are
    summed with them as one batched matrix product: no sorted copy, no midpoint copy, no product tensor of the
    colours. Same function as merge_samples + march_rays (same sort), other rounding order. Returns what march_rays
    returns (weights in sorted order)."""
    depths = torch.cat([depths for _, _, depths in sample_sets], -2)
    densities = torch.cat([densities for _, densities, _ in sample_sets], -2)
    _, order = torch.sort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    weights, depths_mid = interval_weights(torch.gather(densities, -2, order), depths)
    edge = torch.zeros_like(weights[:, :, :1])
    per_sample = (torch.cat([edge, weights], -2) + torch.cat([weights, edge], -2)) / 2  # sorted order
    per_sample = torch.zeros_like(per_sample).scatter(-2, order, per_sample)  # each sample at its own place
    composite_rgb, start = 0, 0
    for colors, _, set_depths in sample_sets:
        stop = start + set_depths.shape[-2]
        composite_rgb = composite_rgb + torch.matmul(per_sample[:, :, start:stop].transpose(-1, -2), colors)[:, :, 0]
        start = stop
    features, depth = _composite(composite_rgb, weights, depths_mid, depths, white_back)
    return features, depth, weights
