"""Images from a generator the way the official generation scripts make them: seeded latents, the frontal
conditioning camera, multi-view renders, uint8 conversion.

    G = op3d.load_network_pkl(path)['G_ema']
    ws = op3d.generation.seed_to_ws(G, seed=0, truncation_psi=0.7)
    images = op3d.generation.render_views(G, ws, yaw_offsets=(0.4, 0, -0.4))   # list of [H, W, 3] uint8
"""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import torch

from op3d.cameras import LookAtPoseSampler, fov_to_intrinsics, pack_label

OFFICIAL_YAW_OFFSETS = (0.8, 0.6, 0.4, 0.0, -0.4, -0.6, -0.8)
OFFICIAL_PITCH_OFFSET = -0.2
OFFICIAL_FOV_DEG = 18.837


def parse_range(text: str, name: str = "--seeds") -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]. Raises ValueError naming the option on anything else."""
    values = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"{name}: expected non-negative integers or ranges like '0-3,7', got {text!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{name}: range {part.strip()!r} is empty (end before start)")
        values.extend(range(lo, hi + 1))
    return values


def seed_latent(seed: int, z_dim: int, device="cpu") -> torch.Tensor:
    """z [1, z_dim] from numpy's RandomState(seed), as the official scripts draw it (float64), cast to float32
    (which the mapping network does first anyway)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float().to(device)


def camera_label(G, yaw: float, pitch: float, fov_deg: float = OFFICIAL_FOV_DEG, device="cpu") -> torch.Tensor:
    """A [1, 25] label at absolute angles (pi/2, pi/2 = frontal) around the model's camera pivot and radius."""
    s = G.settings
    cam2world = LookAtPoseSampler.sample(yaw, pitch, torch.tensor(s.avg_camera_pivot, dtype=torch.float32),
                                         radius=s.avg_camera_radius, device=device)
    return pack_label(cam2world, fov_to_intrinsics(fov_deg, device=device))


def conditioning_label(G, fov_deg: float = OFFICIAL_FOV_DEG, device="cpu") -> torch.Tensor:
    """The frontal camera the official scripts condition the mapping on."""
    return camera_label(G, math.pi / 2, math.pi / 2, fov_deg, device)


def seed_to_ws(G, seed: int, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
               fov_deg: float = OFFICIAL_FOV_DEG, device="cpu") -> torch.Tensor:
    """ws [1, num_ws, w_dim] for a seed, conditioned on the frontal camera."""
    with torch.no_grad():
        return G.mapping(seed_latent(seed, G.z_dim, device), conditioning_label(G, fov_deg, device),
                         truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> [B, H, W, C] uint8 (x * 127.5 + 128, clamped), as the official scripts."""
    return (image.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def depth_to_uint8(depth: torch.Tensor) -> np.ndarray:
    """[B, 1, H, W] depth -> [B, H, W, 3] uint8: near is bright, normalised to the batch's own range."""
    d = -depth
    d = (d - d.min()) / (d.max() - d.min()).clamp_min(1e-8)
    return to_uint8(d.repeat(1, 3, 1, 1) * 2 - 1)


@torch.no_grad()
def render_views(G, ws: torch.Tensor, yaw_offsets=OFFICIAL_YAW_OFFSETS, pitch_offset: float = OFFICIAL_PITCH_OFFSET,
                 fov_deg: float = OFFICIAL_FOV_DEG, noise_mode: str = "const", batch: int = 1,
                 outputs=("image",), conditions: dict | None = None) -> dict:
    """Render one sample's ws [1, num_ws, w_dim] from cameras at pi/2 + yaw, pi/2 + pitch.

    Returns {output name: [V, H, W, 3] uint8} for outputs among 'image', 'image_raw', 'image_depth'.
    The backbone planes are computed once and reused for every view. conditions: the pose condition of the
    SMPL-conditional generator (batched dict with batch 1), passed to every view."""
    device = ws.device
    labels = torch.cat([camera_label(G, math.pi / 2 + y, math.pi / 2 + pitch_offset, fov_deg, device)
                        for y in yaw_offsets])
    results = {name: [] for name in outputs}
    for start in range(0, len(labels), batch):
        c = labels[start:start + batch]
        w = ws.expand(len(c), -1, -1)
        pose = () if conditions is None else ({k: v.expand(len(c), *v.shape[1:]) for k, v in conditions.items()},)
        out = G.synthesis(w, c, *pose, noise_mode=noise_mode, cache_backbone=start == 0 and len(c) == batch,
                          use_cached_backbone=start > 0 and len(c) == batch)
        for name in outputs:
            convert = depth_to_uint8 if name == "image_depth" else to_uint8
            results[name].append(convert(out[name]))
    G._last_planes = None
    return {name: np.concatenate(chunks) for name, chunks in results.items()}


VIEW_FILE_SUFFIXES = (("image", "RGB"), ("image_raw", "raw"), ("image_depth", "depth"))


def save_view_strips(G, ws: torch.Tensor, yaw_offsets, outdir, prefix: str, extra_images: bool = False,
                     **render_kwargs) -> list[pathlib.Path]:
    """Render one sample's views (render_views) and save each output as one horizontal strip of the views:
    `<prefix>_RGB.png`, and with extra_images also `_raw` (the neural rendering) and `_depth`. Returns the paths."""
    from PIL import Image

    outputs = tuple(name for name, _ in VIEW_FILE_SUFFIXES) if extra_images else ("image",)
    views = render_views(G, ws, yaw_offsets, outputs=outputs, **render_kwargs)
    paths = []
    for name, suffix in VIEW_FILE_SUFFIXES:
        if name in views:
            paths.append(pathlib.Path(outdir) / f"{prefix}_{suffix}.png")
            Image.fromarray(np.concatenate(list(views[name]), axis=1)).save(paths[-1])
    return paths


def prepare_sampling(G, depth_samples: int, truncation_cutoff: int | None) -> int | None:
    """The gen_samples settings: depth_samples stratified and importance samples per ray, and the truncation
    cutoff (None when it covers every w)."""
    G.rendering_kwargs.update(depth_resolution=depth_samples, depth_resolution_importance=depth_samples)
    if truncation_cutoff is not None and truncation_cutoff >= G.backbone.mapping.num_ws:
        return None
    return truncation_cutoff


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, then mps, then cpu; anything else is passed to torch.device."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


RANDOM_TINY = "random-tiny"
# The bundled demo model: a 32-px OrthoPlanes generator trained by op3d's own training script on op3d's synthetic
# spheres-and-boxes data (how: docs/demo.md). The default --network of gen_samples.py.
DEMO_NETWORK = str(pathlib.Path(__file__).resolve().parent / "assets" / "demo-shapes32.pkl")
DEMO_SHAPE_RES = 128  # its default shape resolution: 512^3 is far finer than 32-px training data supports


def random_tiny_generator(seed: int = 0):
    """A small, randomly initialised (untrained) OrthoPlanes generator for smoke runs on any machine:
    128x128 output, 32x32 neural rendering, K=4, L=4, 64x64 planes. Its images are noise-like; it shows the pipeline
    works."""
    from op3d.networks.generator import OrthoPlanesGenerator

    torch.manual_seed(seed)
    G = OrthoPlanesGenerator(
        z_dim=64, c_dim=25, w_dim=512, img_resolution=128, img_channels=3, channel_base=2048, channel_max=32,
        mapping_kwargs={"num_layers": 2}, per_dir_plane_number=4, fourier_L=4, sr_num_fp16_res=0, num_fp16_res=0,
        conv_clamp=None, plane_resolution=64,
        rendering_kwargs={"superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
                          "depth_resolution": 24, "depth_resolution_importance": 24, "ray_start": 2.25,
                          "ray_end": 3.3, "box_warp": 1, "c_scale": 1.0, "avg_camera_radius": 2.7,
                          "avg_camera_pivot": [0, 0, 0]})
    G.neural_rendering_resolution = 32
    return G.eval().requires_grad_(False)


def refuse_url(path: str, flag: str) -> None:
    """ValueError naming the flag if path is a URL: op3d never downloads."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", path):
        raise ValueError(f"{flag}: {path} is a URL; op3d does not download files. Download it first and pass the "
                         "local path")


def load_generator(network: str, device="cpu"):
    """G_ema of a snapshot path, or the untrained `random-tiny` generator. URLs are refused (op3d never downloads)."""
    if network == RANDOM_TINY:
        return random_tiny_generator().to(device)
    refuse_url(network, "--network")
    from op3d.checkpoints import load_network_pkl

    return load_network_pkl(network, device=device)["G_ema"]
