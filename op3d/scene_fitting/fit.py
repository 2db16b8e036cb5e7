"""Fit one static scene from posed images by optimising a plane field directly, and evaluate it on held-out views
(PSNR, depth error against ground-truth depth) and by its mesh (Chamfer distance to the ground-truth surface).

Views come from op3d datasets (PNGs + dataset.json with 25-float cameras). Pixels are [-1, 1]; depths are distances
along each pixel's unit ray in world units; the field is rendered by `op3d.rendering.renderer.render_rays`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from op3d.cameras import unpack_label
from op3d.data.synthetic import groundtruth_path
from op3d.rendering.rays import sample_rays
from op3d.rendering.renderer import render_rays
from op3d.scene_fitting.field import FieldSpec, fitting_settings, make_field
from op3d.training.dataset import DatasetError, ImageFolderDataset


@dataclass
class Views:
    """N posed square views: images [N, 3, R, R] in [-1, 1], labels c [N, 25], and, when known, exact depth
    [N, 1, R, R] (world units along the unit ray) and foreground mask [N, 1, R, R] bool."""

    images: torch.Tensor
    labels: torch.Tensor
    depth: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "Views":
        pick = (lambda x: None if x is None else x[index])
        return Views(self.images[index], self.labels[index], pick(self.depth), pick(self.mask))

    def rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(origins, unit directions) [N * R * R, 3] of every pixel, row-major within each view."""
        cam2world, intrinsics = unpack_label(self.labels)
        origins, directions = sample_rays(cam2world, intrinsics, self.images.shape[-1])
        return origins.reshape(-1, 3), directions.reshape(-1, 3)

    def colours(self) -> torch.Tensor:
        """Pixel colours [N * R * R, 3] in the order of `rays`."""
        return self.images.permute(0, 2, 3, 1).reshape(-1, 3)


def load_views(path: str | os.PathLike) -> Views:
    """The RGB views of an op3d dataset (folder or .zip with 25-float camera labels), with the exact depth and mask
    of `groundtruth_path(path)` when that file exists (as written by op3d.data.scenes / synthetic)."""
    path = os.fspath(path)
    dataset = ImageFolderDataset(path)
    if dataset.num_channels != 3 or dataset.label_dim != 25:
        raise DatasetError(f"{path}: expected RGB images with 25-float camera labels, found {dataset.num_channels} "
                           f"channels and {dataset.label_dim}-float labels")
    images = torch.from_numpy(np.stack([dataset[i][0] for i in range(len(dataset))])).float() / 127.5 - 1
    labels = torch.from_numpy(np.stack([dataset.get_label(i) for i in range(len(dataset))])).float()
    views = Views(images, labels)
    truth = groundtruth_path(path)
    if os.path.isfile(truth):
        data = np.load(truth)
        if data["depth"].shape != (len(views), *images.shape[2:]):
            raise DatasetError(f"{truth}: expected depth [{len(views)}, R, R] matching {path}, found "
                               f"{list(data['depth'].shape)}")
        views.depth = torch.from_numpy(data["depth"]).float().unsqueeze(1)
        views.mask = torch.from_numpy(data["mask"]).unsqueeze(1)
    return views


def split_views(path: str | os.PathLike, holdout_every: int = 8) -> tuple[Views, Views, np.ndarray | None]:
    """(training views, held-out views, ground-truth surface points [P, 3] or None) of a scene.

    ``path`` is either a folder with ``train/`` and ``test/`` datasets (and optionally ``surface.npy``), as written by
    `op3d.data.scenes.make_scene_dataset`, or one dataset, of which every ``holdout_every``-th view is held out."""
    path = os.fspath(path)
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        train, test = load_views(os.path.join(path, "train")), load_views(os.path.join(path, "test"))
        surface = os.path.join(path, "surface.npy")
        return train, test, (np.load(surface) if os.path.isfile(surface) else None)
    views = load_views(path)
    held = np.arange(len(views)) % holdout_every == holdout_every - 1
    if held.all() or not held.any():
        raise DatasetError(f"{path}: expected more than {holdout_every - 1} views to hold out every "
                           f"{holdout_every}th, found {len(views)}")
    return views.subset(torch.from_numpy(~held)), views.subset(torch.from_numpy(held)), None


@dataclass
class FitOptions:
    """Optimisation: ``steps`` Adam steps on ``rays`` random training rays each; learning rates ``lr_planes`` and
    ``lr_decoder`` (cosine decay to 5%); ``tv_weight`` x total variation of the planes; ``samples`` coarse + fine
    samples per ray; ``box_warp``: side of the cube the planes span (the scene must lie inside it)."""

    steps: int = 1500
    rays: int = 2048
    lr_planes: float = 0.02
    lr_decoder: float = 0.005
    tv_weight: float = 0.0
    samples: int = 32
    box_warp: float = 1.0
    white_back: bool = True
    seed: int = 0


def _total_variation(planes: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring texels along the two plane axes (the last two dimensions)."""
    return ((planes[..., 1:, :] - planes[..., :-1, :]) ** 2).mean() + ((planes[..., 1:] - planes[..., :-1]) ** 2).mean()


def fit_field(spec: FieldSpec, train: Views, options: FitOptions, progress=None):
    """Optimise a field of ``spec`` on the training views. ``progress(step, loss)`` is called every 100 steps.
    Returns the field (eval mode, no gradients)."""
    settings = fitting_settings(options.box_warp, options.samples, options.white_back)
    field = make_field(spec, settings, seed=options.seed)
    origins, directions = train.rays()
    colours = train.colours()
    optimizer = torch.optim.Adam([{"params": [field.planes], "lr": options.lr_planes},
                                  {"params": field.decoder.parameters(), "lr": options.lr_decoder}], betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / max(options.steps, 1), 1))))
    generator = torch.Generator().manual_seed(options.seed)
    for step in range(options.steps):
        pick = torch.randint(len(origins), [options.rays], generator=generator)
        torch.manual_seed(options.seed * 1_000_003 + step)  # the renderer's jitter and importance draws
        rgb, _, _ = render_rays(field.field, origins[pick][None], directions[pick][None], settings)
        loss = ((rgb[0] - colours[pick]) ** 2).mean()
        if options.tv_weight > 0:
            loss = loss + options.tv_weight * _total_variation(field.planes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None and (step % 100 == 0 or step == options.steps - 1):
            progress(step, loss.item())
    return field.eval().requires_grad_(False)


@torch.no_grad()
def render_views(field, views: Views, chunk: int = 4096, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Render every view of ``views`` with the field: (images [N, 3, R, R] in [-1, 1], depth [N, 1, R, R])."""
    origins, directions = views.rays()
    torch.manual_seed(seed)
    rgb, depth = [], []
    for start in range(0, len(origins), chunk):
        part = slice(start, start + chunk)
        features, d, _ = render_rays(field.field, origins[part][None], directions[part][None], field.settings)
        rgb.append(features[0])
        depth.append(d[0])
    n, _, r, _ = views.images.shape
    images = torch.cat(rgb).reshape(n, r, r, 3).permute(0, 3, 1, 2)
    return images, torch.cat(depth).reshape(n, 1, r, r)


def psnr(images: torch.Tensor, targets: torch.Tensor) -> float:
    """PSNR in dB over all pixels of images in [-1, 1] (peak 1 on the [0, 1] scale), clipped to [-1, 1] first."""
    mse = (((images.clamp(-1, 1) - targets) / 2) ** 2).mean()
    return float(-10 * torch.log10(mse))


def chamfer_distance(points_a: np.ndarray, points_b: np.ndarray) -> float:
    """Symmetric Chamfer distance: (mean nearest distance from a to b + from b to a) / 2, world units."""
    from scipy.spatial import cKDTree

    return float((cKDTree(points_b).query(points_a)[0].mean() + cKDTree(points_a).query(points_b)[0].mean()) / 2)


def mesh_chamfer(field, surface: np.ndarray, resolution: int = 128, level: float = 10.0, count: int = 20000,
                 seed: int = 0) -> float:
    """Chamfer distance between ``count`` points sampled on the field's marching-cubes mesh at raw density
    ``level`` (op3d.shapes, resolution^3 grid over the planes' cube) and the ground-truth surface points [P, 3].
    nan when the density never crosses ``level``."""
    import trimesh

    from op3d.shapes import density_mesh, extract_density

    sigma = extract_density(field, torch.zeros(1, 1, 1), resolution=resolution, compat_grid=False)
    try:
        vertices, faces = density_mesh(sigma, level=level, cube_length=field.settings.box_warp)
    except ValueError:
        return math.nan
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return chamfer_distance(np.asarray(points), surface)


def evaluate(field, test: Views, surface: np.ndarray | None = None, mesh_resolution: int = 128,
             level: float = 10.0) -> dict[str, float]:
    """Held-out metrics: ``psnr`` (dB), ``depth_error`` (mean |depth - true depth| on the true foreground, world
    units; nan without ground truth) and ``chamfer`` (world units; nan without surface points)."""
    images, depth = render_views(field, test)
    result = {"psnr": psnr(images, test.images), "depth_error": math.nan, "chamfer": math.nan}
    if test.depth is not None:
        result["depth_error"] = float((depth - test.depth).abs()[test.mask].mean())
    if surface is not None:
        result["chamfer"] = mesh_chamfer(field, surface, mesh_resolution, level)
    return result


def fit_and_evaluate(spec: FieldSpec, train: Views, test: Views, surface: np.ndarray | None, options: FitOptions,
                     progress=None, **evaluate_kwargs) -> dict:
    """`fit_field` then `evaluate`; adds ``label``, ``plane_parameters``, ``decoder_parameters`` and ``seconds``
    (fitting time). Returns (result dict, field)."""
    start = time.perf_counter()
    field = fit_field(spec, train, options, progress)
    seconds = time.perf_counter() - start
    result = {"label": spec.label, "plane_parameters": spec.plane_parameters,
              "decoder_parameters": sum(p.numel() for p in field.decoder.parameters()), "seconds": seconds}
    result.update(evaluate(field, test, surface, **evaluate_kwargs))
    return result, field
