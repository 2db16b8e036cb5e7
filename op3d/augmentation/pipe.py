"""The ADA augmentation pipe: differentiable augmentation of discriminator inputs with probability p
(Karras et al., "Training Generative Adversarial Networks with Limited Data", NeurIPS 2020, appendix B;
reference doc section 5.2, "Augmentation").

Implemented groups (the 'bgc' preset that EG3D / OP3D train with, all strength 1):

* pixel blitting: xflip, rotate90, xint -- exact integer index maps with mirror padding (no resampling at all);
* general geometric: isotropic scale, pre-rotation, anisotropic scale, post-rotation, xfrac -- one 3x3 matrix per
  sample, applied by the resampler (op3d.augmentation.transforms);
* colour: brightness, contrast, luma flip, hue rotation, saturation -- one 4x4 matrix per sample acting on each
  consecutive RGB triple of the channels (so a 6-channel [image, image_raw] input gets one transform per sample).

Left out: the image-space filtering ('f'), additive noise ('n') and cutout ('c') groups; no op3d / EG3D config uses
them.

Resampling, matrices and geometry conventions: op3d.augmentation.transforms.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from op3d.augmentation.transforms import (blit, brightness_shift, contrast_scale, hue_rotation, lowpass_taps, luma_flip,
                                          resample, rotate2d, saturation_scale, scale2d, translate2d)
from op3d.networks.construction import records_init_kwargs

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

# Official --augpipe preset names -> AugmentPipe strengths (only presets made of implemented groups).
AUGMENT_PRESETS: dict[str, dict[str, float]] = {
    "blit": dict(_BLIT),
    "geom": dict(_GEOM),
    "color": dict(_COLOR),
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
}


def augment_pipe_kwargs(spec: str) -> dict[str, float]:
    """AugmentPipe keyword arguments for an official `--augpipe` preset name ('bgc' is the one OP3D uses)."""
    if spec not in AUGMENT_PRESETS:
        raise ValueError(f"augment pipe preset: expected one of {sorted(AUGMENT_PRESETS)}, got {spec!r} "
                         "(the filter / noise / cutout groups are not implemented)")
    return dict(AUGMENT_PRESETS[spec])




@records_init_kwargs
class AugmentPipe(nn.Module):
    """ADA augmentation: images [B, C, H, W] float (values nominally in [-1, 1]) -> [B, C, H, W].

    Each transform is applied to each sample independently with probability strength * p (the rotations with
    1 - sqrt(1 - strength * p) each, so that at least one happens with probability strength * p). All channels of a
    sample get the same geometric transform; colour transforms act on each consecutive RGB triple (C % 3 == 0) the
    same way. Constructor arguments are the official names; strengths are >= 0 (0 disables a transform).
    The only state is the buffer 'p' (scalar float32)."""

    def __init__(self, xflip: float = 0, rotate90: float = 0, xint: float = 0, xint_max: float = 0.125,
                 scale: float = 0, rotate: float = 0, aniso: float = 0, xfrac: float = 0, scale_std: float = 0.2,
                 rotate_max: float = 1, aniso_std: float = 0.2, xfrac_std: float = 0.125,
                 brightness: float = 0, contrast: float = 0, lumaflip: float = 0, hue: float = 0,
                 saturation: float = 0, brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1,
                 saturation_std: float = 1):
        super().__init__()
        strengths = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate, aniso=aniso,
                         xfrac=xfrac, brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue,
                         saturation=saturation)
        negative = {k: v for k, v in strengths.items() if v < 0}
        if negative:
            raise ValueError(f"AugmentPipe strengths must be >= 0, got {negative}")
        self.strengths = {k: float(v) for k, v in strengths.items()}
        self.xint_max = float(xint_max)
        self.scale_std = float(scale_std)
        self.rotate_max = float(rotate_max)
        self.aniso_std = float(aniso_std)
        self.xfrac_std = float(xfrac_std)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.hue_max = float(hue_max)
        self.saturation_std = float(saturation_std)
        self.register_buffer("p", torch.zeros([]))
        self.register_buffer("lowpass", lowpass_taps(), persistent=False)

    def _uses(self, group: dict) -> bool:
        return any(self.strengths[name] > 0 for name in group)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"AugmentPipe: expected float images [B, C, H, W], got {images.dtype} "
                             f"{list(images.shape)}")
        p = float(self.p)
        if p == 0 or not any(s > 0 for s in self.strengths.values()):
            return images
        x = images
        if self._uses(_BLIT):
            x = self._pixel_blitting(x, p)
        if self._uses(_GEOM):
            x = self._general_geometric(x, p)
        if self._uses(_COLOR):
            x = self._colour(x, p)
        return x

    def _draw(self, name: str, p: float, values: torch.Tensor, identity: float, prob: float | None = None):
        """values where a per-sample coin with probability strength * p (or `prob`) comes up, else `identity`.
        values: [B] or [B, 2]. Returns (gated values, applied mask [B] bool)."""
        prob = self.strengths[name] * p if prob is None else prob
        applied = torch.rand(values.shape[0], device=values.device) < prob
        mask = applied.reshape([-1] + [1] * (values.ndim - 1))
        return torch.where(mask, values, torch.full_like(values, identity)), applied

    def _pixel_blitting(self, x: torch.Tensor, p: float) -> torch.Tensor:
        b, _, height, width = x.shape
        dev = x.device
        g = torch.eye(3, device=dev).repeat(b, 1, 1)
        if self.strengths["xflip"] > 0:
            flip, _ = self._draw("xflip", p, torch.randint(2, [b], device=dev).float(), 0)
            g = g @ scale2d(1 - 2 * flip, torch.ones_like(flip))
        if self.strengths["rotate90"] > 0:
            if height != width:
                raise ValueError(f"AugmentPipe rotate90 needs square images, got {height} x {width}")
            quarter, _ = self._draw("rotate90", p, torch.randint(4, [b], device=dev).float(), 0)
            g = g @ rotate2d(quarter * (math.pi / 2))
        if self.strengths["xint"] > 0:
            shift = (torch.rand([b, 2], device=dev) * 2 - 1) * self.xint_max
            shift, _ = self._draw("xint", p, shift, 0)
            g = g @ translate2d(torch.round(shift[:, 0] * width), torch.round(shift[:, 1] * height))
        return blit(x, g)

    def _general_geometric(self, x: torch.Tensor, p: float) -> torch.Tensor:
        b, _, height, width = x.shape
        dev = x.device
        p_rot = 1 - math.sqrt(max(1 - self.strengths["rotate"] * p, 0))

        def angle() -> torch.Tensor:
            return (torch.rand(b, device=dev) * 2 - 1) * (math.pi * self.rotate_max)

        # (name, draw values, identity value, probability override, values -> [B, 3, 3]) in the paper's order.
        steps = [
            ("scale", lambda: torch.exp2(torch.randn(b, device=dev) * self.scale_std), 1, None,
             lambda s: scale2d(s, s)),
            ("rotate", angle, 0, p_rot, rotate2d),
            ("aniso", lambda: torch.exp2(torch.randn(b, device=dev) * self.aniso_std), 1, None,
             lambda s: scale2d(s, 1 / s)),
            ("rotate", angle, 0, p_rot, rotate2d),
            ("xfrac", lambda: torch.randn([b, 2], device=dev) * self.xfrac_std, 0, None,
             lambda t: translate2d(t[:, 0] * width, t[:, 1] * height)),
        ]
        g = torch.eye(3, device=dev).repeat(b, 1, 1)
        any_applied = torch.zeros(b, dtype=torch.bool, device=dev)
        for name, draw, identity, prob, to_matrix in steps:
            if self.strengths[name] > 0:
                value, applied = self._draw(name, p, draw(), identity, prob)
                g = g @ to_matrix(value)
                any_applied |= applied
        index = any_applied.nonzero()[:, 0]
        if index.numel() == 0:
            return x
        return x.index_copy(0, index, resample(x[index], g[index], self.lowpass))

    def _colour(self, x: torch.Tensor, p: float) -> torch.Tensor:
        b, c, height, width = x.shape
        if c % 3 != 0:
            raise ValueError(f"AugmentPipe colour transforms need RGB triples (C % 3 == 0), got C = {c}")
        dev = x.device
        # (name, draw values, identity value, values -> [B, 4, 4]) in the paper's order.
        steps = [
            ("brightness", lambda: torch.randn(b, device=dev) * self.brightness_std, 0, brightness_shift),
            ("contrast", lambda: torch.exp2(torch.randn(b, device=dev) * self.contrast_std), 1, contrast_scale),
            ("lumaflip", lambda: torch.randint(2, [b], device=dev).float(), 0, luma_flip),
            ("hue", lambda: (torch.rand(b, device=dev) * 2 - 1) * (math.pi * self.hue_max), 0, hue_rotation),
            ("saturation", lambda: torch.exp2(torch.randn(b, device=dev) * self.saturation_std), 1,
             saturation_scale),
        ]
        m = torch.eye(4, device=dev).repeat(b, 1, 1)
        for name, draw, identity, to_matrix in steps:
            if self.strengths[name] > 0:
                value, _ = self._draw(name, p, draw(), identity)
                m = to_matrix(value) @ m
        m = m.to(x.dtype)
        triples = x.reshape(b, c // 3, 3, height * width)
        out = torch.einsum("bij,bgjn->bgin", m[:, :3, :3], triples) + m[:, None, :3, 3:]
        return out.reshape(b, c, height, width)

    def extra_repr(self) -> str:
        enabled = ", ".join(f"{k}={v:g}" for k, v in self.strengths.items() if v > 0) or "none"
        return f"p={float(self.p):.4f}, transforms: {enabled}"


