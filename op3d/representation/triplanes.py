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
from op3d.representation.grid_lookup import pad_volume, slab_group_sample

# World axes read as (grid width, grid height) by each plane.
PLANE_AXES = {
    "compat": ((0, 1), (0, 2), (2, 0)),
    "consistent": ((0, 1), (1, 2), (2, 0)),
}


def plane_coordinates(coordinates: torch.Tensor, box_warp: float, projection: str = "compat") -> torch.Tensor:
    """World points [B, M, 3] -> normalized (u_W, u_H) on each of the three planes: [B, 3, M, 2]."""
    if projection not in PLANE_AXES:
        raise ValueError(f"plane projection must be one of {sorted(PLANE_AXES)}, got {projection!r}")
    scaled = coordinates * (2 / box_warp)
    return torch.stack([scaled[..., list(axes)] for axes in PLANE_AXES[projection]], dim=1)


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


def pad_triplanes(planes: torch.Tensor) -> torch.Tensor:
    """planes [1, 3, C, H, W] -> zero-bordered volumes [3, 1, H + 2, W + 2, C] for sample_triplanes_slab."""
    return pad_volume(planes[0].permute(0, 2, 3, 1).unsqueeze(1), interpolate_depth=False)


def sample_triplanes_slab(planes: torch.Tensor, points: torch.Tensor, box_warp: float,
                          projection: str = "compat", padded: torch.Tensor | None = None) -> torch.Tensor:
    """Shape-grid fast path of the plane-mean lookup on one slab (see grid_lookup): planes [1, 3, C, H, W],
    points [J, I, 3] with z constant and y constant per line -> [J, I, C]. padded: pad_triplanes(planes)."""
    j, i, _ = points.shape
    volumes = pad_triplanes(planes) if padded is None else padded
    grid = F.pad(plane_coordinates(points.reshape(1, -1, 3), box_warp, projection)[0], [0, 1]).view(3, j, i, 3)
    groups = [slab_group_sample(volumes[g], grid[g], (*PLANE_AXES[projection][g], 2), interpolate_depth=False)
              for g in range(3)]
    return groups[0].add_(groups[1]).add_(groups[2]).div_(3)
