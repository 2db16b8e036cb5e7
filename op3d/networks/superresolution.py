"""Superresolution: two StyleGAN2 skip blocks that turn the neural-rendered feature image into the final image
(spec section 3.1). One class, parameterised by the official variant names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from op3d.networks.ops import setup_filter
from op3d.networks.synthesis import SynthesisBlock


@dataclass(frozen=True)
class SuperresolutionVariant:
    """Layout of one official superresolution class.

    block channels: block0 (channels -> mid) at `mid_resolution`, block1 (mid -> last) at `img_resolution`.
    `upsample_first`: block0 doubles the resolution (else it works at the input resolution).
    `resize`: 'not_equal' resizes the input to `input_resolution` whenever it differs, 'smaller' only when smaller.
    """

    img_resolution: int  # 0: any output resolution (op3d variants), input = output // 2
    input_resolution: int
    mid_channels: int
    last_channels: int
    upsample_first: bool
    resize: str
    antialias_option: bool = True  # False: the class has no sr_antialias setting and resizes without antialiasing
    has_filter_buffer: bool = True


VARIANTS = {
    "SuperresolutionHybrid8XDC": SuperresolutionVariant(512, 128, 256, 128, True, "not_equal", has_filter_buffer=False),
    "SuperresolutionHybrid8X": SuperresolutionVariant(512, 128, 128, 64, True, "not_equal"),
    "SuperresolutionHybrid4X": SuperresolutionVariant(256, 128, 128, 64, False, "smaller"),
    "SuperresolutionHybrid2X": SuperresolutionVariant(128, 64, 128, 64, False, "not_equal"),
    "SuperresolutionHybridDeepfp32": SuperresolutionVariant(256, 128, 128, 64, False, "smaller",
                                                            antialias_option=False),
    # op3d addition for small models (CPU configs, tests): any output size R from R/2 neural rendering.
    "SuperresolutionSmall2X": SuperresolutionVariant(0, 0, 64, 32, False, "not_equal"),
}
SMALL_VARIANT_PATH = "op3d.networks.superresolution.SuperresolutionSmall2X"


def variant_for_resolution(img_resolution: int) -> str:
    """The official train script's default superresolution class for an output resolution."""
    by_res = {512: "SuperresolutionHybrid8XDC", 256: "SuperresolutionHybrid4X", 128: "SuperresolutionHybrid2X"}
    if img_resolution not in by_res:
        raise ValueError(f"no superresolution module for output resolution {img_resolution} (expected 128, 256, 512)")
    return by_res[img_resolution]


class Superresolution(nn.Module):
    """rgb [N, 3, r, r] + features [N, C, r, r] + ws [N, num_ws, 512] -> image [N, 3, R, R].

    Uses the last w for all six style inputs. Blocks are built for fp16 (with conv clamp 256) when
    sr_num_fp16_res > 0; they only run in fp16 on CUDA."""

    def __init__(self, variant: str, channels: int, img_resolution: int, sr_num_fp16_res: int = 0,
                 sr_antialias: bool = True, **block_kwargs):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown superresolution module {variant!r}; known: {sorted(VARIANTS)}")
        spec = VARIANTS[variant]
        if spec.img_resolution == 0:
            spec = dataclasses.replace(spec, img_resolution=img_resolution, input_resolution=img_resolution // 2)
        if img_resolution != spec.img_resolution:
            raise ValueError(f"{variant} produces {spec.img_resolution}x{spec.img_resolution} images, "
                             f"img_resolution is {img_resolution}")
        self.variant = variant
        self.spec = spec
        self.input_resolution = spec.input_resolution
        self.sr_antialias = sr_antialias if spec.antialias_option else False
        use_fp16 = sr_num_fp16_res > 0
        common = dict(w_dim=512, img_channels=3, use_fp16=use_fp16, conv_clamp=256 if use_fp16 else None,
                      **block_kwargs)
        mid_res = spec.input_resolution * 2 if spec.upsample_first else spec.input_resolution
        self.block0 = SynthesisBlock(channels, spec.mid_channels, resolution=mid_res, is_last=False,
                                     upsample=spec.upsample_first, **common)
        self.block1 = SynthesisBlock(spec.mid_channels, spec.last_channels, resolution=img_resolution, is_last=True,
                                     **common)
        if spec.has_filter_buffer:
            self.register_buffer("resample_filter", setup_filter())

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        size = x.shape[-1]
        resize = size != self.input_resolution if self.spec.resize == "not_equal" else size < self.input_resolution
        if resize:
            out = (self.input_resolution, self.input_resolution)
            x = F.interpolate(x, size=out, mode="bilinear", align_corners=False, antialias=self.sr_antialias)
            rgb = F.interpolate(rgb, size=out, mode="bilinear", align_corners=False, antialias=self.sr_antialias)
        x, rgb = self.block0(x, rgb, ws, **block_kwargs)
        x, rgb = self.block1(x, rgb, ws, **block_kwargs)
        return rgb
