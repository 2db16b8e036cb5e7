"""Camera poses and camera labels in EG3D's convention.

This module has one job: build camera-to-world poses and the 25-number camera
labels that EG3D-style generators (and OP3D) take as conditioning/rendering input.

Conventions
-----------
* ``cam2world`` is a ``[B, 4, 4]`` float32 matrix mapping camera coordinates to
  world coordinates. Camera axes follow OpenCV: x right, y down, z forward (the
  looking direction). The rotation columns are therefore (right, down, forward)
  and the last column is the camera position.
* Cameras orbit the world origin with world +y as the orbit's polar axis.
  Angles use the EG3D sampler convention: ``horizontal`` (yaw) = ``vertical``
  (pitch) = pi/2 is the frontal camera on the +z axis; larger yaw moves the
  camera towards +x, larger pitch moves it towards -y.
* Intrinsics are normalized: focal lengths in units of the image size and the
  principal point at (0.5, 0.5).
* A label ``c`` is ``[B, 25]``: 16 row-major cam2world values followed by 9
  row-major intrinsics values.
"""

import math

import torch

__all__ = [
    "LookAtPoseSampler",
    "GaussianCameraPoseSampler",
    "UniformCameraPoseSampler",
    "create_cam2world_matrix",
    "orbit_origins",
    "fov_to_intrinsics",
    "focal_to_intrinsics",
    "pack_label",
    "unpack_label",
    "orbit_camera",
    "rotate_label_about_y",
]

_EPS_ANGLE = 1e-5  # pitch is clamped to [eps, pi - eps] to stay off the poles


def _normalize(v):
    """Unit vectors along the last axis of ``v`` ([..., 3])."""
    return v / torch.norm(v, dim=-1, keepdim=True)


def orbit_origins(h, v, radius):
    """Camera positions [B, 3] on a sphere of ``radius`` around the origin (differentiable).

    ``h`` and ``v`` are [B, 1] yaw/pitch angles (``radius`` a number or [B, 1]). The pitch is mapped to the
    polar angle phi = arccos(1 - 2 v / pi) (so v = pi/2 is the equator, and
    uniformly distributed v would give area-uniform positions) and measured
    from world +y.
    """
    v = torch.clamp(v, _EPS_ANGLE, math.pi - _EPS_ANGLE)
    theta = h
    phi = torch.arccos(1 - 2 * (v / math.pi))
    x = radius * torch.sin(phi) * torch.cos(math.pi - theta)
    y = radius * torch.cos(phi)
    z = radius * torch.sin(phi) * torch.sin(math.pi - theta)
    return torch.cat([x, y, z], dim=-1)


def _gaussian_angles(h_mean, v_mean, h_std, v_std, batch_size, device):
    """[B, 1] yaw and pitch: normal draws (yaw first, then pitch)."""
    h = torch.randn((batch_size, 1), device=device) * h_std + h_mean
    v = torch.randn((batch_size, 1), device=device) * v_std + v_mean
    return h, v


def _as_points(p, batch_size, device):
    """A point given as a sequence/tensor of shape [3] or [B, 3] -> float32 [B, 3]."""
    p = torch.as_tensor(p, dtype=torch.float32, device=device)
    if p.shape not in ((3,), (batch_size, 3), (1, 3)):
        raise ValueError(
            f"lookat_position: expected shape [3] or [{batch_size}, 3], found {list(p.shape)}"
        )
    return p.reshape(-1, 3).expand(batch_size, 3)


class LookAtPoseSampler:
    """Cameras on an orbit around the world origin that look at a given point."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, lookat_position, horizontal_stddev=0,
               vertical_stddev=0, radius=1, batch_size=1, device="cpu"):
        """Sample ``batch_size`` cam2world matrices, float32 [B, 4, 4].

        Yaw = randn * horizontal_stddev + horizontal_mean and pitch likewise
        (two [B, 1] ``torch.randn`` draws, yaw first; drawn even when the
        stddev is 0, so the torch RNG advances identically to EG3D). The camera
        sits on the orbit of ``radius`` (see the module docstring) and looks at
        ``lookat_position`` ([3] or [B, 3]).
        """
        h, v = _gaussian_angles(horizontal_mean, vertical_mean, horizontal_stddev,
                                vertical_stddev, batch_size, device)
        origins = orbit_origins(h, v, radius)
        lookat = _as_points(lookat_position, batch_size, device)
        return create_cam2world_matrix(_normalize(lookat - origins), origins)


class GaussianCameraPoseSampler:
    """Cameras on an orbit with normally distributed angles, looking at the origin."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, horizontal_stddev=0, vertical_stddev=0,
               radius=1, batch_size=1, device="cpu"):
        """Sample cam2world matrices, float32 [B, 4, 4]; angles as in LookAtPoseSampler."""
        h, v = _gaussian_angles(horizontal_mean, vertical_mean, horizontal_stddev,
                                vertical_stddev, batch_size, device)
        origins = orbit_origins(h, v, radius)
        return create_cam2world_matrix(_normalize(-origins), origins)


class UniformCameraPoseSampler:
    """Cameras on an orbit with uniformly distributed angles, looking at the origin."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, horizontal_stddev=0, vertical_stddev=0,
               radius=1, batch_size=1, device="cpu"):
        """Sample cam2world matrices, float32 [B, 4, 4].

        Yaw is uniform in [mean - stddev, mean + stddev] ((rand * 2 - 1) * std + mean,
        a [B, 1] ``torch.rand`` draw, yaw first, then pitch the same way); pitch is
        then clamped away from the poles.
        """
        h = (torch.rand((batch_size, 1), device=device) * 2 - 1) * horizontal_stddev + horizontal_mean
        v = (torch.rand((batch_size, 1), device=device) * 2 - 1) * vertical_stddev + vertical_mean
        origins = orbit_origins(h, v, radius)
        return create_cam2world_matrix(_normalize(-origins), origins)


def create_cam2world_matrix(forward_vector, origin):
    """Cam2world [B, 4, 4] from looking directions [B, 3] and camera positions [B, 3].

    Columns: right = -normalize(world_up x forward), down = normalize(forward x right)
    (the OpenCV camera y axis; EG3D calls it "up" although for an upright camera it
    points along world -y), forward; translation = ``origin``. World up is +y.
    The result has the dtype/device of ``forward_vector``.
    """
    forward = _normalize(forward_vector)
    world_up = torch.tensor([0.0, 1.0, 0.0], dtype=forward.dtype, device=forward.device)
    world_up = world_up.expand_as(forward)
    right = -_normalize(torch.linalg.cross(world_up, forward, dim=-1))
    down = _normalize(torch.linalg.cross(forward, right, dim=-1))

    cam2world = torch.eye(4, dtype=forward.dtype, device=forward.device)
    cam2world = cam2world.unsqueeze(0).repeat(forward.shape[0], 1, 1)
    cam2world[:, :3, :3] = torch.stack([right, down, forward], dim=-1)
    cam2world[:, :3, 3] = origin
    return cam2world


def focal_to_intrinsics(focal, device="cpu"):
    """Normalized intrinsics float32 [3, 3] = [[f, 0, .5], [0, f, .5], [0, 0, 1]]."""
    return torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]],
                        dtype=torch.float32, device=device)


def fov_to_intrinsics(fov_degrees, device="cpu"):
    """Normalized intrinsics float32 [3, 3] for a field of view in degrees.

    focal = 1 / (tan(fov * 3.14159 / 360) * 1.414). The truncated constants
    (3.14159 for pi, 1.414 for sqrt(2)) are the ones the official EG3D/OP3D
    scripts use; they are kept so that labels match released models and
    reference data to float32 precision (fov 18 -> focal 4.4651747).
    """
    focal = float(1 / (math.tan(fov_degrees * 3.14159 / 360) * 1.414))
    return focal_to_intrinsics(focal, device=device)


def pack_label(cam2world, intrinsics):
    """Label [B, 25] from cam2world [B, 4, 4] and intrinsics [3, 3] (shared) or [B, 3, 3].

    The label has the dtype/device of ``cam2world``.
    """
    if cam2world.ndim != 3 or tuple(cam2world.shape[1:]) != (4, 4):
        raise ValueError(f"cam2world: expected shape [B, 4, 4], found {list(cam2world.shape)}")
    batch = cam2world.shape[0]
    intrinsics = torch.as_tensor(intrinsics, dtype=cam2world.dtype, device=cam2world.device)
    if tuple(intrinsics.shape) == (3, 3):
        intrinsics = intrinsics.expand(batch, 3, 3)
    elif tuple(intrinsics.shape) != (batch, 3, 3):
        raise ValueError(
            f"intrinsics: expected shape [3, 3] or [{batch}, 3, 3], found {list(intrinsics.shape)}"
        )
    return torch.cat([cam2world.reshape(batch, 16), intrinsics.reshape(batch, 9)], dim=1)


def unpack_label(c):
    """Split a label [B, 25] into (cam2world [B, 4, 4], intrinsics [B, 3, 3])."""
    if c.ndim != 2 or c.shape[1] != 25:
        raise ValueError(f"label: expected shape [B, 25], found {list(c.shape)}")
    return c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3)


def orbit_camera(yaw, pitch, radius=2.7, lookat=(0.0, 0.0, 0.0), fov_degrees=18.0,
                 device="cpu", focal=None):
    """A single deterministic camera label, float32 [1, 25].

    ``yaw``/``pitch`` are radians in the sampler convention (pi/2, pi/2 is
    frontal); the camera orbits the origin at ``radius`` and looks at
    ``lookat`` (use the model's avg_camera_radius / avg_camera_pivot).
    Intrinsics come from ``fov_degrees`` unless a normalized ``focal`` is given
    (e.g. 4.2647, the focal of the FFHQ training labels). Like the official
    scripts' LookAtPoseSampler call, it consumes two [1, 1] randn draws of the
    torch RNG (with zero stddev, so the pose itself is deterministic).
    """
    cam2world = LookAtPoseSampler.sample(yaw, pitch, lookat, radius=radius, device=device)
    if focal is None:
        intrinsics = fov_to_intrinsics(fov_degrees, device=device)
    else:
        intrinsics = focal_to_intrinsics(focal, device=device)
    return pack_label(cam2world, intrinsics)


def rotate_label_about_y(c, angle, pivot=(0.0, 0.0, 0.0)):
    """Labels [B, 25] whose cameras are turned by ``angle`` radians ([B] or a scalar) about the world +y axis
    through ``pivot``: the same orbit step as a yaw change, for any camera. Intrinsics are kept."""
    cam2world, intrinsics = unpack_label(c)
    angle = torch.as_tensor(angle, dtype=c.dtype, device=c.device).expand(c.shape[0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.eye(4, dtype=c.dtype, device=c.device).repeat(c.shape[0], 1, 1)
    rotation[:, 0, 0], rotation[:, 0, 2] = cos, sin
    rotation[:, 2, 0], rotation[:, 2, 2] = -sin, cos
    shift = torch.eye(4, dtype=c.dtype, device=c.device)
    shift[:3, 3] = torch.as_tensor(pivot, dtype=c.dtype, device=c.device)
    back = torch.eye(4, dtype=c.dtype, device=c.device)
    back[:3, 3] = -shift[:3, 3]
    return pack_label(shift @ rotation @ back @ cam2world, intrinsics)
