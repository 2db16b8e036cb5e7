"""Volume compositing along rays (spec 2.4): midpoint quadrature with softplus(sigma - 1) densities."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def march_rays(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, white_back: bool = False):
    """colors [B, M, S, C], raw densities [B, M, S, 1], sorted depths [B, M, S, 1] ->
    (features [B, M, C] in [-1, 1] scale, depth [B, M, 1], weights [B, M, S - 1, 1]).

    Interval i uses the averages of samples i and i+1; alpha = 1 - exp(-softplus(sigma - 1) * delta). The expected
    depth is clamped to the range of all input depths (rays with no weight get the far end)."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-F.softplus(densities_mid - 1) * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    weights = alpha * torch.cumprod(alpha_shifted, -2)[:, :, :-1]
    composite_rgb = torch.sum(weights * colors_mid, -2)
    weight_total = weights.sum(2)
    composite_depth = torch.sum(weights * depths_mid, -2) / weight_total
    composite_depth = torch.nan_to_num(composite_depth, float("inf"))
    composite_depth = torch.clamp(composite_depth, torch.min(depths), torch.max(depths))
    if white_back:
        composite_rgb = composite_rgb + 1 - weight_total
    return composite_rgb * 2 - 1, composite_depth, weights
