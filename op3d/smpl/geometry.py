"""Triangle-mesh geometry for the SMPL-conditional generator (spec 4.3, steps 4.b and 4.e), in plain PyTorch.

Nearest vertex (pytorch3d ``knn_points`` with K = 1), closest-point squared distance to a triangle mesh, inside test and
their combination, the signed squared distance ``sdf_zero`` (kaolin semantics as defined in the shhq_cond_k8 fixture
README). Exact: spatial culling only skips primitives that provably cannot reach the minimum, so every result equals the
all-pairs evaluation. ``backend="auto"`` hands a call to pytorch3d / kaolin when they are importable, ``"plain"`` never.
"""

from __future__ import annotations

import importlib

import torch

_PAIR_BUDGET = 1 << 21
"""Most (point, node) pairs evaluated at once; larger lists are split (bounds memory, not results)."""

_ARITY = 4
"""Children per node of the box tree (a binary median-split tree read two levels at a time)."""

_CHUNK = 8192
"""Points per traversal chunk."""

_FIELDS = 18
"""Numbers per tree node: box centre 3, box axes 9, half extents 3, rep point 3."""

_RAY_TOLERANCE = 1e-10
"""Relative closeness to a projected edge or to the surface below which the crossing count is not trusted."""


def _external(module: str, name: str, backend: str):
    """``module.name`` when ``backend`` is "auto" and the module imports, else None (``backend="plain"``)."""
    if backend not in ("auto", "plain"):
        raise ValueError(f"backend must be 'auto' or 'plain', got {backend!r}")
    if backend == "plain":
        return None
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def _exact_dtype(device: torch.device) -> torch.dtype:
    """float64, except on MPS which has none (float32 there: results may differ from float64 in the last bit)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_points(name: str, x: torch.Tensor, batch: int | None = None):
    if x.ndim != 3 or x.shape[-1] != 3 or (batch is not None and x.shape[0] != batch):
        expected = f"[{batch if batch is not None else 'B'}, N, 3]"
        raise ValueError(f"{name}: expected shape {expected}, got {list(x.shape)}")


def _check_faces(faces: torch.Tensor, num_vertices: int):
    if faces.ndim != 2 or faces.shape[-1] != 3 or faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"faces: expected an integer tensor [F, 3], got {faces.dtype} {list(faces.shape)}")
    if faces.numel() and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ValueError(f"faces: indices must lie in [0, {num_vertices}), got [{faces.min()}, {faces.max()}]")


def _squared_norm(d: torch.Tensor) -> torch.Tensor:
    """(dx^2 + dy^2) + dz^2 of d [..., 3], in this order (pytorch3d's knn sum)."""
    return (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) + d[..., 2] * d[..., 2]


def _median_split_order(centres: torch.Tensor, slots: int) -> torch.Tensor:
    """Leaf order of a balanced binary tree: each node's primitives are split at the median of its widest axis.

    centres: [n, 3] with n <= slots (a power of two). Returns [slots] int64: slot -> primitive index, values >= n
    are padding (kept in the last slots)."""
    n = centres.shape[0]
    key = torch.cat((centres, centres.new_full((slots - n, 3), float("inf"))))
    order = torch.arange(slots, device=centres.device)
    segments = 1
    while segments < slots:
        x = key[order].view(segments, -1, 3)
        finite = torch.isfinite(x[..., :1])
        extent = torch.where(finite, x, float("-inf")).amax(1) - torch.where(finite, x, float("inf")).amin(1)
        axis = extent.nan_to_num(-1.0).argmax(1)
        coordinate = x.gather(2, axis.view(-1, 1, 1).expand(-1, x.shape[1], 1)).squeeze(2)
        order = order.view(segments, -1).gather(1, coordinate.argsort(dim=1, stable=True)).reshape(-1)
        segments *= 2
    return order


class _BoxTree:
    """Complete ``_ARITY``-ary tree of oriented bounding boxes over primitives given by their corner points.

    corners: [n, c, 3] (c = 1 for vertices, 3 for triangles). The leaves are the primitives in ``order`` ([slots] int64,
    slot -> primitive, >= n: padding). Node i of depth t has children ARITY * i + j; ``levels[t]`` [FIELDS * ARITY,
    ARITY**t] holds the children of the nodes of depth t (row k * ARITY + j = field k of child j): box centre (3), box
    axes (3 rows of 3: principal axes of the child's corners), half extents (3), grown by the rounding margin of the
    centre and the axes, and a rep point (3): the corner of the child closest to its centre, whose distance bounds the
    child's minimum from above. Padding children have half extents -inf and rep +inf. Built in float64 on the CPU,
    stored in ``dtype``."""

    def __init__(self, corners: torch.Tensor, dtype: torch.dtype, device: torch.device):
        corners = corners.detach().to("cpu", torch.float64)
        n = corners.shape[0]
        depth = 1
        while _ARITY ** depth < n:
            depth += 1
        slots = _ARITY ** depth
        self.order = _median_split_order(corners.mean(1), slots)
        eps = torch.finfo(dtype).eps
        self.levels = []
        for t in range(depth):
            index = self.order.view(_ARITY ** (t + 1), -1)
            used = (index < n).repeat_interleave(corners.shape[1], 1).unsqueeze(-1)
            points = corners[index.clamp_max(n - 1)].reshape(index.shape[0], -1, 3)
            centre = (points * used).sum(1) / used.sum(1).clamp_min(1)
            offset = (points - centre.unsqueeze(1)) * used
            axes = torch.linalg.eigh(offset.transpose(1, 2) @ offset).eigenvectors.transpose(1, 2)
            centre, axes = centre.to(dtype).double(), axes.to(dtype).double()
            local = torch.einsum("nkc,npc->npk", axes, points - centre.unsqueeze(1)).abs()
            half = torch.where(used, local, float("-inf")).amax(1)
            half = half * (1 + 4 * eps) + 8 * eps * centre.abs().sum(1, keepdim=True)
            closest = torch.where(used, points - centre.unsqueeze(1), float("inf")).square().sum(-1).argmin(1)
            rep = torch.where(used.any(1), points[torch.arange(points.shape[0]), closest], float("inf"))
            fields = torch.cat((centre, axes.reshape(-1, 9), half, rep), 1).view(-1, _ARITY, _FIELDS)
            self.levels.append(fields.permute(2, 1, 0).reshape(_FIELDS * _ARITY, -1).to(device, dtype).contiguous())
        self.order = self.order.to(device)


def _child_bounds(level: torch.Tensor, node: torch.Tensor, q: torch.Tensor, slack: torch.Tensor):
    """Bounds for the children of ``node`` [P] (one level of ``_BoxTree.levels``) seen from points q [3, P].

    Returns (lower [ARITY, P]: squared distance to each child's oriented box grown by the points' rounding margin
    slack [P], never above the squared distance to any primitive of the child up to a few ulps; upper [P]: squared
    distance to the closest rep point of the children)."""
    f = level.index_select(1, node).view(_FIELDS, _ARITY, -1)
    d = [f[k] - q[k] for k in range(3)]
    lower = None
    for k in range(3):
        u = f[3 + 3 * k] * d[0]
        u += f[4 + 3 * k] * d[1]
        u += f[5 + 3 * k] * d[2]
        gap = u.abs_().sub_(f[12 + k]).sub_(slack).clamp_min_(0).square_()
        lower = gap if lower is None else lower.add_(gap)
    rep = [(f[15 + k] - q[k]).square_() for k in range(3)]
    return lower, rep[0].add_(rep[1]).add_(rep[2]).amin(0)


def _nearest_primitive(points: torch.Tensor, tree: _BoxTree, leaf_distance):
    """Minimum of ``leaf_distance`` over all primitives of ``tree`` for each point, by branch and bound.

    points: [N, 3]. leaf_distance(points [P, 3], primitive index [P]) -> (value [P], extra [P]) is the squared distance
    to the primitive (and any per-pair result). Returns (value [N], primitive index [N] int64, extra [N]); ties ->
    lowest primitive index. Level by level, a child is dropped only when its box distance exceeds the point's upper
    bound (closest rep point seen so far) by a relative margin covering the rounding of both, so the result is that of
    the all-pairs evaluation."""
    device = points.device
    eps = torch.finfo(points.dtype).eps
    keep_factor = 1 + 64 * eps
    values, indices, extras = [], [], []
    for chunk in points.split(_CHUNK):
        n = chunk.shape[0]
        coords = chunk.t().contiguous()
        slack = coords.abs().sum(0).mul_(8 * eps)
        upper = chunk.new_full((n,), float("inf"))
        leaf_pt, leaf_slot, leaf_lower = [], [], []
        stack = [(0, torch.arange(n, device=device), torch.zeros(n, dtype=torch.long, device=device))]
        while stack:
            depth, pt, node = stack.pop()
            if pt.numel() * _ARITY > _PAIR_BUDGET:
                half = pt.numel() // 2
                stack += [(depth, pt[half:], node[half:]), (depth, pt[:half], node[:half])]
                continue
            lower, rep = _child_bounds(tree.levels[depth], node, coords.index_select(1, pt), slack.index_select(0, pt))
            upper.scatter_reduce_(0, pt, rep, "amin")
            j, i = (lower <= upper.index_select(0, pt).mul_(keep_factor)).nonzero(as_tuple=True)
            pt, node = pt.index_select(0, i), node.index_select(0, i) * _ARITY + j
            if depth + 1 < len(tree.levels):
                stack.append((depth + 1, pt, node))
            else:
                leaf_pt.append(pt)
                leaf_slot.append(node)
                leaf_lower.append(lower[j, i])
        pt, lower = torch.cat(leaf_pt), torch.cat(leaf_lower)
        prim = tree.order.index_select(0, torch.cat(leaf_slot))
        # Evaluate first the leaf of smallest box distance of each point: its exact distance is a tighter upper bound.
        least = lower.new_full((n,), float("inf")).scatter_reduce_(0, pt, lower, "amin")
        pair = torch.arange(pt.numel(), device=device)
        first = torch.full((n,), pt.numel(), dtype=torch.long, device=device).scatter_reduce_(
            0, pt, torch.where(lower == least.index_select(0, pt), pair, pt.numel()), "amin")
        value, _ = leaf_distance(chunk, prim.index_select(0, first))
        upper = torch.minimum(upper, value.to(points.dtype) * keep_factor)
        rest = lower <= upper.index_select(0, pt) * keep_factor
        pt, prim = pt[rest], prim[rest]
        value, extra = leaf_distance(chunk.index_select(0, pt), prim)
        best = value.new_full((n,), float("inf")).scatter_reduce_(0, pt, value, "amin")
        tied = value == best.index_select(0, pt)
        index = torch.full((n,), torch.iinfo(torch.int64).max, dtype=torch.long, device=device)
        index.scatter_reduce_(0, pt[tied], prim[tied], "amin")
        won = tied & (prim == index.index_select(0, pt))
        kind = extra.new_zeros((n,))
        kind[pt[won]] = extra[won]
        values.append(best)
        indices.append(index)
        extras.append(kind)
    return torch.cat(values), torch.cat(indices), torch.cat(extras)


def nearest_vertices(points: torch.Tensor, vertices: torch.Tensor, backend: str = "auto"):
    """Nearest vertex of each point (pytorch3d ``knn_points`` with K = 1).

    points: [B, N, 3], vertices: [B, V, 3], same floating dtype. Returns (squared distance [B, N] in that dtype,
    computed as (dx^2 + dy^2) + dz^2; vertex index [B, N] int64, ties -> lowest index)."""
    _check_points("points", points)
    _check_points("vertices", vertices, points.shape[0])
    knn_points = _external("pytorch3d.ops", "knn_points", backend)
    if knn_points is not None:
        result = knn_points(points, vertices, K=1)
        return result.dists[..., 0], result.idx[..., 0]
    dist, index = [], []
    for p, v in zip(points, vertices):
        tree = _BoxTree(v.unsqueeze(1), p.dtype, p.device)

        def leaf(q, i, v=v):
            return _squared_norm(q - v[i]), i

        d, i, _ = _nearest_primitive(p, tree, leaf)
        dist.append(d)
        index.append(i)
    return torch.stack(dist), torch.stack(index)


def index_vertices_by_faces(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-face corner features (kaolin ``index_vertices_by_faces``): vertices [B, V, C], faces [F, 3] int ->
    [B, F, 3, C] with out[b, f, k] = vertices[b, faces[f, k]]."""
    _check_faces(faces, vertices.shape[1])
    return vertices[:, faces.long()]


def _dot(u: list, v: list) -> torch.Tensor:
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]


def _segment_squared_distance(p: list, u: list, v: list) -> torch.Tensor:
    """Squared distance from points p to segments [u, v] (lists of 3 components [P]); the endpoints are first put in
    lexicographic order, so that the two triangles sharing an edge give bitwise equal values."""
    swap = (u[0] > v[0]) | ((u[0] == v[0]) & ((u[1] > v[1]) | ((u[1] == v[1]) & (u[2] > v[2]))))
    u, v = [torch.where(swap, y, x) for x, y in zip(u, v)], [torch.where(swap, x, y) for x, y in zip(u, v)]
    e = [y - x for x, y in zip(u, v)]
    w = [q - x for q, x in zip(p, u)]
    t = (_dot(w, e) / _dot(e, e).clamp_min(torch.finfo(e[0].dtype).tiny)).clamp_(0, 1)
    r = [a - t * b for a, b in zip(w, e)]
    return (r[0] * r[0] + r[1] * r[1]) + r[2] * r[2]


def _point_triangle(p: list, a: list, b: list, c: list):
    """Squared distance [P] from points p to triangles (a, b, c) (each a list of 3 components [P]) and the kind [P]
    int32 of the closest point: 0 interior, 1 / 2 / 3 vertex a / b / c, 4 / 5 / 6 edge ab / bc / ca, from the
    Voronoi-region classification of p with the dot products d1..d6 of the edges ab, ac with the vectors from the
    corners to p. Vertex and edge distances are computed from that vertex or edge alone (equal for adjacent faces)."""
    ab = [y - x for x, y in zip(a, b)]
    ac = [y - x for x, y in zip(a, c)]
    ap, bp, cp = ([q - x for q, x in zip(p, corner)] for corner in (a, b, c))
    d1, d2, d3, d4, d5, d6 = _dot(ab, ap), _dot(ac, ap), _dot(ab, bp), _dot(ac, bp), _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    regions = (  # (kind, membership), the first match wins
        (1, (d1 <= 0) & (d2 <= 0)), (2, (d3 >= 0) & (d4 <= d3)), (4, (vc <= 0) & (d1 >= 0) & (d3 <= 0)),
        (3, (d6 >= 0) & (d5 <= d6)), (6, (vb <= 0) & (d2 >= 0) & (d6 <= 0)), (5, (va <= 0) & (d4 >= d3) & (d5 >= d6)))
    kind = torch.zeros(d1.shape, dtype=torch.int32, device=d1.device)
    for k, member in reversed(regions):
        kind = torch.where(member, k, kind)
    normal = [ab[1] * ac[2] - ab[2] * ac[1], ab[2] * ac[0] - ab[0] * ac[2], ab[0] * ac[1] - ab[1] * ac[0]]
    height = _dot(normal, ap)
    dist = height * height / _dot(normal, normal).clamp_min(torch.finfo(d1.dtype).tiny)
    corner = [torch.where(kind == 1, x, torch.where(kind == 2, y, z)) for x, y, z in zip(ap, bp, cp)]
    corner_dist = (corner[0] * corner[0] + corner[1] * corner[1]) + corner[2] * corner[2]
    dist = torch.where((kind >= 1) & (kind <= 3), corner_dist, dist)
    start = [torch.where(kind == 4, x, torch.where(kind == 5, y, z)) for x, y, z in zip(a, b, c)]
    end = [torch.where(kind == 4, y, torch.where(kind == 5, z, x)) for x, y, z in zip(a, b, c)]
    return torch.where(kind >= 4, _segment_squared_distance(p, start, end), dist), kind


def point_to_mesh_squared_distance(points: torch.Tensor, face_vertices: torch.Tensor, backend: str = "auto"):
    """Squared distance from each point to the closest point of a triangle mesh (kaolin ``point_to_mesh_distance``).

    points: [B, N, 3]; face_vertices: [B, F, 3, 3] (see ``index_vertices_by_faces``). Returns (squared distance
    [B, N] in points' dtype, evaluated in float64 and rounded once; face index [B, N] int64, ties -> lowest index;
    kind [B, N] int32 of the closest point: 0 interior, 1 / 2 / 3 vertex a / b / c, 4 / 5 / 6 edge ab / bc / ca)."""
    _check_points("points", points)
    if face_vertices.ndim != 4 or face_vertices.shape[0] != points.shape[0] or face_vertices.shape[2:] != (3, 3):
        raise ValueError(f"face_vertices: expected shape [{points.shape[0]}, F, 3, 3], got {list(face_vertices.shape)}")
    kaolin_distance = _external("kaolin.metrics.trianglemesh", "point_to_mesh_distance", backend)
    if kaolin_distance is not None:
        return kaolin_distance(points, face_vertices)
    exact = _exact_dtype(points.device)
    dist, index, kind = [], [], []
    for p, fv in zip(points, face_vertices):
        fv = fv.to(points.dtype)
        corners = fv.to(exact).permute(1, 2, 0).contiguous()  # [3 corners, 3 coordinates, F]

        def leaf(q, f, corners=corners):
            c = corners.index_select(2, f)
            return _point_triangle(list(q.to(exact).t()), list(c[0]), list(c[1]), list(c[2]))

        d, i, k = _nearest_primitive(p, _BoxTree(fv, p.dtype, p.device), leaf)
        dist.append(d.to(points.dtype))
        index.append(i)
        kind.append(k)
    return torch.stack(dist), torch.stack(index), torch.stack(kind)


def _solid_angle_winding(points: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Generalized winding number [P]: sum over the triangles of their signed solid angle seen from the point / 4 pi.
    points: [P, 3], corners: [F, 3, 3], both float64; chunked over points."""
    out = []
    for p in points.split(max(1, _PAIR_BUDGET // max(1, corners.shape[0]))):
        a, b, c = (corners[:, k].unsqueeze(0) - p.unsqueeze(1) for k in range(3))
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        numerator = (a * torch.cross(b, c, dim=-1)).sum(-1)
        denominator = la * lb * lc + (a * b).sum(-1) * lc + (a * c).sum(-1) * lb + (b * c).sum(-1) * la
        out.append(2 * torch.atan2(numerator, denominator).sum(1) / (4 * torch.pi))
    return torch.cat(out) if out else points.new_zeros(0)


class _RayGrid:
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
            stop = int(torch.searchsorted(total, total[start] - count[start] + _PAIR_BUDGET, right=True))
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


def inside_mesh(vertices: torch.Tensor, faces: torch.Tensor, points: torch.Tensor,
                backend: str = "auto") -> torch.Tensor:
    """Whether each point is inside a closed triangle mesh (kaolin ``check_sign``): bool [B, N], True = inside.

    vertices: [B, V, 3], faces: [F, 3] int, points: [B, N, 3]. Inside = the winding number of the surface around
    the point is non-zero, counted in float64 as signed crossings of the ray from the point along +z; rays passing
    within a relative 1e-10 of a projected edge or vertex, and points on the surface, use the generalized winding
    number (|sum of solid angles| / 4 pi > 1/2) instead. Equals kaolin's odd-crossing rule wherever the winding number
    is 0 or +-1 (any closed surface without self-intersections)."""
    _check_points("points", points)
    _check_points("vertices", vertices, points.shape[0])
    _check_faces(faces, vertices.shape[1])
    check_sign = _external("kaolin.ops.mesh", "check_sign", backend)
    if check_sign is not None:
        return check_sign(vertices, faces, points)
    exact = _exact_dtype(points.device)
    result = []
    for v, p in zip(vertices, points):
        grid = _RayGrid(v.to(exact)[faces.long()])
        p = p.to(exact)
        winding, unsure = grid.crossings(p)
        inside = winding != 0
        unsure = unsure.nonzero().squeeze(1)
        inside[unsure] = _solid_angle_winding(p[unsure], grid.corners).abs() > 0.5
        result.append(inside)
    return torch.stack(result)


def signed_squared_distance(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                            backend: str = "auto") -> torch.Tensor:
    """The official ``sdf_zero``: squared distance to the mesh, negated inside (no square root), [B, N] in points'
    dtype. points: [B, N, 3], vertices: [B, V, 3], faces: [F, 3] int (closed, outward oriented)."""
    squared, _, _ = point_to_mesh_squared_distance(points, index_vertices_by_faces(vertices, faces), backend)
    return torch.where(inside_mesh(vertices, faces, points, backend), -squared, squared)
