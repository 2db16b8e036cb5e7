"""Stage 1: latent projection, the StyleGAN2 projector recipe (Karras et al. 2020, appendix D; as used for EG3D
models), with the option of optimising the camera as well.

* Start: w_avg, the mean of `w_avg_samples` (10 000) mapped z ~ N(0, I) at the conditioning camera; their spread
  w_std = sqrt(mean ||w - w_avg||^2) scales the latent noise. In W one w [B, 1, w_dim] drives every layer; in W+
  each layer has its own copy [B, num_ws, w_dim].
* Adam (default betas 0.9, 0.999) on w, the noise maps and (when asked) the camera; the learning rate follows
  schedules.learning_rate (peak 0.1, ramps 0.05 / 0.25), and w gets Gaussian noise of schedules.latent_noise_scale
  while the loss is evaluated.
* Loss per image: losses.ImageLoss (LPIPS at 256 px, optionally + MSE, or MSE alone) plus, with noise
  optimisation, 1e5 x losses.noise_regularization of the backbone's noise maps, which are renormalised to zero
  mean and unit variance after every step and rendered with noise_mode='const'.
* Camera (op3d.inversion.camera.OrbitCamera): optimised jointly during the first `camera_fraction` of the steps
  with its own learning rate, ramped with the same schedule over that part, then frozen.

G is changed in place when noise maps are optimised: pass a copy (pipeline does)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from tqdm import tqdm

from op3d.inversion import schedules
from op3d.inversion.losses import ImageLoss, noise_regularization, normalize_noise_, psnr

LATENT_SPACES = ("w", "w+")


@dataclasses.dataclass
class ProjectionSettings:
    """The projector's numbers (defaults: the published recipe; camera_* are op3d's)."""
    num_steps: int = 1000
    latent_space: str = "w"
    lr: float = 0.1
    lr_rampup: float = schedules.LR_RAMPUP
    lr_rampdown: float = schedules.LR_RAMPDOWN
    initial_noise: float = schedules.INITIAL_NOISE
    noise_ramp: float = schedules.NOISE_RAMP
    optimize_noise: bool = True
    noise_weight: float = 1e5
    w_avg_samples: int = 10_000
    optimize_camera: bool = False
    camera_lr: float = 0.02
    camera_fraction: float = 0.5

    def __post_init__(self):
        if self.latent_space not in LATENT_SPACES:
            raise ValueError(f"--latent-space: expected w or w+, got {self.latent_space!r}")
        if self.num_steps < 1:
            raise ValueError(f"--num-steps: must be >= 1, got {self.num_steps}")
        if not 0 < self.camera_fraction <= 1:
            raise ValueError(f"--camera-fraction: must be in (0, 1], got {self.camera_fraction}")


@dataclasses.dataclass
class Projection:
    """Stage 1 result: ws [B, num_ws, w_dim] (the found w, repeated over the layers in W), the camera, and per
    step the loss [B], PSNR [B] (dB, of the render the step's gradient came from) and wall time (s)."""
    ws: torch.Tensor
    camera: object
    loss: np.ndarray
    psnr: np.ndarray
    seconds: np.ndarray


@torch.no_grad()
def w_statistics(G, c: torch.Tensor, num_samples: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """w_avg [1, 1, w_dim] and w_std of num_samples mapped z ~ N(0, I) (seeded) at the labels c [1, 25]."""
    device = c.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    w = []
    for start in range(0, num_samples, 1000):
        z = torch.randn(min(1000, num_samples - start), G.z_dim, generator=gen).to(device)
        w.append(G.mapping(z, c.expand(len(z), -1))[:, :1].float())
    w = torch.cat(w)
    w_avg = w.mean(dim=0, keepdim=True)
    return w_avg, float((w - w_avg).square().sum(dim=2).mean().sqrt())


def noise_maps(G) -> list[torch.Tensor]:
    """The noise buffers a 'const' render uses: the backbone's, and the superresolution's when its noise mode is
    'const'."""
    prefixes = ["backbone."] + (["superresolution."] if G.settings.superresolution_noise_mode == "const" else [])
    return [buf for name, buf in G.named_buffers()
            if name.endswith("noise_const") and any(name.startswith(p) for p in prefixes)]


def _initial_ws(G, camera, settings: ProjectionSettings, seed: int) -> tuple[torch.Tensor, float]:
    """Starting w per image ([B, 1 or num_ws, w_dim]) and the w_std of the first image's camera."""
    with torch.no_grad():
        labels = camera.label()
    stats = [w_statistics(G, labels[i:i + 1], settings.w_avg_samples, seed) for i in range(len(labels))]
    w = torch.cat([w_avg for w_avg, _ in stats])
    if settings.latent_space == "w+":
        w = w.repeat(1, G.backbone.mapping.num_ws, 1)
    return w, stats[0][1]


def project(G, target: torch.Tensor, camera, loss: ImageLoss, settings: ProjectionSettings, seed: int = 0,
            progress: bool = False) -> Projection:
    """Project target images [B, 3, R, R] in [-1, 1] seen by `camera` (OrbitCamera with B cameras) into G's
    latent space (see the module docstring). Seeds torch's global generator (the renderer's draws) with seed."""
    device = target.device
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    num_ws = G.backbone.mapping.num_ws
    w, w_std = _initial_ws(G, camera, settings, seed)
    w = w.clone().requires_grad_(True)
    maps = noise_maps(G) if settings.optimize_noise else []
    if maps:
        normalize_noise_(maps)
        for buf in maps:
            buf.requires_grad_(True)
    groups = [{"params": [w] + maps, "name": "latent"}]
    if settings.optimize_camera:
        camera.requires_grad_(True)
        groups.append({"params": list(camera.parameters()), "name": "camera"})
    else:
        camera.requires_grad_(False)
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999), lr=0.0)
    loss.set_target(target)
    losses, psnrs, seconds = [], [], []
    bar = tqdm(range(settings.num_steps), desc="projection", unit="step", disable=not progress)
    for step in bar:
        start = time.perf_counter()
        t = schedules.progress(step, settings.num_steps)
        for group in optimizer.param_groups:
            if group["name"] == "latent":
                group["lr"] = schedules.learning_rate(t, settings.lr, settings.lr_rampup, settings.lr_rampdown)
            elif t < settings.camera_fraction:
                group["lr"] = schedules.learning_rate(t / settings.camera_fraction, settings.camera_lr,
                                                      settings.lr_rampup, settings.lr_rampdown)
            else:
                group["lr"] = 0.0
                camera.requires_grad_(False)
        sigma = schedules.latent_noise_scale(t, w_std, settings.initial_noise, settings.noise_ramp)
        noisy = w + torch.randn(w.shape, generator=gen).to(device) * sigma
        ws = noisy.expand(-1, num_ws, -1) if settings.latent_space == "w" else noisy
        images = G.synthesis(ws, camera.label(), noise_mode="const")["image"]
        per_image, _ = loss(images)
        total = per_image.sum()
        if maps:
            total = total + settings.noise_weight * noise_regularization(maps)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if maps:
            normalize_noise_(maps)
        losses.append(per_image.detach().cpu().numpy())
        psnrs.append(psnr(images.detach(), target).cpu().numpy())  # .cpu() waits for the device: timing is exact
        seconds.append(time.perf_counter() - start)
        bar.set_postfix(loss=f"{float(per_image.detach().mean()):.4g}", psnr=f"{float(psnrs[-1].mean()):.2f}")
    for buf in maps:
        buf.requires_grad_(False)
    camera.requires_grad_(False)
    final = w.detach()
    final = final.expand(-1, num_ws, -1).contiguous() if settings.latent_space == "w" else final
    return Projection(final, camera, np.stack(losses), np.stack(psnrs), np.array(seconds))
