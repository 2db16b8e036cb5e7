"""Fast plane lookup: the interpolation corners of every plane group gathered in one weighted row sum
(`embedding_bag`) straight from the planes' memory, returning the group mean the decoder consumes.

The reference lookup (orthoplanes.sample_orthoplanes, triplanes.sample_triplanes) runs `grid_sample` per group on
permuted copies of the planes and averages afterwards. Here the planes are read as a table of C-channel rows, which
needs no copy when they are stored channels-last (the backbone's fast path writes them that way); the interpolation
weights (align_corners=False, zero padding, exactly grid_sample's rule) and the 1/G of the mean are folded into the
per-row weights. Same function, other rounding order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def plane_rows(volumes: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """volumes [B, G, D, H, W, C] (any strides) -> (table [R, C], row strides of the B, G, D, H, W axes).

    Row (b, g, d, h, w) of the table is table[sum(index * stride)]. A view when the channel axis is innermost in
    memory (channels-last planes), else one contiguous copy."""
    c = volumes.shape[-1]
    order = sorted(range(6), key=lambda dim: -volumes.stride(dim) if volumes.shape[dim] > 1 else 0)
    order = [dim for dim in order if dim != 5] + [5]
    if volumes.stride(5) != 1 or not volumes.permute(order).is_contiguous():
        volumes = volumes.contiguous()
        order = list(range(6))
    table = volumes.permute(order).reshape(-1, c)
    return table, [volumes.stride(dim) // c for dim in range(5)]


def axis_corners(u: torch.Tensor, size: int, row_stride: int,
                 index_dtype=torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized coordinate u [...] -> (row offsets [2, ...], weights [2, ...]) of its two neighbours along an axis
    of `size` samples (align_corners=False); neighbours outside the axis get weight 0 (zero padding)."""
    pos = ((u + 1) * size - 1) / 2
    lower = torch.floor(pos)
    frac = pos - lower
    lower = lower.clamp(-2, size).to(index_dtype)  # farther out: both neighbours still outside (weight 0)
    index = torch.stack([lower, lower + 1])
    weight = torch.stack([1 - frac, frac])
    inside = (index >= 0) & (index < size)
    weight = weight * inside.to(weight.dtype)
    return index.clamp(0, size - 1) * row_stride, weight


def gather_group_mean(volumes: torch.Tensor, grid: torch.Tensor, interpolate_depth: bool = True) -> torch.Tensor:
    """Mean over groups of trilinear samples: volumes [B, G, D, H, W, C]; grid [B, G, M, 3] normalized
    (u_W, u_H, u_D) in [-1, 1] -> features [B, M, C]. interpolate_depth=False samples bilinearly in the d = 0 slice
    (tri-planes; u_D is ignored)."""
    b, g, d, h, w, c = volumes.shape
    m = grid.shape[2]
    table, (sb, sg, sd, sh, sw) = plane_rows(volumes)
    grid = grid.to(table.dtype)
    index_dtype = torch.int32 if table.shape[0] < 2 ** 31 else torch.long  # half the index traffic
    iw, ww = axis_corners(grid[..., 0], w, sw, index_dtype)
    ih, wh = axis_corners(grid[..., 1], h, sh, index_dtype)
    if interpolate_depth:
        idep, wdep = axis_corners(grid[..., 2], d, sd, index_dtype)
    else:
        idep = torch.zeros(1, b, g, m, dtype=index_dtype, device=grid.device)
        wdep = torch.ones(1, b, g, m, dtype=table.dtype, device=grid.device)
    base = ((torch.arange(b, device=grid.device) * sb).view(b, 1, 1)
            + (torch.arange(g, device=grid.device) * sg).view(1, g, 1))
    base = base.to(index_dtype)
    # Corner-major [depth, h, w, B, G, M] first (M innermost: broadcasting vectorizes along the points), then one
    # copy into the point-major [B * M, corners] layout the gather reads.
    index = (idep + base)[:, None, None] + (ih[:, None] + iw[None, :])[None]
    weight = wdep[:, None, None] * (wh[:, None] * ww[None, :] * (1 / g))[None]
    corners = g * index.shape[0] * 4
    index = index.permute(3, 5, 4, 0, 1, 2).reshape(b * m, corners)
    weight = weight.permute(3, 5, 4, 0, 1, 2).reshape(b * m, corners)
    out = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
    return out.view(b, m, c)
