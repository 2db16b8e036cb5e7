"""Fast plane lookup on a shape-grid slab: all points with the same z index (an N x N sheet of the grid).

z is constant over a slab (also on the official float32 grid, whose x and y carry fractional offsets). So every
lookup axis that reads z is interpolated once per slab, which reduces each plane group by one dimension: an
orthoplane group becomes a 2-D image (the XY group: its two planes around z blended; the YZ and ZX groups: one
line of every plane blended), a tri-plane that reads z becomes a line. The reduced images of all groups are rows of
one table, and each point's remaining corners (4 per orthoplane group, 4 or 2 per tri-plane) are gathered in one
weighted row sum (`embedding_bag`) that also takes the group mean: 12 rows per point instead of 24.

Same function as the per-point trilinear lookup (align_corners=False, zero padding, grid_sample's float32 texel
positions from the same float32 normalized coordinates); only the order of the linear interpolations differs, so
results agree to rounding (float64: 1e-15).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F


def _texel_position(u: torch.Tensor, size) -> torch.Tensor:
    """Normalized coordinate -> texel position, grid_sample's align_corners=False rule (float32 like it)."""
    return ((u + 1) * size - 1) / 2


class SlabLookup:
    """Group-mean lookup of one shape-grid slab after another, for one set of planes.

    volumes [G, D, H, W, C] (any strides). sources[g]: for each lookup axis of group g (W, H, then D), the world
    axis it reads (0 = x, 1 = y, 2 = z) and the scale from world to normalized coordinates (the float32 product
    the reference lookup computes). interpolate_depth=False: tri-planes (D = 1, bilinear in the d = 0 slice;
    sources give W and H only).

    Each group's reduced image is stored with one zero texel before and two after every axis, so corners outside
    the plane read zero without masks (grid_sample's zero padding) and the upper corner index stays in range.
    Groups that do not read z are copied into the table once; the others are blended into it per slab. The table
    holds the texels divided by the number of groups (the mean's factor), so corner weights are plain products."""

    def __init__(self, volumes: torch.Tensor, sources, interpolate_depth: bool = True):
        n_groups, depth, height, width, channels = volumes.shape
        n_axes = 3 if interpolate_depth else 2
        if len(sources) != n_groups or any(len(group) != n_axes for group in sources):
            raise ValueError(f"sources needs {n_axes} (world axis, scale) pairs for each of {n_groups} groups")
        self.sizes = (width, height, depth)
        volumes = volumes if interpolate_depth else volumes[:, 0]
        self.volumes, self.blends, self.groups = [], [], []
        per_point = []  # (world axis, scale, size, row stride) of every axis interpolated per point
        rows = corners = 0
        for g, group in enumerate(sources):
            z_axes = [axis for axis, (world, _) in enumerate(group) if world == 2]
            if len(z_axes) > 1:
                raise ValueError(f"group {g} reads z on more than one axis: {group}")
            if z_axes:  # blended once per slab: a contiguous copy (of texels / groups) makes those reads sequential
                self.blends.append((g, z_axes[0], group[z_axes[0]][1]))
            self.volumes.append((volumes[g] / n_groups).contiguous() if z_axes else volumes[g])
            remaining = [axis for axis in range(n_axes) if axis not in z_axes]
            bordered = [self.sizes[axis] + 3 for axis in remaining]
            first = len(per_point)
            per_point += [(*group[axis], self.sizes[axis], math.prod(bordered[:n])) for n, axis in enumerate(remaining)]
            self.groups.append((rows, corners, range(first, len(per_point)), bordered[::-1], remaining))
            rows += math.prod(bordered)
            corners += 2 ** len(remaining)
        self.corners_per_point = corners
        self.strides = [stride for *_, stride in per_point]
        device = volumes.device
        self.axis_world = torch.tensor([world for world, *_ in per_point], device=device)
        self.axis_scales = torch.tensor([[scale] for _, scale, *_ in per_point], dtype=volumes.dtype, device=device)
        self.axis_sizes = torch.tensor([[size] for _, _, size, _ in per_point], dtype=volumes.dtype, device=device)
        self.axis_strides = torch.tensor([[stride] for *_, stride in per_point], dtype=torch.int32, device=device)
        self.table = volumes.new_zeros(rows, channels)
        blended = {g for g, _, _ in self.blends}
        for g in range(n_groups):
            if g not in blended:
                torch.div(self.volumes[g], n_groups, out=self._interior(g))

    def fork(self) -> "SlabLookup":
        """A lookup that shares this one's plane volumes and has a table of its own, for another thread."""
        other = copy.copy(self)
        other.table = self.table.clone()
        return other

    def _interior(self, g: int) -> torch.Tensor:
        """The texels of group g's reduced image inside the table (a view without the zero border)."""
        start, _, _, shape, remaining = self.groups[g]
        image = self.table[start:start + math.prod(shape)].view(*shape, -1)
        return image[tuple(slice(1, 1 + self.sizes[axis]) for axis in reversed(remaining))]

    def _blend(self, g: int, z_axis: int, u: torch.Tensor) -> None:
        """Interpolate group g along lookup axis z_axis at the normalized coordinate u (0-d) into its table rows."""
        volume = self.volumes[g]
        dim = volume.ndim - 2 - z_axis  # W is the second-last dim, H before it, D first
        size = self.sizes[z_axis]
        lower = torch.floor(_texel_position(u, size))
        frac = _texel_position(u, size) - lower
        low, high = int(lower), int(lower) + 1
        out = self._interior(g)
        if 0 <= low and high < size:
            torch.lerp(volume.select(dim, low), volume.select(dim, high), frac, out=out)
        elif 0 <= low < size:
            torch.mul(volume.select(dim, low), 1 - frac, out=out)
        elif 0 <= high < size:
            torch.mul(volume.select(dim, high), frac, out=out)
        else:
            out.zero_()

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """points [M, 3] world coordinates of one slab (z constant) -> group-mean features [M, C]."""
        # Normalized coordinates as the reference computes them: in the points' dtype, then the planes'.
        z = points[:, 2]
        if self.blends and not bool((z == z[0]).all()):
            raise ValueError("SlabLookup needs points whose z is constant (one slab of the shape grid)")
        for g, z_axis, scale in self.blends:
            self._blend(g, z_axis, (z[0] * scale).to(self.table.dtype))
        u = points.t().index_select(0, self.axis_world).mul_(self.axis_scales.to(points.dtype))
        u = u.to(self.table.dtype)
        # Both neighbours along every per-point axis: grid_sample's texel position, clamped so that points
        # beyond the plane read two border texels.
        position = torch.minimum(_texel_position(u, self.axis_sizes).clamp_(min=-1.0), self.axis_sizes)
        lower = torch.floor(position)
        upper_weight = position.sub_(lower)
        lower_weight = 1 - upper_weight
        row = lower.int().add_(1).mul_(self.axis_strides)
        m = points.shape[0]
        index = torch.empty(m, self.corners_per_point, dtype=torch.int32, device=points.device)
        weight = torch.empty(m, self.corners_per_point, dtype=u.dtype, device=points.device)
        for start, first, axes, _, _ in self.groups:
            # Corner c of the group: bit n of c set = upper neighbour along its n-th per-point axis. The factors
            # of all but the last axis are multiplied first, the last one while writing the weights.
            group_row = row[axes[0]] + start
            offsets, factors = [0], [None]  # None: no factor yet
            for n in axes:
                if n != axes[0]:
                    group_row += row[n]
                offsets = offsets + [offset + self.strides[n] for offset in offsets]
            for n in axes[:-1]:
                factors = [lower_weight[n] if f is None else f * lower_weight[n] for f in factors] + \
                          [upper_weight[n] if f is None else f * upper_weight[n] for f in factors]
            last = [lower_weight[axes[-1]]] * len(factors) + [upper_weight[axes[-1]]] * len(factors)
            for corner, (offset, factor, last_factor) in enumerate(zip(offsets, factors * 2, last), start=first):
                torch.add(group_row, offset, out=index[:, corner])
                if factor is None:
                    weight[:, corner] = last_factor
                else:
                    torch.mul(last_factor, factor, out=weight[:, corner])
        return F.embedding_bag(index, self.table, per_sample_weights=weight, mode="sum")
