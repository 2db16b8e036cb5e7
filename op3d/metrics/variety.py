"""Variety of a set of renders of one-object scenes: shape kind (box or sphere), colour and size.

Made to tell whether a generator trained on op3d's synthetic data (`op3d.data.synthetic`: one sphere or
axis-aligned box per image, saturated colour, white background) learned the data's variety or collapsed onto
one mode. Per image:

  * foreground: pixels whose colour is farther than `FOREGROUND_THRESHOLD` from white;
  * kind: the foreground's depth is back-projected to 3D points with the known camera, and an axis-aligned box and
    a sphere are both fitted to the points (robust mean distance to the surface, Adam from the same start); the
    image is a box when the box fits better;
  * hue: the hue of the mean foreground colour (Lambertian shading scales the albedo, so it keeps its hue);
  * size: the square root of the foreground's area fraction (a linear size in units of the image width).

`compare` sets a sample of fakes against the reals: box fraction, hue-histogram distance and coverage, size spread.

Conventions: ``image`` [N, 3, R, R] RGB in [-1, 1]; ``depth`` [N, 1, Rd, Rd] distance along each pixel's unit ray
(world units, as the generator's ``image_depth``), Rd may differ from R; ``c`` [N, 25] camera labels.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch

from op3d.cameras import unpack_label
from op3d.metrics.consistency import unproject_depth

FOREGROUND_THRESHOLD = 0.3
"""A pixel is foreground when some channel lies more than this below white (1) on the [-1, 1] scale. The data's
darkest possible background-free colour is far from it (saturation >= 0.7), and a white background is 0."""

TRIM_FRACTION = 0.8
"""Each fit scores the mean distance of the best-fitting fraction of the points: the rest (silhouette pixels whose
rendered depth mixes object and background) is ignored by both fits alike."""

FIT_STEPS = 150
"""Adam steps of each primitive fit (learning rate `FIT_LR`, world units)."""

FIT_LR = 0.01

HUE_BINS = 12
"""Bins of the hue histograms (30 degrees each)."""

MIN_POINTS = 8
"""Images with fewer foreground points than this get no kind (nan): nothing to fit."""


def foreground_mask(image: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
    """image [N, 3, R, R] in [-1, 1] -> bool [N, 1, r, r] (r = resolution, default R; r must divide R): pixels
    farther than `FOREGROUND_THRESHOLD` from white. At r < R a pixel is foreground when all the R / r x R / r image
    pixels it covers are: a pixel on the silhouette, whose depth ray may miss the object, is left out."""
    if image.ndim != 4 or image.shape[1] < 3:
        raise ValueError(f"image: expected shape [N, 3, R, R], found {list(image.shape)}")
    mask = (1 - image[:, :3].float()).amax(1, keepdim=True) > FOREGROUND_THRESHOLD
    if resolution is None or resolution == mask.shape[-1]:
        return mask
    if mask.shape[-1] % resolution:
        raise ValueError(f"resolution: expected a divisor of the image size {mask.shape[-1]}, found {resolution}")
    return -torch.nn.functional.max_pool2d(-mask.float(), mask.shape[-1] // resolution) > 0.5


def _box_distance(points: torch.Tensor, center: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """|signed distance| of points [N, M, 3] to axis-aligned boxes (center, half sizes: [N, 1, 3]) -> [N, M]."""
    q = (points - center).abs() - half
    outside = q.clamp_min(0).norm(dim=-1)
    inside = q.amax(-1).clamp_max(0)
    return (outside + inside).abs()


def _sphere_distance(points: torch.Tensor, center: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """|distance| of points [N, M, 3] to spheres (center [N, 1, 3], radius [N, 1]) -> [N, M]."""
    return ((points - center).norm(dim=-1) - radius).abs()


def _trimmed_mean(distance: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of the smallest `TRIM_FRACTION` of each row's valid distances: [N, M] -> [N]."""
    count = valid.sum(-1)
    keep = (count * TRIM_FRACTION).ceil().clamp_min(1)
    ranked = torch.where(valid, distance, torch.inf).sort(-1).values
    rank = torch.arange(distance.shape[-1], device=distance.device)
    kept = rank < keep.unsqueeze(-1)
    return torch.where(kept, ranked, 0).sum(-1) / keep


def fit_residuals(points: torch.Tensor, valid: torch.Tensor, origins: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fit an axis-aligned box and a sphere to each row of points [N, M, 3] (world units; valid [N, M] bool), seen
    from camera centres origins [N, 3].

    Both fits start from the same place: the centroid of the valid points moved away from the camera by half their
    spread (the visible surface lies in front of the object's centre), size = the spread. Each runs `FIT_STEPS` Adam
    steps on the trimmed mean distance (`TRIM_FRACTION`). Returns {"box", "sphere"}: [N] trimmed mean distances
    (world units) of the fitted primitives."""
    weight = valid.unsqueeze(-1).to(points.dtype)
    centroid = (points * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1)
    points = torch.where(valid.unsqueeze(-1), points, centroid).detach()
    spread = ((points - centroid).norm(dim=-1) * valid).amax(-1).clamp_min(1e-3)
    away = torch.nn.functional.normalize(centroid - origins.unsqueeze(1), dim=-1)
    start = centroid + 0.5 * spread.reshape(-1, 1, 1) * away
    results = {}
    for name, dims in (("box", 3), ("sphere", 1)):
        center = start.clone().requires_grad_(True)
        log_size = spread.log().reshape(-1, 1, 1).expand(-1, 1, dims).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([center, log_size], lr=FIT_LR)
        for step in range(FIT_STEPS + 1):
            with torch.enable_grad():
                size = log_size.exp()
                distance = (_box_distance(points, center, size) if name == "box"
                            else _sphere_distance(points, center, size[..., 0]))
                loss = _trimmed_mean(distance, valid)
                if step == FIT_STEPS:
                    break
                optimizer.zero_grad()
                loss.sum().backward()
                optimizer.step()
        results[name] = loss.detach()
    return results


def _hues(image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Hue in [0, 1) of each image's mean foreground colour: image [N, 3, R, R] in [-1, 1], mask [N, 1, R, R]
    -> [N] (nan where there is no foreground)."""
    weight = mask.float()
    count = weight.sum((1, 2, 3))
    mean = ((image[:, :3].float() + 1) / 2 * weight).sum((2, 3)) / count.clamp_min(1).unsqueeze(-1)
    hues = np.array([colorsys.rgb_to_hsv(*rgb)[0] for rgb in mean.clamp(0, 1).tolist()])
    return np.where(count.numpy() > 0, hues, np.nan)


def image_statistics(image: torch.Tensor, depth: torch.Tensor, c: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image variety statistics of N renders (shapes as in the module docstring).

    Returns float64 arrays [N]: ``box`` (1 where the box fits the back-projected foreground depth better than the
    sphere, 0 where the sphere does, nan with fewer than `MIN_POINTS` foreground depth pixels), ``box_residual`` and
    ``sphere_residual`` (world units), ``hue`` in [0, 1) (nan without foreground) and ``size`` (sqrt of the
    foreground's area fraction of the image)."""
    if depth.ndim != 4 or depth.shape[1] != 1 or len(depth) != len(image) or tuple(c.shape) != (len(image), 25):
        raise ValueError(f"expected image [N, 3, R, R], depth [N, 1, Rd, Rd] and c [N, 25], found "
                         f"{list(image.shape)}, {list(depth.shape)} and {list(c.shape)}")
    image, depth, c = image.detach().float().cpu(), depth.detach().float().cpu(), c.detach().float().cpu()
    mask = foreground_mask(image)
    depth_mask = foreground_mask(image, depth.shape[-1]).reshape(len(image), -1)
    points = unproject_depth(depth, c)
    residuals = fit_residuals(points, depth_mask, unpack_label(c)[0][:, :3, 3])
    box = (residuals["box"] < residuals["sphere"]).double().numpy()
    box = np.where(depth_mask.sum(-1).numpy() >= MIN_POINTS, box, np.nan)
    return {"box": box, "box_residual": residuals["box"].double().numpy(),
            "sphere_residual": residuals["sphere"].double().numpy(), "hue": _hues(image, mask),
            "size": mask.float().mean((1, 2, 3)).sqrt().double().numpy()}


def hue_histogram(hue: np.ndarray) -> np.ndarray:
    """Normalised histogram [HUE_BINS] of the finite hues in [0, 1) (all zero when there are none)."""
    hue = hue[np.isfinite(hue)]
    counts = np.histogram(hue, bins=HUE_BINS, range=(0.0, 1.0))[0].astype(np.float64)
    return counts / max(len(hue), 1)


def compare(fake: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict[str, float]:
    """Variety of fakes against reals, both `image_statistics` outputs.

    Returns:
      * ``box_fraction_fake``, ``box_fraction_real``: share of images classified as boxes;
      * ``fit_residual_fake``, ``fit_residual_real``: median over images of the better fit's residual (world units):
        how well a box or a sphere explains the depth at all. A large value says the kind is a guess among two poor
        fits (blobs, ragged or noisy depth), whatever the box fraction;
      * ``hue_distance``: total-variation distance (0 same, 1 disjoint) of the two hue histograms (`HUE_BINS` bins);
      * ``hue_coverage``: share of the hue bins holding >= 1/HUE_BINS of the reals that also hold at least a quarter
        of the reals' share among the fakes (1: every colour present);
      * ``size_mean_fake/real``, ``size_std_fake/real`` and ``size_distance``: the 1-D Wasserstein distance of the two
        size distributions, in units of the reals' size std (0: same distribution)."""
    fake_hist, real_hist = hue_histogram(fake["hue"]), hue_histogram(real["hue"])
    occupied = real_hist >= 1 / HUE_BINS / 2
    covered = fake_hist >= real_hist / 4
    fake_size, real_size = (np.sort(s[np.isfinite(s)]) for s in (fake["size"], real["size"]))
    quantiles = np.linspace(0.0, 1.0, 201)
    wasserstein = np.abs(np.quantile(fake_size, quantiles) - np.quantile(real_size, quantiles)).mean()
    return {"box_fraction_fake": float(np.nanmean(fake["box"])), "box_fraction_real": float(np.nanmean(real["box"])),
            "fit_residual_fake": _fit_residual(fake), "fit_residual_real": _fit_residual(real),
            "hue_distance": float(0.5 * np.abs(fake_hist - real_hist).sum()),
            "hue_coverage": float((covered & occupied).sum() / max(occupied.sum(), 1)),
            "size_mean_fake": float(fake_size.mean()), "size_mean_real": float(real_size.mean()),
            "size_std_fake": float(fake_size.std()), "size_std_real": float(real_size.std()),
            "size_distance": float(wasserstein / max(real_size.std(), 1e-12))}


def _fit_residual(stats: dict[str, np.ndarray]) -> float:
    """Median over the classified images of min(box, sphere) residual."""
    best = np.minimum(stats["box_residual"], stats["sphere_residual"])[np.isfinite(stats["box"])]
    return float(np.median(best)) if len(best) else float("nan")


def generator_statistics(G, labels: torch.Tensor, seed: int = 0, batch: int = 16,
                         truncation_psi: float = 1.0) -> dict[str, np.ndarray]:
    """`image_statistics` of len(labels) fakes of G: fake i has latent i of ``torch.Generator().manual_seed(seed)``'s
    normal draws, is conditioned on and rendered from labels[i] [25] (e.g. the dataset's cameras), noise 'const'.
    Uses G's ``image`` for colour and foreground and its ``image_depth`` for the shape fit."""
    device = next(G.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn([len(labels), G.z_dim], generator=generator)
    torch.manual_seed(seed)
    parts = []
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            c = labels[start:start + batch].to(device)
            ws = G.mapping(z[start:start + batch].to(device), c, truncation_psi=truncation_psi)
            out = G.synthesis(ws, c, noise_mode="const")
            parts.append(image_statistics(out["image"], out["image_depth"], c))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def groundtruth_statistics(path, count: int | None = None) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """`image_statistics` of the first ``count`` (default all) images of a synthetic dataset, from its ground-truth
    file (`op3d.data.synthetic.groundtruth_path`; re-rendered exactly, with the exact depth), and their camera
    labels [count, 25]."""
    from op3d.data import synthetic

    try:
        truth = np.load(path)
        kind, center, size, rgb, labels = (truth[k] for k in ("kind", "center", "size", "rgb", "labels"))
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: expected a synthetic dataset's ground truth (.npz with kind, center, size, rgb, "
                         f"labels): {error}") from None
    part = slice(0, count)
    c = torch.from_numpy(labels[part])
    out = synthetic.render_objects(kind[part], center[part], size[part], rgb[part], c, int(truth["depth"].shape[-1]))
    return image_statistics(out["image"], out["depth"], c), c
