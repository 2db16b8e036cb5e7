"""A differentiable camera for inversion: yaw, pitch, roll, radius and focal length -> the 25-float label.

Parametrisation (op3d.cameras' orbit convention, OpenCV camera axes):
* The camera sits on the orbit of `radius` around the world origin at (yaw, pitch) radians, yaw = pitch = pi/2
  being frontal (on +z); larger yaw moves it towards +x, larger pitch towards -y (op3d.cameras.orbit_origins).
* It looks at the model's pivot (avg_camera_pivot); world +y is up (create_cam2world_matrix). It is then turned
  by `roll` radians about its viewing axis: cam2world rotation = R_lookat(yaw, pitch) @ R_z(roll) @ R_fixed.
  R_fixed is the identity for cameras built here; `from_label` puts there whatever part of a given label's
  rotation the look-at camera cannot express (a label that does not look at the pivot), so the label is
  reproduced exactly before any change.
* Intrinsics [[f, 0, cx], [0, f * aspect, cy], [0, 0, 1]] (normalised by the image size); cx = cy = 0.5 and
  aspect = 1 for cameras built here.

The optimised parameters are yaw, pitch, roll, log(radius) and log(focal), one of each per image ([B]), so one
optimiser step moves the angles by radians and radius / focal by relative amounts of the same size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from op3d.cameras import create_cam2world_matrix, fov_to_intrinsics, orbit_origins, pack_label, unpack_label

PARAMETER_NAMES = ("yaw", "pitch", "roll", "radius", "focal")


def _rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotations about the camera's viewing axis: angle [B] -> [B, 3, 3]."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1),
                        torch.stack([zero, zero, one], -1)], -2)


def lookat_cam2world(yaw: torch.Tensor, pitch: torch.Tensor, radius: torch.Tensor, pivot) -> torch.Tensor:
    """cam2world [B, 4, 4] of cameras on the orbit (yaw, pitch, radius: [B]) looking at pivot ([3])."""
    origins = orbit_origins(yaw[:, None], pitch[:, None], radius[:, None])
    pivot = torch.as_tensor(pivot, dtype=origins.dtype, device=origins.device).reshape(1, 3)
    return create_cam2world_matrix(pivot - origins, origins)


class OrbitCamera(nn.Module):
    """B cameras with optimisable yaw, pitch, roll, log radius, log focal (parameters, [B] each) and fixed pivot
    [3], residual rotation [B, 3, 3], principal point [B, 2] and aspect fy / fx [B] (see the module docstring)."""

    def __init__(self, yaw, pitch, roll, radius, focal, pivot, fixed_rotation=None, principal=None, aspect=None):
        super().__init__()
        as_vector = lambda x: torch.as_tensor(x, dtype=torch.float32).reshape(-1).clone()  # noqa: E731
        yaw, pitch, roll = as_vector(yaw), as_vector(pitch), as_vector(roll)
        batch = yaw.shape[0]
        self.yaw, self.pitch, self.roll = nn.Parameter(yaw), nn.Parameter(pitch), nn.Parameter(roll)
        self.log_radius = nn.Parameter(as_vector(radius).log())
        self.log_focal = nn.Parameter(as_vector(focal).log())
        self.register_buffer("pivot", torch.as_tensor(pivot, dtype=torch.float32).reshape(3).clone())
        eye = torch.eye(3).expand(batch, 3, 3)
        self.register_buffer("fixed_rotation", eye.clone() if fixed_rotation is None else
                             torch.as_tensor(fixed_rotation, dtype=torch.float32).reshape(batch, 3, 3).clone())
        self.register_buffer("principal", torch.full((batch, 2), 0.5) if principal is None else
                             torch.as_tensor(principal, dtype=torch.float32).reshape(batch, 2).clone())
        self.register_buffer("aspect", torch.ones(batch) if aspect is None else as_vector(aspect))
        for name in ("yaw", "pitch", "roll", "log_radius", "log_focal"):
            if getattr(self, name).shape != (batch,):
                raise ValueError(f"OrbitCamera: {name} has {getattr(self, name).numel()} values for {batch} cameras")

    @property
    def batch_size(self) -> int:
        return self.yaw.shape[0]

    @classmethod
    def average(cls, G, batch_size: int = 1, fov_deg: float = 18.837) -> "OrbitCamera":
        """The model's average camera: frontal, at its avg_camera_radius, looking at avg_camera_pivot, with the
        focal length of fov_deg (op3d.cameras.fov_to_intrinsics)."""
        s = G.settings
        focal = float(fov_to_intrinsics(fov_deg)[0, 0])
        half_pi = [math.pi / 2] * batch_size
        return cls(half_pi, half_pi, [0.0] * batch_size, [float(s.avg_camera_radius)] * batch_size,
                   [focal] * batch_size, s.avg_camera_pivot)

    @classmethod
    def from_label(cls, c: torch.Tensor, pivot) -> "OrbitCamera":
        """Cameras whose label() at the start equals the labels c [B, 25] (to float32 rounding)."""
        cam2world, intrinsics = unpack_label(torch.as_tensor(c, dtype=torch.float32).cpu())
        origin = cam2world[:, :3, 3]
        radius = origin.norm(dim=1)
        # Invert orbit_origins: y = r cos(phi), phi = arccos(1 - 2 pitch / pi); (x, z) = r sin(phi) (cos, sin)(pi - yaw).
        pitch = math.pi / 2 * (1 - (origin[:, 1] / radius).clamp(-1, 1))
        yaw = math.pi - torch.atan2(origin[:, 2], origin[:, 0])
        relative = lookat_cam2world(yaw, pitch, radius, pivot)[:, :3, :3].transpose(1, 2) @ cam2world[:, :3, :3]
        roll = torch.atan2(relative[:, 1, 0], relative[:, 0, 0])
        fixed = _rotation_z(roll).transpose(1, 2) @ relative
        focal = intrinsics[:, 0, 0]
        return cls(yaw, pitch, roll, radius, focal, pivot, fixed_rotation=fixed, principal=intrinsics[:, :2, 2],
                   aspect=intrinsics[:, 1, 1] / focal)

    def label(self) -> torch.Tensor:
        """The labels [B, 25] (differentiable in the parameters)."""
        cam2world = lookat_cam2world(self.yaw, self.pitch, self.log_radius.exp(), self.pivot)
        rotation = cam2world[:, :3, :3] @ _rotation_z(self.roll) @ self.fixed_rotation
        cam2world = torch.cat([torch.cat([rotation, cam2world[:, :3, 3:]], dim=2), cam2world[:, 3:]], dim=1)
        focal = self.log_focal.exp()
        zero, one = torch.zeros_like(focal), torch.ones_like(focal)
        intrinsics = torch.stack([torch.stack([focal, zero, self.principal[:, 0]], -1),
                                  torch.stack([zero, focal * self.aspect, self.principal[:, 1]], -1),
                                  torch.stack([zero, zero, one], -1)], -2)
        return pack_label(cam2world, intrinsics)

    def values(self, index: int) -> dict:
        """Camera `index` as plain numbers: yaw, pitch, roll (radians), radius (world units), focal (normalised),
        fov_deg (the field of view of that focal in op3d.cameras.fov_to_intrinsics' convention)."""
        value = lambda tensor: float(tensor.detach()[index])  # noqa: E731
        focal = math.exp(value(self.log_focal))
        return {"yaw": value(self.yaw), "pitch": value(self.pitch), "roll": value(self.roll),
                "radius": math.exp(value(self.log_radius)), "focal": focal,
                "fov_deg": math.atan(1 / (focal * 1.414)) * 360 / 3.14159}
