"""Triangle-mesh geometry for the SMPL-conditional generator (spec 4.3, steps 4.b and 4.e), in plain PyTorch.

Nearest vertex (pytorch3d ``knn_points`` with K = 1), closest-point squared distance to a triangle mesh, inside test and
their combination, the signed squared distance ``sdf_zero`` (kaolin semantics as defined in the shhq_cond_k8 fixture
README). Exact: spatial culling only skips primitives that provably cannot reach the minimum, so every result equals the
all-pairs evaluation. ``backend="auto"`` hands a call to pytorch3d / kaolin when they are importable, ``"plain"`` never.
The plain path's parts: ``box_tree`` (the search), ``triangles`` (point-triangle distance), ``winding`` (inside test).
"""

from __future__ import annotations

import importlib

import torch

from op3d.smpl.box_tree import BoxTree, nearest_primitive
from op3d.smpl.triangles import point_triangle
from op3d.smpl.winding import RayGrid, solid_angle_winding


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
        tree = BoxTree(v.unsqueeze(1), p.dtype, p.device)

        def leaf(q, i, v=v):
            return _squared_norm(q - v[i]), i

        d, i, _ = nearest_primitive(p, tree, leaf)
        dist.append(d)
        index.append(i)
    return torch.stack(dist), torch.stack(index)


def index_vertices_by_faces(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-face corner features (kaolin ``index_vertices_by_faces``): vertices [B, V, C], faces [F, 3] int ->
    [B, F, 3, C] with out[b, f, k] = vertices[b, faces[f, k]]."""
    _check_faces(faces, vertices.shape[1])
    return vertices[:, faces.long()]


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
            return point_triangle(list(q.to(exact).t()), list(c[0]), list(c[1]), list(c[2]))

        d, i, k = nearest_primitive(p, BoxTree(fv, p.dtype, p.device), leaf)
        dist.append(d.to(points.dtype))
        index.append(i)
        kind.append(k)
    return torch.stack(dist), torch.stack(index), torch.stack(kind)


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
        grid = RayGrid(v.to(exact)[faces.long()])
        p = p.to(exact)
        winding, unsure = grid.crossings(p)
        inside = winding != 0
        unsure = unsure.nonzero().squeeze(1)
        inside[unsure] = solid_angle_winding(p[unsure], grid.corners).abs() > 0.5
        result.append(inside)
    return torch.stack(result)


def signed_squared_distance(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                            backend: str = "auto") -> torch.Tensor:
    """The official ``sdf_zero``: squared distance to the mesh, negated inside (no square root), [B, N] in points'
    dtype. points: [B, N, 3], vertices: [B, V, 3], faces: [F, 3] int (closed, outward oriented)."""
    squared, _, _ = point_to_mesh_squared_distance(points, index_vertices_by_faces(vertices, faces), backend)
    return torch.where(inside_mesh(vertices, faces, points, backend), -squared, squared)
