"""What an inversion writes: images, latents, camera labels, a multi-view strip, an orbit video, a mesh, metrics.

Every file is written atomically (op3d.atomic)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch

from op3d.atomic import atomic_output
from op3d.generation import OFFICIAL_YAW_OFFSETS, to_uint8
from op3d.video import camera_trajectory, frame_image, save_npy


def save_png(path, image: torch.Tensor) -> None:
    """image [3, H, W] in [-1, 1] or [H, W, 3] uint8 -> PNG."""
    from PIL import Image

    array = image if isinstance(image, np.ndarray) else to_uint8(image[None].detach().float().cpu())[0]
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_json(path, data: dict) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def save_camera(outdir, label: torch.Tensor, values: dict, optimized: bool) -> None:
    """camera.npy (float32 [1, 25]) and camera.json ({'label': 25 floats, yaw/pitch/roll (radians), radius,
    focal, fov_deg, optimized})."""
    label = label.detach().float().cpu().reshape(1, 25).numpy()
    save_npy(os.path.join(outdir, "camera.npy"), label)
    save_json(os.path.join(outdir, "camera.json"), {"label": label[0].tolist(), **values, "optimized": optimized})


@torch.no_grad()
def multiview_strip(G, ws: torch.Tensor, camera, index: int, yaw_offsets=OFFICIAL_YAW_OFFSETS) -> np.ndarray:
    """Renders of sample `index` (ws [1, num_ws, w_dim]) from its camera turned by each yaw offset along the
    orbit, side by side -> [H, V * W, 3] uint8."""
    views = []
    for offset in yaw_offsets:
        with torch.no_grad():
            saved = camera.yaw.detach().clone()
            camera.yaw.add_(offset)
            label = camera.label()[index:index + 1]
            camera.yaw.copy_(saved)
        torch.manual_seed(0)
        views.append(to_uint8(G.synthesis(ws, label, noise_mode="const")["image"])[0])
    return np.concatenate(views, axis=1)


@torch.no_grad()
def orbit_video(G, ws: torch.Tensor, path, radius: float, focal: float, num_frames: int = 60, fps: int = 30) -> None:
    """An mp4 (libx264) of ws [1, num_ws, w_dim] seen from the video orbit of op3d.video (one yaw/pitch swing
    around the model's pivot) at the given radius and focal; torch seeded per frame."""
    import imageio

    labels = camera_trajectory(num_frames, G.settings.avg_camera_pivot, radius, focal, device=ws.device)
    with atomic_output(path) as tmp:
        writer = imageio.get_writer(tmp, mode="I", fps=fps, codec="libx264")
        try:
            for frame in range(num_frames):
                torch.manual_seed(frame)
                writer.append_data(frame_image(G.synthesis(ws, labels[frame:frame + 1], noise_mode="const"),
                                               "image"))
        finally:
            writer.close()


def write_mesh(G, ws: torch.Tensor, path, resolution: int, level: float) -> str | None:
    """Marching-cubes mesh of ws [1, num_ws, w_dim] at `level` on a resolution^3 raw-density grid -> None, or a
    note when the density never reaches the level (no file then)."""
    from op3d import shapes

    sigma = shapes.extract_density(G, ws, resolution)
    try:
        vertices, faces = shapes.density_mesh(sigma, level, G.settings.box_warp)
    except ValueError as error:
        return f"no mesh written: {error}"
    shapes.write_mesh(path, vertices, faces)
    return None


def stage_metrics(psnr_db: float, mse_value: float, lpips_value: float | None) -> dict:
    """The metrics of one stage's final render: PSNR (dB, [0, 1] scale), MSE ([-1, 1] scale), LPIPS (when the
    detector is loaded)."""
    out = {"psnr": float(psnr_db), "mse": float(mse_value)}
    if lpips_value is not None:
        out["lpips"] = float(lpips_value)
    if not math.isfinite(out["psnr"]):
        out["psnr"] = None
    return out
