"""Inside test for closed triangle meshes: signed +z ray crossings, and solid-angle winding numbers where unsure."""

from __future__ import annotations

import torch

from op3d.smpl import box_tree

_RAY_TOLERANCE = 1e-10
"""Relative closeness to a projected edge or to the surface below which the crossing count is not trusted."""


def solid_angle_winding(points: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Generalized winding number [P]: sum over the triangles of their signed solid angle seen from the point / 4 pi.
    points: [P, 3], corners: [F, 3, 3], both float64; chunked over points."""
    out = []
    for p in points.split(max(1, box_tree.PAIR_BUDGET // max(1, corners.shape[0]))):
        a, b, c = (corners[:, k].unsqueeze(0) - p.unsqueeze(1) for k in range(3))
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        numerator = (a * torch.cross(b, c, dim=-1)).sum(-1)
        denominator = la * lb * lc + (a * b).sum(-1) * lc + (a * c).sum(-1) * lb + (b * c).sum(-1) * la
        out.append(2 * torch.atan2(numerator, denominator).sum(1) / (4 * torch.pi))
    return torch.cat(out) if out else points.new_zeros(0)


class RayGrid:
    """Triangles binned by their xy bounding box on a uniform grid over the mesh's xy extent (for rays along +z).

    corners: [F, 3, 3] float64. ``cell_start`` [cells + 1] and ``faces`` [entries] list the triangles of each cell."""

    def __init__(self, corners: torch.Tensor):
        f = corners.shape[0]
        self.corners = corners
        self.lo, self.hi = corners[..., :2].amin((0, 1)), corners[..., :2].amax((0, 1))
        self.size = max(1, int(f ** 0.5))
        margin = (self.hi - self.lo).amax() * _RAY_TOLERANCE * 4
        first = self._cell(corners[..., :2].amin(1) - margin)
        last = self._cell(corners[..., :2].amax(1) + margin)
        span = last - first + 1
        count = span[:, 0] * span[:, 1]
        face = torch.repeat_interleave(torch.arange(f, device=corners.device), count)
        k = torch.arange(face.numel(), device=corners.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
        ix = first[face, 0] + k % span[face, 0]
        iy = first[face, 1] + k // span[face, 0]
        cell = iy * self.size + ix
        order = torch.argsort(cell, stable=True)
        self.faces = face[order]
        self.cell_start = torch.zeros(self.size * self.size + 1, dtype=torch.long, device=corners.device)
        self.cell_start[1:] = torch.bincount(cell, minlength=self.size * self.size).cumsum(0)

    def _cell(self, xy: torch.Tensor) -> torch.Tensor:
        """Integer cell coordinates [..., 2] of xy [..., 2], clamped to the grid."""
        scaled = (xy - self.lo) / (self.hi - self.lo).clamp_min(torch.finfo(xy.dtype).tiny) * self.size
        return scaled.floor().clamp(0, self.size - 1).long()

    def crossings(self, p: torch.Tensor):
        """Signed crossing count [P] of the rays from p [P, 3] (float64) along +z (+1 where the triangle's xy
        projection is counter-clockwise) and a flag [P] for rays that pass within the tolerance of a projected edge or
        vertex, or points that lie on the surface, whose count is not trusted."""
        winding = torch.zeros(p.shape[0], dtype=torch.long, device=p.device)
        unsure = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
        inside = ((p[:, :2] >= self.lo) & (p[:, :2] <= self.hi)).all(1).nonzero().squeeze(1)
        cell_xy = self._cell(p[inside, :2])
        cell = cell_xy[:, 1] * self.size + cell_xy[:, 0]
        count = self.cell_start[cell + 1] - self.cell_start[cell]
        total = count.cumsum(0)
        start = 0
        while start < inside.numel():
            stop = int(torch.searchsorted(total, total[start] - count[start] + box_tree.PAIR_BUDGET, right=True))
            stop = max(stop, start + 1)
            n = count[start:stop]
            pair_point = torch.repeat_interleave(inside[start:stop], n)
            offset = torch.arange(int(n.sum()), device=p.device) - torch.repeat_interleave(n.cumsum(0) - n, n)
            face = self.faces[torch.repeat_interleave(self.cell_start[cell[start:stop]], n) + offset]
            hit, near = self._ray_triangle(p[pair_point], self.corners[face])
            winding.index_add_(0, pair_point, hit)
            unsure[pair_point[near]] = True
            start = stop
        return winding, unsure

    @staticmethod
    def _ray_triangle(p: torch.Tensor, t: torch.Tensor):
        """Signed crossing [P] int64 of the +z ray from p [P, 3] with triangles t [P, 3, 3], and a flag [P] where the
        ray passes within the tolerance of the projected boundary while inside the projection, or p lies on the
        triangle."""
        x, y = p[:, 0], p[:, 1]
        edge = []
        for i, j in ((0, 1), (1, 2), (2, 0)):
            ex, ey = t[:, j, 0] - t[:, i, 0], t[:, j, 1] - t[:, i, 1]
            rx, ry = x - t[:, i, 0], y - t[:, i, 1]
            value = ex * ry - ey * rx
            tolerance = _RAY_TOLERANCE * (ex.abs() + ey.abs()) * (ex.abs() + ey.abs() + rx.abs() + ry.abs())
            edge.append((value, tolerance))
        positive = torch.stack([v > tol for v, tol in edge]).all(0)
        negative = torch.stack([v < -tol for v, tol in edge]).all(0)
        outside = torch.stack([v > tol for v, tol in edge]).any(0) & torch.stack([v < -tol for v, tol in edge]).any(0)
        z = t[:, :, 2]
        weight = (edge[1][0], edge[2][0], edge[0][0])  # opposite-edge values = barycentric weights of a, b, c
        z_hit = (weight[0] * z[:, 0] + weight[1] * z[:, 1] + weight[2] * z[:, 2]) / (weight[0] + weight[1] + weight[2])
        z_tolerance = _RAY_TOLERANCE * (z.abs().amax(1) + p[:, 2].abs())
        strict = positive | negative
        on_surface = strict & ((z_hit - p[:, 2]).abs() <= z_tolerance)
        above = strict & (z_hit > p[:, 2] + z_tolerance)
        hit = torch.where(above, torch.where(positive, 1, -1), 0)
        return hit, (~strict & ~outside) | on_surface

