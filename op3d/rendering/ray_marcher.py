"""Volume compositing along rays (spec 2.4): midpoint quadrature with softplus(sigma - 1) densities.

Samples are indexed along dim -2 of [B, M, S, ...] tensors; interval i lies between samples i and i + 1, and its
density, colour and depth are the averages of the two samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F

TRANSMITTANCE_EPS = 1e-10
"""Added to every 1 - alpha factor of the transmittance product (keeps it, and its gradient, away from zero)."""


def interval_means(x: torch.Tensor) -> torch.Tensor:
    """[B, M, S, C] per sample -> [B, M, S - 1, C]: the average of the two samples bounding each interval."""
    return (x[:, :, :-1] + x[:, :, 1:]) / 2


def exclusive_cumprod(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Products of all earlier entries along dim (1 for the first): [a, b, c] -> [1, a, ab]."""
    ones = torch.ones_like(x.narrow(dim, 0, 1))
    return torch.cumprod(torch.cat([ones, x], dim), dim).narrow(dim, 0, x.shape[dim])


def interval_weights(densities: torch.Tensor, depths: torch.Tensor):
    """Raw densities [B, M, S, 1] at sorted depths [B, M, S, 1] -> (weights [B, M, S - 1, 1] of the intervals
    between consecutive samples, the intervals' mid depths [B, M, S - 1, 1]).

    Interval i: opacity alpha_i = 1 - exp(-softplus(mean density - 1) * length), reached with transmittance
    T_i = prod_{j < i} (1 - alpha_j + 1e-10); its weight is alpha_i T_i."""
    lengths = depths[:, :, 1:] - depths[:, :, :-1]
    opacity = 1 - torch.exp(-F.softplus(interval_means(densities) - 1) * lengths)
    transmittance = exclusive_cumprod(1 - opacity + TRANSMITTANCE_EPS, dim=-2)
    return opacity * transmittance, interval_means(depths)


def finish_composite(colour_sum: torch.Tensor, weights: torch.Tensor, depths_mid: torch.Tensor,
                     depths: torch.Tensor, white_back: bool):
    """(features [B, M, C] in [-1, 1] scale, depth [B, M, 1]) from the weighted colour sum [B, M, C].

    depth = the weighted mean interval depth; rays without weight (0 / 0) get +inf, and every depth is then
    clamped to the range of all sample depths of the batch. white_back fills the missing weight with white."""
    opacity = weights.sum(2)
    depth = torch.nan_to_num(torch.sum(weights * depths_mid, -2) / opacity, float("inf"))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if white_back:
        colour_sum = colour_sum + 1 - opacity
    return colour_sum * 2 - 1, depth


def march_rays(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, white_back: bool = False):
    """colors [B, M, S, C], raw densities [B, M, S, 1], sorted depths [B, M, S, 1] ->
    (features [B, M, C] in [-1, 1] scale, depth [B, M, 1], weights [B, M, S - 1, 1]).

    Each interval contributes its weight (interval_weights) times its mean colour."""
    weights, depths_mid = interval_weights(densities, depths)
    colour_sum = torch.sum(weights * interval_means(colors), -2)
    features, depth = finish_composite(colour_sum, weights, depths_mid, depths, white_back)
    return features, depth, weights


def take_samples(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x [B, M, S, C] reordered along the sample axis by order [B, M, S, 1] (the same order for every channel)."""
    return torch.gather(x, -2, order.expand(*order.shape[:-1], x.shape[-1]))


def depth_order(depths: torch.Tensor) -> torch.Tensor:
    """The permutation [B, M, S, 1] that sorts depths [B, M, S, 1] along the sample axis."""
    return torch.sort(depths, dim=-2).indices


def sample_weights(weights: torch.Tensor) -> torch.Tensor:
    """Interval weights [B, M, S - 1, 1] -> per-sample weights [B, M, S, 1]: half of each bounding interval's."""
    no_interval = torch.zeros_like(weights[:, :, :1])
    return (torch.cat([no_interval, weights], -2) + torch.cat([weights, no_interval], -2)) / 2


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
    order = depth_order(depths)
    depths = take_samples(depths, order)
    weights, depths_mid = interval_weights(take_samples(densities, order), depths)
    per_sample = sample_weights(weights)
    per_sample = torch.zeros_like(per_sample).scatter(-2, order, per_sample)  # each sample back at its own place
    set_sizes = [colors.shape[-2] for colors, _, _ in sample_sets]
    colour_sum = 0
    for (colors, _, _), set_weights in zip(sample_sets, per_sample.split(set_sizes, dim=-2)):
        colour_sum = colour_sum + torch.matmul(set_weights.transpose(-1, -2), colors)[:, :, 0]
    features, depth = finish_composite(colour_sum, weights, depths_mid, depths, white_back)
    return features, depth, weights
