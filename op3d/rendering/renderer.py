"""The volume renderer: coarse stratified pass, importance pass, merge, composite (spec 2.3-2.5).

A `field` is any callable (coordinates [B, N, 3], directions [B, N, 3]) -> {'rgb': [B, N, C], 'sigma': [B, N, 1]}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from op3d.rendering.depth_sampling import auto_ray_limits, importance_depths, stratified_depths
from op3d.fast_paths import FAST
from op3d.rendering.ray_marcher import depth_order, interval_weights, march_rays, march_sample_sets, take_samples
from op3d.rendering.settings import RenderingSettings


@dataclass
class RendererDraws:
    """Random numbers for one render, to replay recorded draws: stratified jitter [B, M, S, 1] and importance
    u [B * M, N_importance], both in [0, 1). None = draw with torch.rand (in that order, as officially)."""

    stratified: torch.Tensor | None = None
    importance: torch.Tensor | None = None


def evaluate_field(field, origins: torch.Tensor, directions: torch.Tensor, depths: torch.Tensor,
                   density_noise: float = 0.0):
    """Evaluate the field at origins + depths * directions: depths [B, M, S, 1] -> colors [B, M, S, C],
    densities [B, M, S, 1]."""
    b, m, s, _ = depths.shape
    coordinates = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(b, -1, 3)
    sample_directions = directions.unsqueeze(-2).expand(-1, -1, s, -1).reshape(b, -1, 3)
    out = field(coordinates, sample_directions)
    sigma = out["sigma"]
    if density_noise > 0:
        sigma = sigma + torch.randn_like(sigma) * density_noise
    return out["rgb"].reshape(b, m, s, -1), sigma.reshape(b, m, s, 1)


def merge_samples(depths1, colors1, densities1, depths2, colors2, densities2):
    """The union of two sample sets along the sample axis, sorted by depth: (depths [B, M, S1 + S2, 1],
    colors [B, M, S1 + S2, C], densities [B, M, S1 + S2, 1])."""
    depths = torch.cat([depths1, depths2], dim=-2)
    order = depth_order(depths)
    return tuple(take_samples(x, order) for x in (depths, torch.cat([colors1, colors2], dim=-2),
                                                  torch.cat([densities1, densities2], dim=-2)))


def render_rays(field, origins: torch.Tensor, directions: torch.Tensor, settings: RenderingSettings,
                draws: RendererDraws | None = None):
    """origins, directions: [B, M, 3] -> (features [B, M, C] in [-1, 1], depth [B, M, 1], weight sum [B, M, 1])."""
    draws = draws or RendererDraws()
    b, m, _ = origins.shape
    if settings.auto_ray_limits:
        ray_start, ray_end = auto_ray_limits(origins, directions, settings.box_warp)
    else:
        ray_start, ray_end = settings.ray_start, settings.ray_end
    depths = stratified_depths(b, m, ray_start, ray_end, settings.depth_resolution, origins.device,
                               settings.disparity_space_sampling, jitter=draws.stratified)
    colors, densities = evaluate_field(field, origins, directions, depths, settings.density_noise)
    sample_sets = [(colors, densities, depths)]
    if settings.depth_resolution_importance > 0:
        if FAST.fused_marching:
            weights, _ = interval_weights(densities, depths)  # the coarse pass needs only its weights
        else:
            _, _, weights = march_rays(colors, densities, depths, settings.white_back)
        depths_fine = importance_depths(depths, weights, settings.depth_resolution_importance, u=draws.importance)
        colors_fine, densities_fine = evaluate_field(field, origins, directions, depths_fine, settings.density_noise)
        sample_sets.append((colors_fine, densities_fine, depths_fine))
    if FAST.fused_marching:
        features, depth, weights = march_sample_sets(sample_sets, settings.white_back)
    else:
        if settings.depth_resolution_importance > 0:
            depths, colors, densities = merge_samples(depths, colors, densities, depths_fine, colors_fine,
                                                      densities_fine)
        features, depth, weights = march_rays(colors, densities, depths, settings.white_back)
    return features, depth, weights.sum(2)
