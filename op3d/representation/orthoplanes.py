"""Feature lookup in OrthoPlanes: three axis groups of K parallel 32-channel planes, sampled trilinearly and
averaged by the decoder (spec section 1.3).

planes: [B, K, 3 * C, H, W] as the backbone produces them (channel g * C + f = feature f of axis group g).
Group 0 holds XY planes stacked along z, group 1 YZ planes stacked along x, group 2 ZX planes stacked along y.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# For each axis group: the world axes read as (grid width, grid height, plane stack) coordinates.
GROUP_AXES = ((0, 1, 2), (1, 2, 0), (2, 0, 1))


def group_coordinates(coordinates: torch.Tensor, box_warp: float, projection: str = "compat") -> torch.Tensor:
    """World points [B, M, 3] -> normalized grid coordinates (u_W, u_H, u_D) per group: [B, 3, M, 3].

    'compat' reproduces the official lookup, which scales only group 0 by 2 / box_warp (the released
    checkpoints depend on it); 'consistent' scales all three groups."""
    scaled = coordinates * (2 / box_warp)
    if projection == "compat":
        sources = (scaled, coordinates, coordinates)
    elif projection == "consistent":
        sources = (scaled, scaled, scaled)
    else:
        raise ValueError(f"plane projection must be 'compat' or 'consistent', got {projection!r}")
    return torch.stack([src[..., list(axes)] for src, axes in zip(sources, GROUP_AXES)], dim=1)


def sample_orthoplanes(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float,
                       projection: str = "compat") -> torch.Tensor:
    """Trilinear lookup (align_corners=False, zero padding) of points in each axis group.

    planes: [B, K, 3 * C, H, W]; coordinates: [B, M, 3] world units -> features [B, 3, M, C]."""
    b, k, c3, h, w = planes.shape
    c = c3 // 3
    volumes = planes.view(b, k, 3, c, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b * 3, c, k, h, w)
    grid = group_coordinates(coordinates, box_warp, projection)
    grid = grid.reshape(b * 3, 1, 1, -1, 3).to(volumes.dtype)
    out = F.grid_sample(volumes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(b, 3, c, -1).permute(0, 1, 3, 2)
