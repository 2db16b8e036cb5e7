"""Squared distance from points to triangles, with the kind of closest point (vertex, edge or interior)."""

from __future__ import annotations

import torch


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


def point_triangle(p: list, a: list, b: list, c: list):
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

