"""Compositing of signed-distance samples (spec 4.3.7, official `Sdf2DensityRayMarcher` and `LaplaceDensity`), used
by the SMPL-conditional generator instead of the softplus midpoint marcher of `ray_marcher.py`."""

from __future__ import annotations

import torch
from torch import nn

LAST_DELTA = 1e9  # length given to the last sample's interval (it absorbs whatever is left of the ray)


class LaplaceDensity(nn.Module):
    """SDF -> density (1 / beta) * sigmoid(-sdf / beta) with beta = |beta_param| + beta_min.

    `beta` is the official trainable 0-d parameter (init 0.01); `beta_min` (1e-4) is a plain attribute, not in the
    state dict, so checkpoints carry it next to the tensors."""

    def __init__(self, beta: float = 0.01, beta_min: float = 1e-4):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))
        self.beta_min = float(beta_min)

    def get_beta(self) -> torch.Tensor:
        return self.beta.abs() + self.beta_min

    def forward(self, sdf: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
        beta = self.get_beta() if beta is None else beta
        return (1 / beta) * torch.sigmoid(-sdf / beta)


def march_sdf_rays(colors: torch.Tensor, sdf: torch.Tensor, depths: torch.Tensor, density: LaplaceDensity):
    """colors [B, M, S, C], sdf [B, M, S, 1], sorted depths [B, M, S, 1] ->
    (features [B, M, C] in [-1, 1] scale, depth [B, M, 1], weights [B, M, S, 1]).

    No midpoints: sample i owns the interval to sample i+1, the last one an interval of 1e9. alpha = 1 - exp(-density
    * delta), weights = alpha * prod_{j<i} (1 - alpha_j + 1e-10). The expected depth gives the last sample the
    weight left over (1 - sum w) but divides by sum w; NaN -> inf, then clamp to the range of all depths. The
    background is always white (features += 1 - sum w)."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    deltas = torch.cat([deltas, torch.full_like(deltas[:, :, :1], LAST_DELTA)], dim=-2)
    alpha = 1 - torch.exp(-density(sdf) * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2)
    weights = alpha * torch.cumprod(alpha_shifted, dim=-2)[:, :, :-1]
    weight_total = weights.sum(dim=-2)
    features = torch.sum(weights * colors, dim=-2)
    depth_weights = torch.cat([weights[:, :, :-1], weights[:, :, -1:] + (1 - weight_total).unsqueeze(-2)], dim=-2)
    depth = torch.sum(depth_weights * depths, dim=-2) / weight_total
    depth = torch.nan_to_num(depth, float("inf"))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    features = features + 1 - weight_total
    return features * 2 - 1, depth, weights
