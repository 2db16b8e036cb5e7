"""Camera rays for every pixel (spec 2.2): OpenCV camera convention, normalized intrinsics."""

from __future__ import annotations

import torch


def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
    """One ray through the centre of each pixel of a resolution x resolution image, pixels in row-major order.

    cam2world: [B, 4, 4]; intrinsics: [B, 3, 3] normalized (focal and principal point in units of image size).
    Returns (origins [B, R*R, 3], unit directions [B, R*R, 3]) in world units."""
    b = cam2world.shape[0]
    m = resolution * resolution
    origin = cam2world[:, :3, 3]
    fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
    cx, cy = intrinsics[:, 0, 2], intrinsics[:, 1, 2]
    sk = intrinsics[:, 0, 1]
    idx = torch.arange(resolution, dtype=torch.float32, device=cam2world.device)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    x_cam = ((cols.reshape(-1) + 0.5) / resolution).unsqueeze(0).expand(b, -1)
    y_cam = ((rows.reshape(-1) + 0.5) / resolution).unsqueeze(0).expand(b, -1)
    z_cam = torch.ones((b, m), device=cam2world.device)
    x_lift = (x_cam - cx.unsqueeze(-1) + cy.unsqueeze(-1) * sk.unsqueeze(-1) / fy.unsqueeze(-1)
              - sk.unsqueeze(-1) * y_cam / fy.unsqueeze(-1)) / fx.unsqueeze(-1) * z_cam
    y_lift = (y_cam - cy.unsqueeze(-1)) / fy.unsqueeze(-1) * z_cam
    points_cam = torch.stack((x_lift, y_lift, z_cam, torch.ones_like(z_cam)), dim=-1)
    points_world = torch.bmm(cam2world, points_cam.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    directions = torch.nn.functional.normalize(points_world - origin[:, None, :], dim=2)
    return origin.unsqueeze(1).repeat(1, m, 1), directions
