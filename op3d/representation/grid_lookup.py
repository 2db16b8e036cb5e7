"""Fast plane lookup on a shape-grid slab: all points with the same z index (an N x N sheet of the grid).

On such a slab a plane group's three lookup axes read world x, y and z, and the shape grid makes z constant over
the slab and y constant along each grid line j (also for the official float32 grid, whose x carries fractional
offsets). So each group is interpolated one axis at a time: the z axis once per slab, the y axis once per line,
and only the x axis per point, two taps each, instead of eight corners with their weights per point. The order
of the three linear interpolations differs from grid_sample's, nothing else (same float32 texel positions).
`slab_structure` checks the constancy on the actual points; callers fall back to the per-point lookup otherwise.
"""

from __future__ import annotations

import torch


def slab_structure(points: torch.Tensor) -> bool:
    """points [J, I, 3] (one slab, lines j of points i) -> True if z is constant and y constant along each line."""
    return bool((points[..., 2] == points[0, 0, 2]).all() and (points[..., 1] == points[:, :1, 1]).all())


def _texel_position(u: torch.Tensor, size: int) -> torch.Tensor:
    """Normalized coordinate -> texel position, grid_sample's align_corners=False rule (float32 like it)."""
    return ((u + 1) * size - 1) / 2


def pad_volume(volume: torch.Tensor, interpolate_depth: bool = True) -> torch.Tensor:
    """volume [D, H, W, C] -> [D + 2, H + 2, W + 2, C] with a border of zero texels (D unpadded for tri-planes),
    so that interpolation needs no masks: a neighbour outside the plane reads zero, as grid_sample's zero
    padding does."""
    pad = [0, 0, 1, 1, 1, 1] + ([1, 1] if interpolate_depth else [0, 0])
    return torch.nn.functional.pad(volume, pad)


def _neighbours(u: torch.Tensor, size: int):
    """Lower neighbour index in a zero-bordered axis of `size` texels (clamped to the border) and the fraction."""
    pos = _texel_position(u, size)
    lower = torch.floor(pos)
    frac = pos - lower
    return (lower.long() + 1).clamp(0, size + 1), (lower.long() + 2).clamp(0, size + 1), frac


def _lerp_constant(t: torch.Tensor, dim: int, u: torch.Tensor, size: int) -> torch.Tensor:
    """Interpolate axis `dim` of t at one coordinate (0-d tensor): the axis disappears."""
    lo, hi, frac = _neighbours(u, size)
    return torch.lerp(t.select(dim, int(lo)), t.select(dim, int(hi)), frac)


def _lerp_lines(t: torch.Tensor, dim: int, u: torch.Tensor, size: int) -> torch.Tensor:
    """Interpolate axis `dim` of t at J coordinates u [J]: the axis is replaced by a leading line axis J."""
    lo, hi, frac = _neighbours(u, size)
    shape = [-1] + [1] * (t.ndim - 1)
    return torch.lerp(t.index_select(dim, lo).movedim(dim, 0), t.index_select(dim, hi).movedim(dim, 0),
                      frac.view(shape))


def _lerp_points(t: torch.Tensor, u: torch.Tensor, size: int) -> torch.Tensor:
    """t [J, L, C] (one axis of L texels per line), u [J, I] -> [J, I, C]."""
    lo, hi, frac = _neighbours(u, size)
    j, length, c = t.shape
    rows = t.reshape(j * length, c)
    line_start = (torch.arange(j, device=t.device) * length).view(j, 1)
    low = rows.index_select(0, (lo + line_start).reshape(-1))
    high = rows.index_select(0, (hi + line_start).reshape(-1))
    return torch.lerp(low, high, frac.reshape(-1, 1)).view(j, -1, c)


def slab_group_sample(volume: torch.Tensor, grid: torch.Tensor, world_axes: tuple[int, int, int],
                      interpolate_depth: bool = True) -> torch.Tensor:
    """Trilinear samples of one group on one slab.

    volume [D + 2, H + 2, W + 2, C] from pad_volume; grid [J, I, 3] normalized (u_W, u_H, u_D) of the slab's
    points; world_axes: the world axis (0 = x, varies per point; 1 = y, per line; 2 = z, per slab) each of (W, H, D)
    reads. interpolate_depth=False: tri-plane (D = 1, u_D ignored). Returns [J, I, C]."""
    dims = {0: 2, 1: 1, 2: 0}  # lookup axis -> dim of `volume`
    t = volume
    if not interpolate_depth:
        t = t[0]
        dims = {0: 1, 1: 0}
    sizes = {axis: t.shape[dim] - 2 for axis, dim in dims.items()}
    by_world = {world_axes[axis]: axis for axis in dims}
    if 2 in by_world:  # constant over the slab
        axis = by_world[2]
        t = _lerp_constant(t, dims[axis], grid[0, 0, axis], sizes[axis])
        dims = {a: d - (d > dims[axis]) for a, d in dims.items() if a != axis}
    if 1 in by_world:  # one coordinate per line
        axis = by_world[1]
        t = _lerp_lines(t, dims[axis], grid[:, 0, axis], sizes[axis])
    else:  # no lookup axis reads y: the same texels for every line
        t = t.unsqueeze(0).expand(grid.shape[0], *t.shape)
    t = t.reshape(grid.shape[0], -1, t.shape[-1])
    axis = by_world[0]
    return _lerp_points(t, grid[..., axis], sizes[axis])
