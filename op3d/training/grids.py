"""The snapshot image grid (6 x 4, spec 5.3): fixed latents and labels, G_ema's images of them, saved as PNG mosaics."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from op3d.atomic import atomic_output

GRID_SIZE = (6, 4)  # OP3D's snapshot grid: 6 columns x 4 rows

def save_image_grid(images: np.ndarray, path: str, grid: tuple[int, int], drange=(-1, 1)) -> None:
    """images [N, C, H, W] (N = columns * rows) in drange -> one PNG, columns x rows."""
    from PIL import Image

    lo, hi = drange
    images = np.rint((np.asarray(images, dtype=np.float32) - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    gw, gh = grid
    _, c, h, w = images.shape
    canvas = images.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    with atomic_output(path) as tmp:
        Image.fromarray(canvas[:, :, 0] if c == 1 else canvas).save(tmp)


@torch.no_grad()
def render_grid(G_ema, grid_z: torch.Tensor, grid_c: torch.Tensor, batch: int,
                grid_conditions: dict | None = None) -> dict:
    """G_ema outputs for the grid latents/labels (and batched pose conditions, for the conditional generator) with
    noise_mode 'const' -> numpy image, image_raw, image_depth (depth negated and normalised to its own range, as
    officially)."""
    poses = [()] * len(grid_z.split(batch))
    if grid_conditions is not None:
        parts = {k: v.split(batch) for k, v in grid_conditions.items()}
        poses = [({k: v[i] for k, v in parts.items()},) for i in range(len(poses))]
    outs = [G_ema(z, c, *pose, noise_mode="const") for z, c, pose in zip(grid_z.split(batch), grid_c.split(batch),
                                                                          poses)]
    images = {k: torch.cat([o[k] for o in outs]).float().cpu() for k in ("image", "image_raw", "image_depth")}
    depth = -images["image_depth"]
    images["image_depth"] = (depth - depth.min()) / (depth.max() - depth.min()).clamp_min(1e-8) * 2 - 1
    images["image_raw"] = torch.nn.functional.interpolate(images["image_raw"][:, :3], size=images["image"].shape[-1],
                                                          mode="nearest")
    return {k: v.numpy() for k, v in images.items()}


@dataclasses.dataclass
class SnapshotGrid:
    """What every snapshot renders: z [N, z_dim] and labels c [N, 25] of N = 6 x 4 dataset items chosen with the
    run seed, plus their batched pose conditions for the conditional generator (else None)."""
    items: np.ndarray
    z: torch.Tensor
    c: torch.Tensor
    conditions: dict | None

    @classmethod
    def choose(cls, dataset, z_dim: int, seed: int, device: torch.device, conditional: bool) -> SnapshotGrid:
        count = GRID_SIZE[0] * GRID_SIZE[1]
        items = np.random.RandomState(seed).randint(len(dataset), size=count)
        c = torch.from_numpy(np.stack([dataset.get_label(i) for i in items])).to(device)
        z = torch.randn([count, z_dim], generator=torch.Generator().manual_seed(seed)).to(device)
        conditions = None
        if conditional:
            from op3d.datasets.conditional import stack_pose_conditions
            stacked = stack_pose_conditions([dataset.get_conditions(i) for i in items])
            conditions = {k: v.to(device) for k, v in stacked.items()}
        return cls(items, z, c, conditions)

    def save_reals(self, dataset, run_dir: str) -> None:
        """reals.png: the grid items' training images, once per run directory."""
        path = os.path.join(run_dir, "reals.png")
        if not os.path.isfile(path):
            save_image_grid(np.stack([dataset[i][0] for i in self.items]), path, GRID_SIZE, drange=(0, 255))

    def save_fakes(self, G_ema, batch: int, run_dir: str, kimg: int) -> None:
        """fakes<kimg>.png, fakes<kimg>_raw.png and fakes<kimg>_depth.png from G_ema."""
        images = render_grid(G_ema, self.z, self.c, batch, self.conditions)
        for key, suffix in (("image", ""), ("image_raw", "_raw"), ("image_depth", "_depth")):
            save_image_grid(images[key], os.path.join(run_dir, f"fakes{kimg:06d}{suffix}.png"), GRID_SIZE)
