"""The schedules of the GAN loss (spec 5.2): what changes with the number of images seen (the blur of D's inputs, the
pose-conditioning swap probability, the neural rendering resolution), and the blur itself."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def blur_sigma_at(cur_nimg: int, blur_init_sigma: float, blur_fade_kimg: float) -> float:
    """Std (pixels) of the blur applied to D's inputs: blur_init_sigma fading linearly to 0 over blur_fade_kimg
    thousand images (0 when blur_fade_kimg is 0)."""
    if blur_fade_kimg <= 0:
        return 0.0
    return max(1 - cur_nimg / (blur_fade_kimg * 1e3), 0) * blur_init_sigma


def blur_kernel(sigma: float, device=None) -> torch.Tensor | None:
    """1-D blur taps f(x) = 2^(-(x / sigma)^2) for x = -floor(3 sigma) .. floor(3 sigma), normalised to sum 1:
    [2 floor(3 sigma) + 1] float32, or None when floor(3 sigma) is 0 (no blur)."""
    half = int(np.floor(sigma * 3))
    if half <= 0:
        return None
    f = torch.arange(-half, half + 1, dtype=torch.float32, device=device).div(sigma).square().neg().exp2()
    return f / f.sum()


def blur_images(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable same-size blur of [N, C, H, W] with `blur_kernel(sigma)` (zero padding; rows filtered first, then
    columns, as the official separable FIR filter does). Returns the input itself when there is nothing to blur."""
    f = blur_kernel(sigma, device=images.device)
    if f is None:
        return images
    half = (f.shape[0] - 1) // 2
    c = images.shape[1]
    x = F.pad(images, [half, half, half, half])
    x = F.conv2d(x, f.to(x.dtype).reshape(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, f.to(x.dtype).reshape(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def swap_probability_at(cur_nimg: int, gpc_reg_prob: float | None, gpc_reg_fade_kimg: float) -> float | None:
    """Probability that G is conditioned on another sample's label: 1 fading linearly to gpc_reg_prob over
    gpc_reg_fade_kimg thousand images. None (no gpc_reg_prob) means G's label is all zeros."""
    if gpc_reg_prob is None:
        return None
    alpha = min(cur_nimg / (gpc_reg_fade_kimg * 1e3), 1) if gpc_reg_fade_kimg > 0 else 1
    return (1 - alpha) + alpha * gpc_reg_prob


def neural_rendering_resolution_at(cur_nimg: int, initial: int, final: int | None, fade_kimg: float) -> int:
    """Neural rendering resolution: `initial`, or, when `final` is set, rint of the linear fade from initial to
    final over fade_kimg thousand images."""
    if final is None:
        return initial
    alpha = min(cur_nimg / (fade_kimg * 1e3), 1) if fade_kimg > 0 else 1
    return int(np.rint(initial * (1 - alpha) + final * alpha))

