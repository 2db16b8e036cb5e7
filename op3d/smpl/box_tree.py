"""Exact nearest-primitive search: a box tree over points or triangles, traversed with branch and bound."""

from __future__ import annotations

import torch

PAIR_BUDGET = 1 << 21
"""Most (point, node) pairs evaluated at once, here and in the inside test (winding.py); larger lists are split
(bounds memory, not results)."""

_ARITY = 4
"""Children per node of the box tree (a binary median-split tree read two levels at a time)."""

CHUNK = 8192
"""Points per traversal chunk."""

_FIELDS = 18
"""Numbers per tree node: box centre 3, box axes 9, half extents 3, rep point 3."""


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


class BoxTree:
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
    """Bounds for the children of ``node`` [P] (one level of ``BoxTree.levels``) seen from points q [3, P].

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


def nearest_primitive(points: torch.Tensor, tree: BoxTree, leaf_distance):
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
    for chunk in points.split(CHUNK):
        n = chunk.shape[0]
        coords = chunk.t().contiguous()
        slack = coords.abs().sum(0).mul_(8 * eps)
        upper = chunk.new_full((n,), float("inf"))
        leaf_pt, leaf_slot, leaf_lower = [], [], []
        stack = [(0, torch.arange(n, device=device), torch.zeros(n, dtype=torch.long, device=device))]
        while stack:
            depth, pt, node = stack.pop()
            if pt.numel() * _ARITY > PAIR_BUDGET:
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
