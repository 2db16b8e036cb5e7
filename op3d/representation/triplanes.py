"""Feature lookup in EG3D tri-planes: three 32-channel planes sampled bilinearly (EG3D's projection).

planes: [B, 3, C, H, W]. EG3D projects a point onto plane i with coordinates @ inverse(axes_i) and keeps the
first two components. With EG3D's axes this gives (x, y), (x, z) and (z, x): the third plane reads the same
pair as the second, transposed, and no plane sees (y, z). The released EG3D models were trained with it, so it
is the 'compat' projection; 'consistent' uses (x, y), (y, z), (z, x) for new models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# World axes read as (grid width, grid height) by each plane.
PLANE_AXES = {
    "compat": ((0, 1), (0, 2), (2, 0)),
    "consistent": ((0, 1), (1, 2), (2, 0)),
}


def sample_triplanes(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float,
                     projection: str = "compat") -> torch.Tensor:
    """planes: [B, 3, C, H, W]; coordinates: [B, M, 3] world units -> features [B, 3, M, C]."""
    if projection not in PLANE_AXES:
        raise ValueError(f"plane projection must be one of {sorted(PLANE_AXES)}, got {projection!r}")
    b, n_planes, c, h, w = planes.shape
    scaled = coordinates * (2 / box_warp)
    grid = torch.stack([scaled[..., list(axes)] for axes in PLANE_AXES[projection]], dim=1)
    grid = grid.reshape(b * n_planes, 1, -1, 2).to(planes.dtype)
    out = F.grid_sample(planes.reshape(b * n_planes, c, h, w), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.reshape(b, n_planes, c, -1).permute(0, 1, 3, 2)
