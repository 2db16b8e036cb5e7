"""Feature lookup in OrthoPlanes: three axis groups of K parallel 32-channel planes, sampled trilinearly and
averaged by the decoder (spec section 1.3).

planes: [B, K, 3 * C, H, W] as the backbone produces them (channel g * C + f = feature f of axis group g).
Group 0 holds XY planes stacked along z, group 1 YZ planes stacked along x, group 2 ZX planes stacked along y.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from op3d.representation.fused_lookup import gather_group_mean
from op3d.representation.grid_lookup import SlabLookup

# For each axis group: the world axes read as (grid width, grid height, plane stack) coordinates.
GROUP_AXES = ((0, 1, 2), (1, 2, 0), (2, 0, 1))


def group_sources(box_warp: float, projection: str = "compat") -> list[list[tuple[int, float]]]:
    """For each group and each of its lookup axes (W, H, D): the world axis read and the scale from world to
    normalized coordinates. 'compat' reproduces the official lookup, which scales only group 0 by 2 / box_warp
    (the released checkpoints depend on it); 'consistent' scales all three groups."""
    if projection == "compat":
        scales = (2 / box_warp, 1.0, 1.0)
    elif projection == "consistent":
        scales = (2 / box_warp,) * 3
    else:
        raise ValueError(f"plane projection must be 'compat' or 'consistent', got {projection!r}")
    return [[(axis, scale) for axis in axes] for axes, scale in zip(GROUP_AXES, scales)]


def group_coordinates(coordinates: torch.Tensor, box_warp: float, projection: str = "compat") -> torch.Tensor:
    """World points [B, M, 3] -> normalized grid coordinates (u_W, u_H, u_D) per group: [B, 3, M, 3]."""
    columns = [coordinates[..., axis] * scale for group in group_sources(box_warp, projection)
               for axis, scale in group]
    return torch.stack(columns, dim=-1).unflatten(-1, (3, 3)).movedim(-2, -3)


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


def orthoplane_slab_lookup(planes: torch.Tensor, box_warp: float, projection: str = "compat"):
    """Shape-grid fast path of the group-mean lookup (see grid_lookup): planes [1, K, 3 * C, H, W] -> a function
    of one slab's points [M, 3] (z constant) returning their group-mean features [M, C]."""
    return SlabLookup(orthoplane_volumes(planes)[0], group_sources(box_warp, projection))
