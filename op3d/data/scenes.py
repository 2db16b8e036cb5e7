"""Static multi-object scenes for single-scene fitting, rendered exactly with ground-truth depth and surface.

A scene here is a list of `Part`s: spheres and axis-aligned boxes (thin boxes make poles and plates), each with an
albedo and an optional procedural 3D texture (a checkerboard or stripes of a given period: the albedo is scaled by
`TEXTURE_DARK` on the dark cells). Rays are intersected with `op3d.data.synthetic`'s exact sphere and box tests and
shaded with its Lambertian light, so the depth is exact and a surface point has the same colour from every view.

`make_scene_dataset` writes training and held-out views (op3d datasets: PNGs + dataset.json with 25-float
cameras), their exact depths, and points sampled uniformly on the scene's visible surface (for Chamfer distances).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from op3d.atomic import atomic_output
from op3d.cameras import orbit_camera
from op3d.data.synthetic import _box_hit, _composite, _rays, _sphere_hit
from op3d.datasets import write_image_dataset

TEXTURES = ("none", "checker", "stripes")
TEXTURE_DARK = 0.35
"""Albedo factor of a texture's dark cells (1 on the light cells)."""


@dataclass(frozen=True)
class Part:
    """One primitive: kind 'sphere' (size[0] = radius) or 'box' (size = half sizes), world units; albedo rgb in
    [0, 1]; texture one of `TEXTURES` with cell ``period`` (world units)."""

    kind: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    rgb: tuple[float, float, float]
    texture: str = "none"
    period: float = 0.1

    def __post_init__(self):
        if self.kind not in ("sphere", "box"):
            raise ValueError(f"Part.kind: expected 'sphere' or 'box', found {self.kind!r}")
        if self.texture not in TEXTURES:
            raise ValueError(f"Part.texture: expected one of {TEXTURES}, found {self.texture!r}")
        if not (min(self.size) > 0 and self.period > 0 and all(0 <= v <= 1 for v in self.rgb)):
            raise ValueError(f"Part: expected positive size and period and rgb in [0, 1], found {self}")


def _table_scene() -> tuple[Part, ...]:
    """A small table (thin top, four thin legs) carrying a striped ball, a checkered cube and a thin mast with a
    flag; everything inside the ball of radius 0.36 around the origin (+y up)."""
    legs = tuple(Part("box", (x, -0.2, z), (0.012, 0.1, 0.012), (0.45, 0.3, 0.15))
                 for x in (-0.2, 0.2) for z in (-0.12, 0.12))
    return legs + (
        Part("box", (0.0, -0.09, 0.0), (0.25, 0.012, 0.16), (0.75, 0.55, 0.3), "stripes", 0.05),
        Part("sphere", (-0.1, 0.0, 0.02), (0.08,) * 3, (0.2, 0.45, 0.95), "stripes", 0.04),
        Part("box", (0.11, -0.02, -0.03), (0.06, 0.06, 0.06), (0.9, 0.2, 0.15), "checker", 0.04),
        Part("box", (0.16, 0.1, 0.08), (0.006, 0.19, 0.006), (0.2, 0.2, 0.2)),
        Part("box", (0.21, 0.24, 0.08), (0.05, 0.035, 0.004), (0.2, 0.8, 0.3), "checker", 0.025),
    )


def _blocks_scene() -> tuple[Part, ...]:
    """Two plain objects (a sphere on a box), no thin parts or textures: the easy case."""
    return (Part("box", (0.0, -0.1, 0.0), (0.15, 0.08, 0.15), (0.85, 0.6, 0.2)),
            Part("sphere", (0.0, 0.1, 0.0), (0.12,) * 3, (0.2, 0.5, 0.9)))


SCENES = {"table": _table_scene, "blocks": _blocks_scene}
"""Named scenes: 'table' (several objects, thin legs and mast, a thin flag, striped and checkered textures) and
'blocks' (two plain objects)."""


def scene_parts(name: str) -> tuple[Part, ...]:
    """The parts of a named scene (`SCENES`), or a ValueError listing the names."""
    if name not in SCENES:
        raise ValueError(f"scene: expected one of {sorted(SCENES)}, found {name!r}")
    return SCENES[name]()


def _texture(part: Part, points: torch.Tensor) -> torch.Tensor:
    """Albedo factor [B, M, 1] of ``part``'s texture at world points [B, M, 3]."""
    if part.texture == "none":
        return torch.ones_like(points[..., :1])
    cells = torch.floor((points - points.new_tensor(part.center)) / part.period)
    if part.texture == "checker":
        odd = cells.sum(-1, keepdim=True).remainder(2)
    else:
        odd = cells[..., 1:2].remainder(2)
    return torch.where(odd > 0.5, TEXTURE_DARK, 1.0).to(points.dtype)


def render_parts(parts, c: torch.Tensor, resolution: int, far: float = 6.0,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Render the scene of ``parts`` exactly from the cameras c [B, 25].

    Returns image [B, 3, R, R] in [-1, 1] (white background), depth [B, 1, R, R] (distance along each pixel's unit
    ray, world units; ``far`` on the background) and mask [B, 1, R, R] bool, as `op3d.data.synthetic.render_scene`."""
    origins, directions = _rays(c, resolution, dtype)
    hits = []
    for part in parts:
        center = origins.new_tensor(part.center).reshape(1, 1, 3)
        if part.kind == "sphere":
            t, normals = _sphere_hit(origins, directions, center, origins.new_tensor([[part.size[0]]]))
        else:
            t, normals = _box_hit(origins, directions, center, origins.new_tensor(part.size).reshape(1, 1, 3))
        points = origins + torch.where(torch.isfinite(t), t, 0).unsqueeze(-1) * directions
        hits.append((t, normals, origins.new_tensor(part.rgb) * _texture(part, points)))
    return _composite(origins, directions, hits, resolution, far)


def _inside(parts, points: np.ndarray, margin: float = 1e-6) -> np.ndarray:
    """Whether each of points [N, 3] lies strictly inside some part -> bool [N]."""
    inside = np.zeros(len(points), bool)
    for part in parts:
        offset = points - np.asarray(part.center)
        if part.kind == "sphere":
            inside |= np.linalg.norm(offset, axis=-1) < part.size[0] - margin
        else:
            inside |= (np.abs(offset) < np.asarray(part.size) - margin).all(-1)
    return inside


def surface_points(parts, count: int, rng: np.random.RandomState) -> np.ndarray:
    """About ``count`` points [N, 3] uniformly distributed over the scene's outer surface (each part's surface
    sampled by area, points inside another part dropped), world units."""
    areas = [4 * math.pi * p.size[0] ** 2 if p.kind == "sphere"
             else 8 * (p.size[0] * p.size[1] + p.size[1] * p.size[2] + p.size[0] * p.size[2]) for p in parts]
    chunks = []
    for part, area in zip(parts, areas):
        n = max(1, int(round(count * area / sum(areas))))
        if part.kind == "sphere":
            unit = rng.normal(size=(n, 3))
            points = unit / np.linalg.norm(unit, axis=-1, keepdims=True) * part.size[0]
        else:
            half = np.asarray(part.size)
            face_areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
            axis = rng.choice(3, size=n, p=face_areas / face_areas.sum())
            points = rng.uniform(-1, 1, size=(n, 3)) * half
            points[np.arange(n), axis] = np.where(rng.rand(n) < 0.5, -1, 1) * half[axis]
        chunks.append(points + np.asarray(part.center))
    points = np.concatenate(chunks)
    return points[~_inside(parts, points)]


def scene_camera(rng: np.random.RandomState, radius: float = 1.6, focal: float = 2.0,
                 pitch_range: tuple[float, float] = (0.35, 1.45)) -> torch.Tensor:
    """A camera label [1, 25] looking at the origin from a random direction: yaw uniform in [0, 2 pi), polar angle
    (op3d.cameras pitch, pi/2 = horizontal) uniform in ``pitch_range`` (above the table by default)."""
    yaw, pitch = rng.uniform(0, 2 * math.pi), rng.uniform(*pitch_range)
    with torch.random.fork_rng(devices=[]):
        return orbit_camera(yaw, pitch, radius=radius, focal=focal)


def make_scene_dataset(dest: str | os.PathLike, scene: str = "table", train_views: int = 48, test_views: int = 8,
                       resolution: int = 64, seed: int = 0, surface_count: int = 20000) -> dict:
    """Write a named scene (`SCENES`) as a fitting dataset in the new folder ``dest``:

      * ``train/`` and ``test/``: op3d datasets of ``train_views`` / ``test_views`` R x R renders (R = resolution)
        from `scene_camera` draws of ``np.random.RandomState(seed)`` (training cameras first);
      * ``train-groundtruth.npz``, ``test-groundtruth.npz``: ``depth`` [N, R, R] float32 (distance along the unit
        ray, 6.0 on the background), ``mask`` [N, R, R] bool, ``labels`` [N, 25] float32;
      * ``surface.npy``: `surface_points` [P, 3] float32 of the scene (world units).

    Returns {"path", "train", "test", "surface"}."""
    dest = os.fspath(dest)
    parts = scene_parts(scene)
    os.makedirs(dest, exist_ok=True)
    if os.listdir(dest):
        raise FileExistsError(f"{dest}: expected a new or empty folder for the scene dataset")
    rng = np.random.RandomState(seed)
    result = {"path": dest}
    for split, count in (("train", train_views), ("test", test_views)):
        if count < 1:
            raise ValueError(f"{split}_views: expected >= 1, found {count}")
        labels = torch.cat([scene_camera(rng) for _ in range(count)])
        out = render_parts(parts, labels, resolution)
        pixels = ((out["image"].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        write_image_dataset(os.path.join(dest, split), pixels, labels=labels.numpy())
        with atomic_output(os.path.join(dest, f"{split}-groundtruth.npz")) as tmp:
            np.savez(tmp, depth=out["depth"][:, 0].numpy(), mask=out["mask"][:, 0].numpy(), labels=labels.numpy())
        result[split] = os.path.join(dest, split)
    with atomic_output(os.path.join(dest, "surface.npy")) as tmp:
        np.save(tmp, surface_points(parts, surface_count, rng).astype(np.float32))
    result["surface"] = os.path.join(dest, "surface.npy")
    return result
