"""Camera rays for every pixel (spec 2.2): OpenCV camera convention (+z forward, +y down), normalized intrinsics."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_centres(resolution: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v) of the centres of a resolution x resolution image in units of the image size, pixels in row-major
    order: u = (column + 0.5) / R, v = (row + 0.5) / R. Each [R * R]."""
    centres = (torch.arange(resolution, dtype=torch.float32, device=device) + 0.5) / resolution
    return centres.repeat(resolution), centres.repeat_interleave(resolution)


def camera_plane_points(u: torch.Tensor, v: torch.Tensor, intrinsics: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Invert the normalized pinhole projection at depth 1: image points (u, v) [M] -> camera-space (x, y) [B, M].

    With K = [[fx, sk, cx], [0, fy, cy], [0, 0, 1]]: y = (v - cy) / fy and x = (u - cx - sk * y) / fx, the
    skew term expanded as + cy sk / fy - sk v / fy."""
    fx, sk, cx = (intrinsics[:, 0, k, None] for k in range(3))
    fy, cy = intrinsics[:, 1, 1, None], intrinsics[:, 1, 2, None]
    x = (u - cx + cy * sk / fy - sk * v / fy) / fx
    y = (v - cy) / fy
    return x, y


def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
    """One ray through the centre of each pixel of a resolution x resolution image, pixels in row-major order.

    cam2world: [B, 4, 4]; intrinsics: [B, 3, 3] normalized (focal and principal point in units of image size).
    Returns (origins [B, R*R, 3], unit directions [B, R*R, 3]) in world units."""
    u, v = pixel_centres(resolution, cam2world.device)
    x, y = camera_plane_points(u, v, intrinsics)
    ones = torch.ones_like(x)
    homogeneous = torch.stack([x, y, ones, ones], dim=-1)  # [B, M, 4]: the points at depth 1
    points = torch.bmm(cam2world, homogeneous.transpose(1, 2)).transpose(1, 2)[..., :3]  # [B, M, 3] in the world
    eye = cam2world[:, None, :3, 3]  # [B, 1, 3] camera centre
    return eye.expand_as(points).contiguous(), F.normalize(points - eye, dim=2)
