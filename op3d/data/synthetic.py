"""Exact renders of primitive scenes: ground-truth images, depths and masks for testing 3D metrics, and a synthetic
training dataset built from them.

A scene is a few spheres and axis-aligned boxes in world units. Every pixel's ray (`op3d.rendering.rays.sample_rays`:
one ray through each pixel centre, OpenCV camera, normalized intrinsics) is intersected analytically with every
primitive; the nearest hit in front of the camera wins. Shading is Lambertian under one fixed directional light plus
ambient, so a surface point has the same colour from every view. Rendering is deterministic; the random scenes and
cameras of `make_synthetic_dataset` come from an explicit ``np.random.RandomState`` only.
"""

from __future__ import annotations

import colorsys
import math
import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from op3d.atomic import atomic_output
from op3d.cameras import orbit_camera, unpack_label
from op3d.datasets import DatasetError, write_image_dataset
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


def _sphere_hit(origins: torch.Tensor, directions: torch.Tensor, center: torch.Tensor, radius: torch.Tensor):
    """Nearest positive ray distance to a sphere and the outward normal there.

    origins, directions (unit): [B, M, 3]; center [B or 1, 1, 3], radius [B or 1, 1] (one sphere per batch item)
    -> (t [B, M], inf where missed; normals [B, M, 3], zero where missed)."""
    offset = origins - center
    b = (offset * directions).sum(-1)
    # r^2 - (squared distance from the centre to the ray's line): no cancellation of large terms near tangency.
    perpendicular = offset - b.unsqueeze(-1) * directions
    discriminant = radius ** 2 - (perpendicular * perpendicular).sum(-1)
    root = discriminant.clamp_min(0).sqrt()
    entry, leave = -b - root, -b + root
    t = torch.where(entry > 0, entry, leave)  # a camera inside the sphere sees its far side
    hit = (discriminant >= 0) & (t > 0)
    t = torch.where(hit, t, torch.inf)
    points = origins + torch.where(hit, t, 0).unsqueeze(-1) * directions
    normals = torch.where(hit.unsqueeze(-1), (points - center) / radius.unsqueeze(-1), 0)
    return t, normals


def _box_hit(origins: torch.Tensor, directions: torch.Tensor, center: torch.Tensor, half: torch.Tensor):
    """Nearest positive ray distance to an axis-aligned box (slab test) and the outward face normal there.

    origins, directions (unit): [B, M, 3]; center, half (half sizes): [B or 1, 1, 3] (one box per batch item)
    -> (t [B, M], inf where missed; normals [B, M, 3], zero where missed)."""
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


def _rays(c: torch.Tensor, resolution: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(origins, unit directions), [B, R*R, 3] of ``dtype``: one ray through each pixel centre of each camera of c
    [B, 25]."""
    if resolution < 1:
        raise ValueError(f"resolution: expected a positive integer, found {resolution}")
    cam2world, intrinsics = unpack_label(c.to(dtype))
    return sample_rays(cam2world, intrinsics, resolution)


def _composite(origins: torch.Tensor, directions: torch.Tensor, hits, resolution: int,
               far: float) -> dict[str, torch.Tensor]:
    """`render_scene`'s outputs from the rays (origins, unit directions: [B, R*R, 3]) and the hits of each primitive,
    a list of (t [B, R*R], normals [B, R*R, 3], albedo [B or 1, 1, 3]): the nearest hit wins, the earlier on a tie."""
    batch = origins.shape[0]
    depth = torch.full(origins.shape[:2], torch.inf, dtype=origins.dtype, device=origins.device)
    normals = torch.zeros_like(origins)
    albedo = torch.zeros_like(origins)
    for t, n, rgb in hits:
        nearer = t < depth
        depth = torch.where(nearer, t, depth)
        normals = torch.where(nearer.unsqueeze(-1), n, normals)
        albedo = torch.where(nearer.unsqueeze(-1), rgb, albedo)
    mask = torch.isfinite(depth)
    normals = torch.where(((normals * directions).sum(-1, keepdim=True) > 0), -normals, normals)  # face the camera
    lambert = (normals * origins.new_tensor(LIGHT_DIRECTION)).sum(-1, keepdim=True).clamp_min(0)
    colour = albedo * (AMBIENT + (1 - AMBIENT) * lambert) * 2 - 1
    colour = torch.where(mask.unsqueeze(-1), colour, 1)
    depth = torch.where(mask, depth, far)

    def to_image(x):
        return x.permute(0, 2, 1).reshape(batch, -1, resolution, resolution)

    return {"image": to_image(colour), "depth": to_image(depth.unsqueeze(-1)), "mask": to_image(mask.unsqueeze(-1))}


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
    origins, directions = _rays(c, resolution, dtype)

    def param(values):
        return origins.new_tensor(values).reshape(1, 1, -1)

    hits = [(*_sphere_hit(origins, directions, param(s.center), param(s.radius)[..., 0]), param(s.rgb))
            for s in scene.spheres]
    hits += [(*_box_hit(origins, directions, param(b.center), param(b.half_size)), param(b.rgb))
             for b in scene.boxes]
    return _composite(origins, directions, hits, resolution, far)


SPHERE, BOX = 0, 1
"""Object kinds of `render_objects` and of the ground truth of `make_synthetic_dataset`."""


def render_objects(kind, center, size, rgb, c: torch.Tensor, resolution: int, far: float = 4.0,
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Render one object per camera, batched: item i is the scene of the single object (kind[i], center[i], size[i],
    rgb[i]) seen from c[i]. Gives `render_scene`'s outputs for each of those one-object scenes.

    kind: [B] ints, `SPHERE` (0) or `BOX` (1); center [B, 3] and size [B, 3] in world units (a sphere's radius is
    size[i, 0], a box's half sizes are size[i]); rgb: [B, 3] albedo in [0, 1] (arrays or tensors);
    c: [B, 25] cameras (16 cam2world + 9 normalized intrinsics). Returns image [B, 3, R, R], depth [B, 1, R, R] and
    mask [B, 1, R, R] as `render_scene` does."""
    origins, directions = _rays(c, resolution, dtype)
    batch = origins.shape[0]
    kind = torch.as_tensor(kind, device=origins.device)
    center, size, rgb = (torch.as_tensor(v, dtype=dtype, device=origins.device) for v in (center, size, rgb))
    for name, value, shape in (("kind", kind, (batch,)), ("center", center, (batch, 3)), ("size", size, (batch, 3)),
                               ("rgb", rgb, (batch, 3))):
        if tuple(value.shape) != shape:
            raise ValueError(f"{name}: expected shape {list(shape)} (one per camera), found {list(value.shape)}")
    unknown = kind[(kind != SPHERE) & (kind != BOX)]
    if len(unknown):
        raise ValueError(f"kind: expected {SPHERE} (sphere) or {BOX} (box), found {sorted(set(unknown.tolist()))}")
    is_sphere = (kind == SPHERE).unsqueeze(-1)
    center, size, rgb = center.unsqueeze(1), size.unsqueeze(1), rgb.unsqueeze(1)
    t_sphere, n_sphere = _sphere_hit(origins, directions, center, size[..., 0])
    t_box, n_box = _box_hit(origins, directions, center, size)
    hits = [(torch.where(is_sphere, t_sphere, torch.inf), n_sphere, rgb),
            (torch.where(is_sphere, torch.inf, t_box), n_box, rgb)]
    return _composite(origins, directions, hits, resolution, far)


SCENE_RADIUS = 0.25
"""Every `random_scene` object lies inside the ball of this radius (world units) around the origin. So it lies inside
the unit box [-0.5, 0.5]^3 that the generator's planes span, and every default `random_camera` (distance 2.7, focal
4.2647) sees it whole: the ball subtends asin(0.25 / 2.7) = 0.093 rad of the 0.117 rad half field of view, which
leaves at least 0.1 of the image width (3.3 pixels at 32 px) of background on every side."""


def random_scene(rng: np.random.RandomState) -> Scene:
    """One object, drawn from ``rng`` (in this order, all uniform):

      * kind: a sphere or an axis-aligned box, with probability 1/2 each;
      * centre: each coordinate in [-0.02, 0.02];
      * size: a sphere's radius in [0.12, 0.2], or a box's three half sizes, each in [0.07, 0.12];
      * albedo: a saturated colour, hue in [0, 1), HSV saturation and value in [0.7, 1].

    World units. Every object lies inside the ball of `SCENE_RADIUS` around the origin (asserted), hence inside the
    unit box [-0.5, 0.5]^3 and in the frame of every default `random_camera`."""
    kind = rng.randint(2)
    center = tuple(rng.uniform(-0.02, 0.02, 3).tolist())
    if kind == SPHERE:
        radius = float(rng.uniform(0.12, 0.2))
        bound = radius
    else:
        half_size = tuple(rng.uniform(0.07, 0.12, 3).tolist())
        bound = math.hypot(*half_size)
    hue, saturation, value = rng.uniform(0.0, 1.0), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)
    rgb = colorsys.hsv_to_rgb(hue, saturation, value)
    assert math.hypot(*center) + bound <= SCENE_RADIUS
    if kind == SPHERE:
        return Scene(spheres=[Sphere(center, radius, rgb)])
    return Scene(boxes=[Box(center, half_size, rgb)])


def random_camera(rng: np.random.RandomState, yaw_range: float = 0.6, pitch_range: float = 0.3, radius: float = 2.7,
                  focal: float = 4.2647) -> torch.Tensor:
    """A camera label c [1, 25] float32 (16 cam2world + 9 normalized intrinsics) looking at the origin.

    Yaw and pitch (radians, `op3d.cameras` convention: pi/2, pi/2 is the frontal camera on +z) are drawn from ``rng``
    (yaw first) uniformly within ``yaw_range`` and ``pitch_range`` of frontal; the camera orbits the origin at
    ``radius`` (world units) with normalized ``focal``. Depends on ``rng`` only, and leaves torch's global RNG as it was
    (`orbit_camera` draws its zero-stddev noise from it)."""
    yaw = math.pi / 2 + rng.uniform(-yaw_range, yaw_range)
    pitch = math.pi / 2 + rng.uniform(-pitch_range, pitch_range)
    with torch.random.fork_rng(devices=[]):
        return orbit_camera(yaw, pitch, radius=radius, focal=focal)


def object_parameters(scene: Scene) -> tuple[int, tuple, tuple, tuple]:
    """(kind, centre [3], size [3], albedo [3]) of a one-object scene such as `random_scene` draws, as `render_objects`
    takes them (size: a sphere's radius three times, a box's half sizes)."""
    if scene.spheres:
        (sphere,) = scene.spheres
        return SPHERE, sphere.center, (sphere.radius,) * 3, sphere.rgb
    (box,) = scene.boxes
    return BOX, box.center, box.half_size, box.rgb


def groundtruth_path(path: str | os.PathLike) -> str:
    """Where `make_synthetic_dataset` writes the ground truth of the dataset at ``path``: 'data/synth.zip' or the
    folder 'data/synth' -> 'data/synth-groundtruth.npz'."""
    path = os.path.normpath(os.fspath(path))
    return (path[:-len(".zip")] if path.lower().endswith(".zip") else path) + "-groundtruth.npz"


RAYS_PER_BATCH = 1 << 17
"""`make_synthetic_dataset` renders this many rays at a time (128 images at 32 px, 2 at 256 px): tens of MB."""


def make_synthetic_dataset(path: str | os.PathLike, count: int, resolution: int = 32, seed: int = 0,
                           progress: bool = False) -> dict:
    """Write ``count`` renders of random one-object scenes as an op3d dataset, with their exact 3D ground truth.

    Image i renders `random_scene` from `random_camera` (both drawn from ``np.random.RandomState(seed)``, scene then
    camera, image after image), so the output depends on ``seed`` only. ``path`` (a new .zip or folder) gets
    `write_image_dataset`'s RGB PNGs (R = ``resolution``, white background) and dataset.json with the 25-float camera
    labels. `groundtruth_path` (``path`` without .zip, plus '-groundtruth.npz') gets, for the same N = ``count`` images
    in the same order:

      * ``depth`` [N, R, R] float32: distance from the camera centre along each pixel's unit ray (world units), 4.0 on
        the background (`render_scene`'s ``far``); ``mask`` [N, R, R] bool: True on the object;
      * ``labels`` [N, 25] float32: the camera labels of dataset.json;
      * ``kind`` [N] uint8 (`SPHERE` 0, `BOX` 1), ``center`` [N, 3], ``size`` [N, 3] (a sphere's radius three times,
        a box's half sizes) and ``rgb`` [N, 3] albedo in [0, 1], float64: `render_objects` of these arrays with
        ``labels`` (or `render_scene` of the object they describe) gives ``depth`` and ``mask``.

    Images are rendered `RAYS_PER_BATCH` rays at a time with `render_objects` and streamed into the dataset; memory
    holds the ground truth (about 5 N R^2 bytes). Both files are written atomically, and the dataset is removed again if
    the ground truth cannot be written. Returns {"path", "groundtruth", "count", "resolution"}."""
    path = os.fspath(path)
    if count < 1:
        raise ValueError(f"count: expected an int >= 1, found {count}")
    truth_path = groundtruth_path(path)
    if os.path.lexists(truth_path):
        raise DatasetError(f"{truth_path}: expected a new destination for the ground truth, found an existing file; "
                           f"refusing to overwrite")
    rng = np.random.RandomState(seed)
    objects, cameras = [], []
    for _ in range(count):
        objects.append(object_parameters(random_scene(rng)))
        cameras.append(random_camera(rng))
    kind, center, size, rgb = zip(*objects)
    kind = np.array(kind, np.uint8)
    center, size, rgb = (np.array(v, np.float64) for v in (center, size, rgb))
    labels = torch.cat(cameras)
    depth = np.empty((count, resolution, resolution), np.float32)
    mask = np.empty((count, resolution, resolution), bool)
    batch = max(1, RAYS_PER_BATCH // resolution ** 2)

    def images():
        with tqdm(total=count, desc=f"rendering {path}", disable=not progress) as bar:
            for start in range(0, count, batch):
                part = slice(start, start + batch)
                out = render_objects(kind[part], center[part], size[part], rgb[part], labels[part], resolution)
                depth[part], mask[part] = out["depth"][:, 0].numpy(), out["mask"][:, 0].numpy()
                pixels = ((out["image"].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
                yield from pixels.numpy()
                bar.update(len(pixels))

    write_image_dataset(path, images(), labels=labels.numpy())
    try:
        with atomic_output(truth_path) as tmp:
            np.savez(tmp, depth=depth, mask=mask, labels=labels.numpy(), kind=kind, center=center, size=size, rgb=rgb)
    except BaseException:
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
        raise
    return {"path": path, "groundtruth": truth_path, "count": count, "resolution": resolution}
