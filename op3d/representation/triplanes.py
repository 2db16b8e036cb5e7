"""Feature lookup in EG3D tri-planes: three 32-channel planes sampled bilinearly (EG3D's projection).

planes: [B, 3, C, H, W]. EG3D projects a point onto plane i with coordinates @ inverse(axes_i) and keeps the
first two components. With EG3D's axes this gives (x, y), (x, z) and (z, x): the third plane reads the same
pair as the second, transposed, and no plane sees (y, z). The released EG3D models were trained with it, so it
is the 'compat' projection; 'consistent' uses (x, y), (y, z), (z, x) for new models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from op3d.representation.fused_lookup import gather_group_mean
from op3d.representation.grid_lookup import SlabLookup

# World axes read as (grid width, grid height) by each plane.
PLANE_AXES = {
    "compat": ((0, 1), (0, 2), (2, 0)),
    "consistent": ((0, 1), (1, 2), (2, 0)),
}


def plane_sources(box_warp: float, projection: str = "compat") -> list[list[tuple[int, float]]]:
    """For each plane and each of its lookup axes (W, H): the world axis read and the scale to normalized
    coordinates."""
    if projection not in PLANE_AXES:
        raise ValueError(f"plane projection must be one of {sorted(PLANE_AXES)}, got {projection!r}")
    return [[(axis, 2 / box_warp) for axis in axes] for axes in PLANE_AXES[projection]]


def plane_coordinates(coordinates: torch.Tensor, box_warp: float, projection: str = "compat") -> torch.Tensor:
    """World points [B, M, 3] -> normalized (u_W, u_H) on each of the three planes: [B, 3, M, 2]."""
    columns = [coordinates[..., axis] * scale for plane in plane_sources(box_warp, projection)
               for axis, scale in plane]
    return torch.stack(columns, dim=-1).unflatten(-1, (3, 2)).movedim(-2, -3)


def sample_triplanes(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float,
                     projection: str = "compat") -> torch.Tensor:
    """planes: [B, 3, C, H, W]; coordinates: [B, M, 3] world units -> features [B, 3, M, C]."""
    b, n_planes, c, h, w = planes.shape
    grid = plane_coordinates(coordinates, box_warp, projection)
    grid = grid.reshape(b * n_planes, 1, -1, 2).to(planes.dtype)
    out = F.grid_sample(planes.reshape(b * n_planes, c, h, w), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.reshape(b, n_planes, c, -1).permute(0, 1, 3, 2)


def sample_triplanes_mean(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float,
                          projection: str = "compat") -> torch.Tensor:
    """Fast path of sample_triplanes(...).mean(1): planes [B, 3, C, H, W], coordinates [B, M, 3] -> group-mean
    features [B, M, C], gathered in one pass (no copy when the planes are channels-last)."""
    grid = plane_coordinates(coordinates, box_warp, projection)
    volumes = planes.permute(0, 1, 3, 4, 2).unsqueeze(2)
    return gather_group_mean(volumes, F.pad(grid, [0, 1]), interpolate_depth=False)


def triplane_slab_lookup(planes: torch.Tensor, box_warp: float, projection: str = "compat"):
    """Shape-grid fast path of the plane-mean lookup (see grid_lookup): planes [1, 3, C, H, W] -> a function of
    one slab's points [M, 3] (z constant) returning their plane-mean features [M, C]."""
    return SlabLookup(planes[0].permute(0, 2, 3, 1).unsqueeze(1), plane_sources(box_warp, projection),
                      interpolate_depth=False)
