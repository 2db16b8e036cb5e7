"""Exact renders of primitive scenes: ground-truth images, depths and masks for testing 3D metrics.

A scene is a few spheres and axis-aligned boxes in world units. Every pixel's ray (`op3d.rendering.rays.sample_rays`:
one ray through each pixel centre, OpenCV camera, normalized intrinsics) is intersected analytically with every
primitive; the nearest hit in front of the camera wins. Shading is Lambertian under one fixed directional light plus
ambient, so a surface point has the same colour from every view. Nothing is random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from op3d.cameras import unpack_label
from op3d.rendering.rays import sample_rays

LIGHT_DIRECTION = (1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3))
"""Unit vector from surfaces towards the light, world coordinates: from the upper right front (+x, +y up, +z)."""

AMBIENT = 0.3
"""Fraction of the albedo a surface shows when it faces away from the light; facing it fully shows all of it."""


def _vector(name: str, value) -> tuple[float, float, float]:
    """``value`` as a tuple of 3 floats, or a ValueError naming ``name``."""
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"{name}: expected 3 numbers, found {len(values)}")
    return values


def _rgb(name: str, value) -> tuple[float, float, float]:
    """An albedo of 3 floats in [0, 1], or a ValueError naming ``name``."""
    rgb = _vector(name, value)
    if not all(0.0 <= v <= 1.0 for v in rgb):
        raise ValueError(f"{name}: expected values in [0, 1], found {rgb}")
    return rgb


@dataclass(frozen=True)
class Sphere:
    """A sphere: ``center`` [3] and ``radius`` in world units, albedo ``rgb`` [3] in [0, 1]."""

    center: tuple[float, float, float]
    radius: float
    rgb: tuple[float, float, float]

    def __post_init__(self):
        object.__setattr__(self, "center", _vector("Sphere.center", self.center))
        object.__setattr__(self, "rgb", _rgb("Sphere.rgb", self.rgb))
        if not self.radius > 0:
            raise ValueError(f"Sphere.radius: expected > 0, found {self.radius}")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: ``center`` [3] and ``half_size`` [3] (> 0) in world units, albedo ``rgb`` [3] in [0, 1]."""

    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    rgb: tuple[float, float, float]

    def __post_init__(self):
        object.__setattr__(self, "center", _vector("Box.center", self.center))
        object.__setattr__(self, "half_size", _vector("Box.half_size", self.half_size))
        object.__setattr__(self, "rgb", _rgb("Box.rgb", self.rgb))
        if not all(h > 0 for h in self.half_size):
            raise ValueError(f"Box.half_size: expected all > 0, found {self.half_size}")


@dataclass(frozen=True)
class Scene:
    """Spheres and boxes; where two overlap along a ray the nearer surface is seen."""

    spheres: tuple[Sphere, ...] = ()
    boxes: tuple[Box, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "spheres", tuple(self.spheres))
        object.__setattr__(self, "boxes", tuple(self.boxes))


def _sphere_hit(origins: torch.Tensor, directions: torch.Tensor, sphere: Sphere):
    """Nearest positive ray distance to ``sphere`` and the outward normal there.

    origins, directions (unit): [B, M, 3] -> (t [B, M], inf where missed; normals [B, M, 3], zero where missed)."""
    center = origins.new_tensor(sphere.center)
    offset = origins - center
    b = (offset * directions).sum(-1)
    # r^2 - (squared distance from the centre to the ray's line): no cancellation of large terms near tangency.
    perpendicular = offset - b.unsqueeze(-1) * directions
    discriminant = sphere.radius ** 2 - (perpendicular * perpendicular).sum(-1)
    root = discriminant.clamp_min(0).sqrt()
    entry, leave = -b - root, -b + root
    t = torch.where(entry > 0, entry, leave)  # a camera inside the sphere sees its far side
    hit = (discriminant >= 0) & (t > 0)
    t = torch.where(hit, t, torch.inf)
    points = origins + torch.where(hit, t, 0).unsqueeze(-1) * directions
    normals = torch.where(hit.unsqueeze(-1), (points - center) / sphere.radius, 0)
    return t, normals


def _box_hit(origins: torch.Tensor, directions: torch.Tensor, box: Box):
    """Nearest positive ray distance to ``box`` (slab test) and the outward face normal there.

    origins, directions (unit): [B, M, 3] -> (t [B, M], inf where missed; normals [B, M, 3], zero where missed)."""
    center, half = origins.new_tensor(box.center), origins.new_tensor(box.half_size)
    t_low = (center - half - origins) / directions
    t_high = (center + half - origins) / directions
    # A ray parallel to a slab is inside it for all t or for none (the divisions above give inf or nan there).
    parallel = directions == 0
    in_slab = (origins - center).abs() <= half
    always = torch.where(in_slab, -torch.inf, torch.inf)
    t_enter = torch.where(parallel, always, torch.minimum(t_low, t_high)).amax(-1)
    t_leave = torch.where(parallel, -always, torch.maximum(t_low, t_high)).amin(-1)
    t = torch.where(t_enter > 0, t_enter, t_leave)  # a camera inside the box sees its far side
    hit = (t_enter <= t_leave) & (t > 0)
    t = torch.where(hit, t, torch.inf)
    local = (origins + torch.where(hit, t, 0).unsqueeze(-1) * directions - center) / half
    face = torch.nn.functional.one_hot(local.abs().argmax(-1), 3).to(local.dtype)
    normals = torch.where(hit.unsqueeze(-1), face * torch.sign(local), 0)
    return t, normals


def render_scene(scene: Scene, c: torch.Tensor, resolution: int, far: float = 4.0,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Render ``scene`` exactly from the cameras in ``c`` ([B, 25]: 16 cam2world + 9 normalized intrinsics).

    Returns a dict, tensors of ``dtype`` on ``c``'s device, R = resolution:
      * ``image`` [B, 3, R, R] in [-1, 1]: albedo * (AMBIENT + (1 - AMBIENT) * max(0, n . LIGHT_DIRECTION)),
        mapped from [0, 1]; background white (1).
      * ``depth`` [B, 1, R, R]: distance from the camera centre to the surface along each pixel's unit ray
        direction (not camera z), world units; ``far`` on the background.
      * ``mask`` [B, 1, R, R] bool: True where a primitive is hit.
    Where two surfaces are hit at exactly the same distance, spheres win over boxes and earlier over later."""
    if resolution < 1:
        raise ValueError(f"resolution: expected a positive integer, found {resolution}")
    cam2world, intrinsics = unpack_label(c.to(dtype))
    origins, directions = sample_rays(cam2world, intrinsics, resolution)
    batch = origins.shape[0]
    depth = torch.full(origins.shape[:2], torch.inf, dtype=dtype, device=origins.device)
    normals = torch.zeros_like(origins)
    albedo = torch.zeros_like(origins)
    hits = [(_sphere_hit(origins, directions, s), s.rgb) for s in scene.spheres]
    hits += [(_box_hit(origins, directions, b), b.rgb) for b in scene.boxes]
    for (t, n), rgb in hits:
        nearer = t < depth
        depth = torch.where(nearer, t, depth)
        normals = torch.where(nearer.unsqueeze(-1), n, normals)
        albedo = torch.where(nearer.unsqueeze(-1), origins.new_tensor(rgb), albedo)
    mask = torch.isfinite(depth)
    normals = torch.where(((normals * directions).sum(-1, keepdim=True) > 0), -normals, normals)  # face the camera
    lambert = (normals * origins.new_tensor(LIGHT_DIRECTION)).sum(-1, keepdim=True).clamp_min(0)
    colour = albedo * (AMBIENT + (1 - AMBIENT) * lambert) * 2 - 1
    colour = torch.where(mask.unsqueeze(-1), colour, 1)
    depth = torch.where(mask, depth, far)

    def to_image(x):
        return x.permute(0, 2, 1).reshape(batch, -1, resolution, resolution)

    return {"image": to_image(colour), "depth": to_image(depth.unsqueeze(-1)), "mask": to_image(mask.unsqueeze(-1))}
