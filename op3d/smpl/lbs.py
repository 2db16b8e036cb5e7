"""SMPL kinematics in plain PyTorch: rotations, shape blend shapes, forward kinematics, (inverse) linear blend
skinning and the pose-condition dict of the conditional generator (spec 4.2).

Conventions: points are column vectors (``T @ [x, 1]``), rotation matrices act on the left, units are SMPL's
(metres), joint 0 is the root. Every function takes any leading batch shape ``...`` and works in the dtype and on
the device of its tensor arguments; the model's arrays are cast to them.

Forward kinematics follows SMPL's rigid-transform chain: with rest joints J and per-joint rotations R,
T_j = [R_j | J_j - J_parent(j)] (T_0 = [R_0 | J_0]), G_j = G_parent(j) T_j, and the relative transform
A_j = G_j with translation G_j[:3, 3] - G_j[:3, :3] J_j, so that A_j maps a rest point to its pose under joint j.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from op3d.smpl.body_model import NUM_JOINTS, SMPLModel

__all__ = ["axis_angle_to_matrix", "blend_transforms", "blended_inverse_transforms", "canonical_frame",
           "inverse_skin", "matrix_to_axis_angle", "pose_condition", "regress_joints", "rigid_transforms",
           "shape_blend", "skin"]

_SMALL_ANGLE_SQ = 1e-6  # below this squared angle the Taylor series are exact to float64 rounding


def _skew(v: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [..., 3, 3] cross-product matrix (skew(v) @ u = v x u)."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle vectors [..., 3] (radians) -> rotation matrices [..., 3, 3].

    R = I + sin(t)/t K + 2 sin^2(t/2)/t^2 K^2 with K = skew(axis_angle), t = |axis_angle|; Taylor series near
    t = 0, so the value and its gradient are finite everywhere.
    """
    theta_sq = (axis_angle * axis_angle).sum(-1)[..., None, None]
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = torch.where(small, torch.ones_like(theta_sq), theta_sq).sqrt()
    a = torch.where(small, 1 - theta_sq / 6 + theta_sq ** 2 / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24 + theta_sq ** 2 / 720, 2 * torch.sin(theta / 2) ** 2 / theta ** 2)
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(rotmats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> axis-angle vectors [..., 3] with angle in [0, pi].

    Goes through the unit quaternion, taken from the best conditioned of its four closed forms (largest of
    1 + trace, 1 + R00 - R11 - R22, 1 - R00 + R11 - R22, 1 - R00 - R11 + R22, which is always >= 1).
    """
    r = rotmats
    r00, r11, r22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    d10, d02, d21 = r[..., 1, 0] - r[..., 0, 1], r[..., 0, 2] - r[..., 2, 0], r[..., 2, 1] - r[..., 1, 2]
    s10, s02, s21 = r[..., 1, 0] + r[..., 0, 1], r[..., 0, 2] + r[..., 2, 0], r[..., 2, 1] + r[..., 1, 2]
    diag = torch.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], -1)
    candidates = torch.stack([  # (w, x, y, z) * 4 * (chosen component), one row per closed form
        torch.stack([diag[..., 0], d21, d02, d10], -1),
        torch.stack([d21, diag[..., 1], s10, s02], -1),
        torch.stack([d02, s10, diag[..., 2], s21], -1),
        torch.stack([d10, s02, s21, diag[..., 3]], -1)], -2)
    best = diag.argmax(-1, keepdim=True)
    scale = 2 * diag.clamp_min(1e-3).sqrt()  # the chosen one is >= 1; the clamp keeps the others' gradients finite
    quat = (torch.take_along_dim(candidates, best[..., None], -2).squeeze(-2)
            / torch.take_along_dim(scale, best, -1))
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    w, v = quat[..., :1], quat[..., 1:]
    sin_sq = (v * v).sum(-1, keepdim=True)
    small = sin_sq < _SMALL_ANGLE_SQ
    sin_half = torch.where(small, torch.ones_like(sin_sq), sin_sq).sqrt()
    w_small = torch.where(small, w, torch.ones_like(w))  # w ~ 1 there; elsewhere 1 keeps gradients finite at w = 0
    tan_sq = sin_sq / (w_small * w_small)  # atan(x) / x = 1 - x^2 / 3 + x^4 / 5 - ...
    factor = torch.where(small, 2 / w_small * (1 - tan_sq / 3 + tan_sq ** 2 / 5),
                         2 * torch.atan2(sin_half, w) / sin_half)
    return factor * v


def shape_blend(model: SMPLModel, betas: torch.Tensor) -> torch.Tensor:
    """Shaped rest vertices v_template + shapedirs . betas: betas [..., B] (B <= model.num_betas) -> [..., V, 3]."""
    if betas.shape[-1] > model.num_betas:
        raise ValueError(f"betas: {betas.shape[-1]} values, but {model.source} has {model.num_betas} shape directions")
    dirs = model.shapedirs[..., :betas.shape[-1]].to(betas)
    return model.v_template.to(betas) + torch.einsum("vcb,...b->...vc", dirs, betas)


def regress_joints(model: SMPLModel, vertices: torch.Tensor) -> torch.Tensor:
    """Joint positions J_regressor @ vertices: [..., V, 3] -> [..., 24, 3]."""
    return model.J_regressor.to(vertices) @ vertices


def rigid_transforms(rotmats: torch.Tensor, joints: torch.Tensor,
                     parents: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """SMPL forward kinematics (see the module docstring).

    rotmats: [..., J, 3, 3] per-joint rotations (index 0 = root); joints: [..., J, 3] rest joints; parents: J ints,
    -1 for the root, each parent before its child. Returns (A [..., J, 4, 4] relative transforms,
    posed joints [..., J, 3] = G_j[:3, 3]).
    """
    batch = torch.broadcast_shapes(rotmats.shape[:-3], joints.shape[:-2])
    rotmats, joints = rotmats.expand(*batch, -1, 3, 3), joints.expand(*batch, -1, 3)
    bottom = torch.zeros(*batch, 1, 4, dtype=joints.dtype, device=joints.device)
    bottom[..., 0, 3] = 1
    chain = []
    for j, parent in enumerate(parents):
        offset = joints[..., j, :] - (joints[..., parent, :] if parent >= 0 else 0)
        local = torch.cat([torch.cat([rotmats[..., j, :, :], offset[..., None]], -1), bottom], -2)
        chain.append(chain[parent] @ local if parent >= 0 else local)
    world = torch.stack(chain, -3)
    posed_joints = world[..., :3, 3]
    translation = posed_joints - (world[..., :3, :3] @ joints[..., None])[..., 0]
    rel = torch.cat([world[..., :3, :3], translation[..., None]], -1)
    return torch.cat([rel, world[..., 3:, :]], -2), posed_joints


def canonical_frame(root_rotmat: torch.Tensor) -> torch.Tensor:
    """The canonical frame of spec 4.2: root rotations [..., 3, 3] -> cano [..., 4, 4] = [[R_x(pi) R_root^-1, 0],
    [0, 1]], with R_x(pi) = diag(1, -1, -1) and R_root^-1 = R_root^T, as the official export_pose.py. It removes
    the root rotation; the rest body (y up) then has its head towards -y, as the conditional generator expects."""
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=root_rotmat.dtype, device=root_rotmat.device)
    cano = torch.zeros(*root_rotmat.shape[:-2], 4, 4, dtype=root_rotmat.dtype, device=root_rotmat.device)
    cano[..., :3, :3] = flip[:, None] * root_rotmat.transpose(-1, -2)
    cano[..., 3, 3] = 1
    return cano


def blend_transforms(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Per-vertex transforms sum_j weights[v, j] transforms[j]: weights [..., V, J], transforms [..., J, 4, 4]
    -> [..., V, 4, 4] (leading shapes broadcast)."""
    return (weights @ transforms.flatten(-2)).unflatten(-1, (4, 4))


def skin(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: rest vertices [..., V, 3], weights [..., V, J], transforms [..., J, 4, 4]
    -> posed vertices [..., V, 3] = (sum_j w_vj T_j) @ [v, 1]."""
    m = blend_transforms(weights, transforms)
    return (m[..., :3, :3] @ vertices[..., None])[..., 0] + m[..., :3, 3]


def inverse_skin(posed: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`skin` for the same weights and transforms: posed vertices [..., V, 3] -> rest [..., V, 3],
    by inverting each vertex's blended transform (exact up to rounding)."""
    m = blend_transforms(weights, transforms)
    return torch.linalg.solve(m[..., :3, :3], posed - m[..., :3, 3])


def blended_inverse_transforms(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """The conditional generator's inverse LBS (spec 4.3 b): sum_j weights[v, j] transforms[j]^-1 [..., V, 4, 4].

    A blend of inverses, not the inverse of the blend: equal to it only where one joint dominates a vertex or
    the transforms agree, so :func:`inverse_skin` is the exact inverse of :func:`skin`.
    """
    return blend_transforms(weights, torch.linalg.inv(transforms))


def pose_condition(model: SMPLModel, betas: torch.Tensor, pose: torch.Tensor) -> dict[str, torch.Tensor]:
    """The pose-condition dict of spec 4.2 for SMPL parameters, in the dtype and on the device of ``pose``.

    betas: [..., B]; pose: [..., 24, 3, 3] rotation matrices or [..., 24, 3] / [..., 72] axis-angle (index 0 = root).
    Returns ``vertices`` [..., V, 3] (shaped rest vertices, no pose blend shapes, posed by fk_matrices),
    ``fk_matrices`` [..., 24, 4, 4] (cano @ A_j), ``lbs_weights`` [..., V, 24], ``full_pose`` [..., 24, 3, 3] and
    ``body_shape`` [..., B].
    """
    if pose.shape[-2:] == (3, 3) and pose.shape[-3:-2] == (NUM_JOINTS,):
        rotmats = pose
    elif pose.shape[-1:] == (3 * NUM_JOINTS,) or pose.shape[-2:] == (NUM_JOINTS, 3):
        rotmats = axis_angle_to_matrix(pose.unflatten(-1, (NUM_JOINTS, 3)) if pose.shape[-1] != 3 else pose)
    else:
        raise ValueError(f"pose: shape {list(pose.shape)}, expected [..., 24, 3, 3] rotation matrices or "
                         "[..., 24, 3] / [..., 72] axis-angle")
    betas = betas.to(rotmats)
    if rotmats.shape[:-3] != betas.shape[:-1]:
        raise ValueError(f"betas: batch shape {list(betas.shape[:-1])} differs from pose's {list(rotmats.shape[:-3])}")
    v_shaped = shape_blend(model, betas)
    rel, _ = rigid_transforms(rotmats, regress_joints(model, v_shaped), model.parents)
    fk = canonical_frame(rotmats[..., 0, :, :])[..., None, :, :] @ rel
    weights = model.weights.to(rotmats).expand(*betas.shape[:-1], -1, -1)
    return {"vertices": skin(v_shaped, weights, fk), "fk_matrices": fk, "lbs_weights": weights,
            "full_pose": rotmats, "body_shape": betas}
