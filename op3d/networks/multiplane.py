"""The OrthoPlanes backbone: a StyleGAN2 synthesis network whose per-block skip output layer
(`to_depth_feature`) runs K times per sample, each time styled by [w_block, PE(t_k)] (spec section 1.2).

Output: [N * K, img_channels, 256, 256], row n * K + k = plane k of sample n; channels-last in memory on the
`plane_gemm` fast path (the layout the fused plane lookup reads without a copy).
"""

from __future__ import annotations

import math

import torch

from op3d.fast_paths import FAST
from op3d.networks.synthesis import StyleGAN2Backbone, SynthesisBlock, SynthesisNetwork, ToRGBLayer


def plane_positions(n_planes: int, device=None) -> torch.Tensor:
    """t_k = linspace(-1, 1, K): the plane positions the positional code is computed at. [K]"""
    return torch.linspace(-1, 1, n_planes, device=device)


def positional_encoding(t: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """[t, cos(2^0 pi t), sin(2^0 pi t), ..., cos(2^(L-1) pi t), sin(2^(L-1) pi t)]: [..., 1 + 2L]."""
    t = t.unsqueeze(-1)
    terms = [t]
    for i in range(n_freqs):
        terms += [torch.cos(2 ** i * math.pi * t), torch.sin(2 ** i * math.pi * t)]
    return torch.cat(terms, dim=-1)


class MultiplaneSynthesisBlock(SynthesisBlock):
    """SynthesisBlock whose skip output is computed once per plane from the shared conv trunk.

    plane_styles: [N, K, w_dim + code_dim] (style input of `to_depth_feature` for each plane)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, code_dim: int, conv_clamp: float | None = 256, **kwargs):
        super().__init__(in_channels, out_channels, w_dim=w_dim, resolution=resolution, img_channels=img_channels,
                         is_last=is_last, conv_clamp=conv_clamp, with_torgb=False, **kwargs)
        self.to_depth_feature = ToRGBLayer(out_channels, img_channels, w_dim=w_dim + code_dim, conv_clamp=conv_clamp,
                                           channels_last=self.channels_last)

    def forward(self, x, img, ws, plane_styles: torch.Tensor, force_fp32: bool = False, fused_modconv=None,
                update_emas: bool = False, **layer_kwargs):
        n, k = plane_styles.shape[:2]
        x, fused_modconv = self.run_convs(x, iter(ws.unbind(dim=1)), n, ws.device, force_fp32, fused_modconv,
                                          **layer_kwargs)
        img = self.upsample_image(img)
        if FAST.plane_gemm and self.to_depth_feature.weight.shape[-1] == 1:
            y = self.to_depth_feature.forward_planes(x, plane_styles).to(torch.float32)
        else:
            y = self.to_depth_feature(x.repeat_interleave(k, dim=0), plane_styles.reshape(n * k, -1),
                                      fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        img = img.add_(y) if img is not None else y
        return x, img


class MultiplaneSynthesisNetwork(SynthesisNetwork):
    """ws [N, num_ws, w_dim] -> planes [N * K, img_channels, R, R].

    Block b's planes are styled by [w_j, PE(t_k)] with j the index of the block's first conv w, or, when
    `shared_w` [N, w_dim] is given (the official sample_mixed path), by [shared_w, PE(t_k)] in every block."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, fourier_L: int = 10, **kwargs):
        self.fourier_L = fourier_L
        super().__init__(w_dim, img_resolution, img_channels, **kwargs)

    def make_block(self, in_channels, out_channels, **kwargs) -> MultiplaneSynthesisBlock:
        return MultiplaneSynthesisBlock(in_channels, out_channels, code_dim=2 * self.fourier_L + 1, **kwargs)

    def plane_code(self, n_planes: int, like: torch.Tensor) -> torch.Tensor:
        """PE(t_k) for every plane, on like's device and in its dtype: [K, 2L + 1]."""
        return positional_encoding(plane_positions(n_planes, device=like.device), self.fourier_L).to(like.dtype)

    @staticmethod
    def plane_styles(w: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """[w, PE(t_k)] for every plane: w [N, w_dim], code [K, 2L + 1] -> [N, K, w_dim + 2L + 1]."""
        n, k = w.shape[0], code.shape[0]
        return torch.cat([w.unsqueeze(1).expand(n, k, -1), code.unsqueeze(0).expand(n, -1, -1)], dim=-1)

    def forward(self, ws: torch.Tensor, n_planes: int, shared_w: torch.Tensor | None = None,
                **block_kwargs) -> torch.Tensor:
        x = img = None
        code = self.plane_code(n_planes, ws)  # computed once: the same for every block (about 40 ops each)
        shared_styles = None if shared_w is None else self.plane_styles(shared_w, code)
        for res, block_ws in zip(self.block_resolutions, self.split_ws(ws)):
            styles = shared_styles if shared_styles is not None else self.plane_styles(block_ws[:, 0], code)
            x, img = getattr(self, f"b{res}")(x, img, block_ws, styles, **block_kwargs)
        return img


class MultiplaneBackbone(StyleGAN2Backbone):
    """Mapping + multiplane synthesis (the official `network_stylegan2_multiplane.Generator`)."""

    synthesis_class = MultiplaneSynthesisNetwork
