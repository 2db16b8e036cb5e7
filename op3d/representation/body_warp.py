"""From render-space points to the canonical (rest-pose) frame of an SMPL body, and the body's signed squared
distance (spec 4.3.4 a-e). No gradient flows through any of this: it only decides where the planes are read.

Frames:
* render frame: the sample points x of the conditional renderer (rays already rotated by R_x(pi));
* body frame: p = (2 / box_warp) x, then p_y -= 0.15 (the frame of the pose condition's `vertices` and
  `fk_matrices`, see spec 4.2);
* canonical frame: p mapped back to the rest pose by the blended inverse skinning transform of its nearest posed
  vertex (or, for points far from the body, by the inverse root transform only), then x / 1.2, (y + 0.3) / 1.2.

Pose conditions (batched dict, official keys): vertices [B, V, 3] posed, fk_matrices [B, 24, 4, 4], lbs_weights
[B, V, 24], full_pose [B, 24, 3, 3], body_shape [B, 10].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from op3d.smpl.geometry import nearest_vertices, signed_squared_distance
from op3d.smpl.lbs import blended_inverse_transforms

BODY_Y_OFFSET = 0.15
"""Body frame y = render frame y * 2 / box_warp - 0.15."""
CANONICAL_SCALE = 1.2
CANONICAL_Y_OFFSET = 0.3
"""Canonical coordinates: x / 1.2, (y + 0.3) / 1.2, z, so that the rest body fits the [-1, 1] plane cube."""
FAR_SQUARED_DISTANCE = 0.1
"""Points whose nearest posed vertex is at least this far (squared distance, as the official code compares it) are
unskinned with the root transform only."""

POSE_CONDITION_SHAPES = {"vertices": ("V", 3), "fk_matrices": (24, 4, 4), "lbs_weights": ("V", 24),
                         "full_pose": (24, 3, 3), "body_shape": (10,)}


def check_pose_conditions(conditions: Mapping, batch_size: int | None = None) -> dict:
    """Validate a batched pose-condition dict (extra keys such as 'name' are ignored) and return the five tensors."""
    if not isinstance(conditions, Mapping):
        raise TypeError(f"pose conditions: expected a dict of tensors, got {type(conditions).__name__}")
    missing = [k for k in POSE_CONDITION_SHAPES if k not in conditions]
    if missing:
        raise KeyError(f"pose conditions: missing {missing} (found {sorted(conditions)}); the conditional generator "
                       f"needs {list(POSE_CONDITION_SHAPES)}")
    out, n_vertices = {}, None
    for key, tail in POSE_CONDITION_SHAPES.items():
        value = conditions[key]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"pose conditions: {key!r} must be a tensor, got {type(value).__name__}")
        if "V" in tail:
            n_vertices = value.shape[1] if n_vertices is None and value.ndim > 1 else n_vertices
        expected = [n_vertices if d == "V" else d for d in tail]
        if value.ndim != len(tail) + 1 or list(value.shape[1:]) != expected or \
                (batch_size is not None and value.shape[0] != batch_size):
            raise ValueError(f"pose conditions: {key!r} should have shape [{batch_size or 'B'}, "
                             f"{', '.join(map(str, expected))}], got {list(value.shape)}")
        out[key] = value
    return out


def body_frame(points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Render-frame points [B, N, 3] -> body-frame points [B, N, 3]."""
    p = points * (2 / box_warp)
    return torch.stack([p[..., 0], p[..., 1] - BODY_Y_OFFSET, p[..., 2]], dim=-1)


def to_canonical_scale(q: torch.Tensor) -> torch.Tensor:
    """Unposed body-frame points -> canonical coordinates: x / 1.2, (y + 0.3) / 1.2, z."""
    return torch.stack([q[..., 0] / CANONICAL_SCALE, (q[..., 1] + CANONICAL_Y_OFFSET) / CANONICAL_SCALE, q[..., 2]],
                       dim=-1)


def apply_transform(matrices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """matrices [B, N, 4, 4] (or broadcastable), points [B, N, 3] -> (M @ [p, 1])[:3]: [B, N, 3]."""
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    return torch.matmul(matrices, homogeneous.unsqueeze(-1))[..., :3, 0]


def inverse_skinning(p: torch.Tensor, vertex_inverse: torch.Tensor, root_inverse: torch.Tensor,
                     nearest_index: torch.Tensor, nearest_sqdist: torch.Tensor) -> torch.Tensor:
    """Body-frame points p [B, N, 3] -> canonical coordinates [B, N, 3].

    vertex_inverse [B, V, 4, 4]: per-vertex blended inverse transforms
    (op3d.smpl.lbs.blended_inverse_transforms(lbs_weights, fk_matrices)); root_inverse [B, 4, 4] = inverse(fk_0);
    nearest_index / nearest_sqdist [B, N]: each point's nearest posed vertex and its squared distance."""
    b, n, _ = p.shape
    gathered = torch.gather(vertex_inverse.reshape(b, -1, 16), 1,
                            nearest_index.unsqueeze(-1).expand(-1, -1, 16)).reshape(b, n, 4, 4)
    near = apply_transform(gathered, p)
    far = apply_transform(root_inverse.unsqueeze(1), p)
    q = torch.where((nearest_sqdist >= FAR_SQUARED_DISTANCE).unsqueeze(-1), far, near)
    return to_canonical_scale(q)


@dataclass
class WarpedPoints:
    """Result of `warp_to_canonical` for points [B, N, 3]."""

    canonical: torch.Tensor
    """[B, N, 3] canonical coordinates before the learned deformation."""
    sdf_zero: torch.Tensor
    """[B, N, 1] signed squared distance to the posed body mesh (negative inside)."""
    nearest_sqdist: torch.Tensor
    """[B, N] squared distance to the nearest posed vertex."""
    nearest_index: torch.Tensor
    """[B, N] index of that vertex."""


@torch.no_grad()
def warp_to_canonical(points: torch.Tensor, conditions: Mapping, faces: torch.Tensor, box_warp: float,
                      vertex_inverse: torch.Tensor | None = None) -> WarpedPoints:
    """Render-frame points [B, N, 3] -> WarpedPoints. faces: [F, 3] int64 triangles of the body mesh.

    vertex_inverse: precomputed blended inverse transforms (saves the work when called chunk by chunk)."""
    vertices = conditions["vertices"].to(points.dtype)
    fk_matrices = conditions["fk_matrices"].to(points.dtype)
    if vertex_inverse is None:
        vertex_inverse = blended_inverse_transforms(conditions["lbs_weights"].to(points.dtype), fk_matrices)
    p = body_frame(points, box_warp)
    sqdist, index = nearest_vertices(p, vertices)
    canonical = inverse_skinning(p, vertex_inverse, torch.inverse(fk_matrices[:, 0]), index, sqdist)
    sdf_zero = signed_squared_distance(p, vertices, faces).unsqueeze(-1).to(points.dtype)
    return WarpedPoints(canonical, sdf_zero, sqdist, index)
