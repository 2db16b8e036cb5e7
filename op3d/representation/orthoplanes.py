"""Feature lookup in OrthoPlanes: three axis groups of K parallel 32-channel planes, sampled trilinearly and
averaged by the decoder (spec section 1.3).

planes: [B, K, 3 * C, H, W] as the backbone produces them (channel g * C + f = feature f of axis group g).
Group 0 holds XY planes stacked along z, group 1 YZ planes stacked along x, group 2 ZX planes stacked along y.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from op3d.representation.fused_lookup import gather_group_mean
from op3d.representation.grid_lookup import pad_volume, slab_group_sample

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


def orthoplane_volumes(planes: torch.Tensor) -> torch.Tensor:
    """planes [B, K, 3 * C, H, W] -> per-group volumes [B, 3, K, H, W, C] (a view)."""
    b, k, c3, h, w = planes.shape
    return planes.view(b, k, 3, c3 // 3, h, w).permute(0, 2, 1, 4, 5, 3)


def sample_orthoplanes_mean(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float,
                            projection: str = "compat") -> torch.Tensor:
    """Fast path of sample_orthoplanes(...).mean(1): planes [B, K, 3 * C, H, W], coordinates [B, M, 3] ->
    group-mean features [B, M, C], gathered in one pass (no copy when the planes are channels-last)."""
    grid = group_coordinates(coordinates, box_warp, projection)
    return gather_group_mean(orthoplane_volumes(planes), grid)


def sample_orthoplanes_slab(planes: torch.Tensor, points: torch.Tensor, box_warp: float,
                            projection: str = "compat", padded: torch.Tensor | None = None) -> torch.Tensor:
    """Shape-grid fast path of the group-mean lookup on one slab (see grid_lookup): planes [1, K, 3 * C, H, W],
    points [J, I, 3] with z constant and y constant per line -> [J, I, C]. padded: pad_orthoplanes(planes)."""
    j, i, _ = points.shape
    volumes = pad_volume(orthoplane_volumes(planes)[0]) if padded is None else padded
    grid = group_coordinates(points.reshape(1, -1, 3), box_warp, projection)[0].view(3, j, i, 3)
    groups = [slab_group_sample(volumes[g], grid[g], GROUP_AXES[g]) for g in range(3)]
    return groups[0].add_(groups[1]).add_(groups[2]).div_(3)


def pad_orthoplanes(planes: torch.Tensor) -> torch.Tensor:
    """planes [1, K, 3 * C, H, W] -> zero-bordered per-group volumes [3, K + 2, H + 2, W + 2, C] for
    sample_orthoplanes_slab (computed once per shape)."""
    return pad_volume(orthoplane_volumes(planes)[0])
