"""The browser camera <-> the generator's camera label.

viser reports the page's camera as a position and a cam2world rotation (quaternion wxyz) in the OpenCV
convention (x right, y down, z forward), the convention of op3d's labels, and a vertical field of view in radians.
The viewer's scene uses the generator's world frame unchanged (world up +y, see op3d.cameras), so a label is
[R | position] plus the intrinsics of the page's vertical field of view:

    label = browser_label(camera.position, camera.wxyz, camera.fov)      # [1, 25]

The official `--fov-deg` convention is not the vertical field of view: official_fov_to_vertical converts.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from op3d.cameras import create_cam2world_matrix, focal_to_intrinsics, orbit_origins, pack_label

WORLD_UP = (0.0, 1.0, 0.0)
MAX_YAW = 0.8    # radians from frontal: the official gen_samples views span -0.8 ... 0.8
MAX_PITCH = 0.4  # radians from frontal: twice the official views' pitch offset


def quaternion_to_matrix(wxyz) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> rotation matrix [3, 3] float64."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def matrix_to_quaternion(rotation) -> np.ndarray:
    """Rotation matrix [3, 3] -> unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2 * math.sqrt(1 + trace)
        q = [s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * math.sqrt(1 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = s / 4
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q if q[0] >= 0 else -q


def official_fov_to_vertical(fov_deg: float) -> float:
    """The official `--fov-deg` (focal = 1 / (tan(fov / 2) * 1.414), op3d.cameras.fov_to_intrinsics) -> the true
    vertical field of view in radians of that camera's square image."""
    return 2 * math.atan(0.5 * math.tan(fov_deg * 3.14159 / 360) * 1.414)


def browser_label(position, wxyz, vertical_fov: float, device="cpu") -> torch.Tensor:
    """A page camera (position [3] world units, cam2world quaternion wxyz, vertical fov in radians) -> its camera
    label [1, 25] float32 (row-major cam2world, then normalized intrinsics of a square image)."""
    if not 0 < vertical_fov < math.pi:
        raise ValueError(f"field of view must be in (0, pi) radians, got {vertical_fov}")
    cam2world = np.eye(4)
    cam2world[:3, :3] = quaternion_to_matrix(wxyz)
    cam2world[:3, 3] = np.asarray(position, dtype=np.float64)
    focal = 0.5 / math.tan(vertical_fov / 2)
    c2w = torch.tensor(cam2world, dtype=torch.float32, device=device).unsqueeze(0)
    return pack_label(c2w, focal_to_intrinsics(focal, device=device))


def label_to_pose(label: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A label [1, 25] -> (position [3], wxyz [4]) for the page camera."""
    cam2world = label[0, :16].reshape(4, 4).double().cpu().numpy()
    return cam2world[:3, 3].copy(), matrix_to_quaternion(cam2world[:3, :3])


def orbit_pose(yaw: float, pitch: float, pivot, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(position, wxyz) of the official sampler's camera at absolute angles (pi/2, pi/2 = frontal): on the orbit
    of `radius` around the world origin, looking at pivot (op3d.cameras.LookAtPoseSampler, without its RNG draws)."""
    angles = torch.tensor([[yaw]], dtype=torch.float64), torch.tensor([[pitch]], dtype=torch.float64)
    origin = orbit_origins(*angles, radius)
    forward = torch.tensor(pivot, dtype=torch.float64).view(1, 3) - origin
    cam2world = create_cam2world_matrix(forward / forward.norm(dim=-1, keepdim=True), origin)
    return cam2world[0, :3, 3].numpy().copy(), matrix_to_quaternion(cam2world[0, :3, :3].numpy())


def orbit_angles(position) -> tuple[float, float, float]:
    """Inverse of orbit_pose's position: (yaw, pitch, radius) of a camera position around the world origin."""
    x, y, z = np.asarray(position, dtype=np.float64)
    radius = float(math.sqrt(x * x + y * y + z * z))
    cos_phi = max(-1.0, min(1.0, y / max(radius, 1e-12)))
    return math.atan2(z, -x), math.pi / 2 * (1 - cos_phi), radius


def snap_to_training_range(position, pivot, radius: float, max_yaw: float = MAX_YAW,
                           max_pitch: float = MAX_PITCH) -> tuple[np.ndarray, np.ndarray]:
    """The nearest training-like camera to a page camera: on the model's orbit (radius around the origin), looking
    at its pivot, with yaw and pitch clamped to within max_yaw / max_pitch of frontal. Returns (position, wxyz)."""
    yaw, pitch, _ = orbit_angles(position)
    turn = (yaw - math.pi / 2 + math.pi) % (2 * math.pi) - math.pi  # from frontal, in [-pi, pi)
    yaw = math.pi / 2 + min(max(turn, -max_yaw), max_yaw)
    pitch = min(max(pitch, math.pi / 2 - max_pitch), math.pi / 2 + max_pitch)
    return orbit_pose(yaw, pitch, pivot, radius)


def pivot_distance(label: torch.Tensor, pivot) -> float:
    """Distance of a label's camera from the pivot (world units)."""
    position = label[0, :16].reshape(4, 4)[:3, 3].double().cpu().numpy()
    return float(np.linalg.norm(position - np.asarray(pivot, dtype=np.float64)))
