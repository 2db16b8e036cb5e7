"""Stage 2: pivotal tuning (PTI; Roich et al. 2021, "Pivotal Tuning for Latent-based Editing of Real Images").

The projected w is the pivot and stays fixed; the generator's weights are tuned so that its render of the pivot
matches the target: Adam, learning rate 3e-4 (published), loss LPIPS + lambda_L2 * MSE with lambda_L2 = 1 (MSE
alone without a detector). The optional locality regulariser keeps the rest of the latent space in place: each
step it draws w_z = mapping(z) for z ~ N(0, I), moves from the pivot towards it by alpha = 30,
w_r = w_p + alpha (w_z - w_p) / ||w_z - w_p||, and adds lambda_R * (LPIPS + lambda_L2^R * MSE) between the tuned
and the original generator's renders of w_r (lambda_R = 0.1, lambda_L2^R = 1, one sample).

The camera, the noise maps and w are those of stage 1. `G` is tuned in place (pass a copy); `G_reference` is
only read."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from tqdm import tqdm

from op3d.inversion.losses import ImageLoss, Lpips, mse, psnr


@dataclasses.dataclass
class PTISettings:
    """PTI's numbers (defaults: the published ones)."""
    num_steps: int = 350
    lr: float = 3e-4
    locality: bool = False
    locality_weight: float = 0.1
    locality_l2_weight: float = 1.0
    locality_alpha: float = 30.0

    def __post_init__(self):
        if self.num_steps < 0:
            raise ValueError(f"--pti-steps: must be >= 0, got {self.num_steps}")


@dataclasses.dataclass
class Tuning:
    """Stage 2 result: per step the loss [B] and PSNR [B] of the pivot's render and the wall time (s)."""
    loss: np.ndarray
    psnr: np.ndarray
    seconds: np.ndarray


def locality_ws(G, ws_pivot: torch.Tensor, c: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """ws [B, num_ws, w_dim] at distance alpha from the pivot towards a freshly mapped w_z (per image)."""
    with torch.no_grad():
        z = torch.randn(ws_pivot.shape[0], G.z_dim, generator=gen).to(ws_pivot.device)
        w_z = G.mapping(z, c)
        direction = w_z - ws_pivot
        return ws_pivot + alpha * direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def locality_loss(G, G_reference, ws: torch.Tensor, c: torch.Tensor, settings: PTISettings,
                  lpips: Lpips | None) -> torch.Tensor:
    """lambda_R * (LPIPS + lambda_L2^R * MSE) between the tuned and the original renders of ws, summed."""
    with torch.no_grad():
        reference = G_reference.synthesis(ws, c, noise_mode="const")["image"]
    images = G.synthesis(ws, c, noise_mode="const")["image"]
    loss = settings.locality_l2_weight * mse(images, reference)
    if lpips is not None:
        loss = loss + Lpips.distance(lpips.features(images), lpips.features(reference).detach())
    return settings.locality_weight * loss.sum()


def pivotal_tuning(G, ws: torch.Tensor, c: torch.Tensor, target: torch.Tensor, loss: ImageLoss,
                   settings: PTISettings, G_reference=None, mapping_c: torch.Tensor | None = None, seed: int = 0,
                   progress: bool = False) -> Tuning:
    """Tune G's weights (in place) so that G.synthesis(ws, c) matches target [B, 3, R, R] (see the module
    docstring). mapping_c: the labels for the locality samples' mapping (default c)."""
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    G.requires_grad_(True)
    optimizer = torch.optim.Adam(G.parameters(), lr=settings.lr, betas=(0.9, 0.999))
    loss.set_target(target)
    c, ws = c.detach(), ws.detach()
    mapping_c = c if mapping_c is None else mapping_c
    losses, psnrs, seconds = [], [], []
    bar = tqdm(range(settings.num_steps), desc="pivotal tuning", unit="step", disable=not progress)
    for _ in bar:
        start = time.perf_counter()
        images = G.synthesis(ws, c, noise_mode="const")["image"]
        per_image, _ = loss(images)
        total = per_image.sum()
        if settings.locality and G_reference is not None:
            ws_r = locality_ws(G, ws, mapping_c, settings.locality_alpha, gen)
            total = total + locality_loss(G, G_reference, ws_r, c, settings, loss.lpips if loss.uses_lpips else None)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        losses.append(per_image.detach().cpu().numpy())
        psnrs.append(psnr(images.detach(), target).cpu().numpy())  # .cpu() waits for the device: timing is exact
        seconds.append(time.perf_counter() - start)
        bar.set_postfix(loss=f"{float(per_image.detach().mean()):.4g}", psnr=f"{float(psnrs[-1].mean()):.2f}")
    G.requires_grad_(False)
    empty = np.zeros((0, target.shape[0]), np.float32)
    return Tuning(np.stack(losses) if losses else empty, np.stack(psnrs) if psnrs else empty, np.array(seconds))
