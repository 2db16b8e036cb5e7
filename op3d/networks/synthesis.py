"""StyleGAN2 synthesis network (skip architecture): modulated layers, blocks, the network and the
mapping + synthesis backbone that EG3D's tri-plane generator and the superresolution modules use.

Blocks run in fp16 only when built with use_fp16 and the input is on CUDA; elsewhere they run in fp32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from op3d.fast_paths import FAST
from op3d.networks.layers import FullyConnectedLayer, MappingNetwork
from op3d.networks.ops import ACTIVATIONS, bias_act, modulated_conv2d, runs_fp16, setup_filter, upsample2d


def resolve_fused_modconv(fused_modconv, default, training: bool) -> bool:
    """The official 'inference_only' default means: fused grouped conv in eval mode, shared conv in training."""
    if fused_modconv is None:
        fused_modconv = default
    if fused_modconv == "inference_only":
        fused_modconv = not training
    return bool(fused_modconv)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally x2 upsampling) + per-pixel noise + bias + lrelu, clamped by conv_clamp.

    x: [N, C_in, R/up, R/up], w: [N, w_dim] -> [N, C_out, R, R]. noise_mode: 'random', 'const' or 'none'."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation][1]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                   .to(memory_format=memory_format))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1) -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp,
                        overwrite=True)  # x: the convolution's new output


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation + bias (the skip-image output of a block).

    x: [N, C_in, H, W], w: [N, w_dim] -> [N, out_channels, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                   .to(memory_format=memory_format))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, overwrite=True)

    def forward_planes(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """forward(x repeated K times, w) for K styles of the same features, as one batched matrix product (the
        `plane_gemm` fast path of 1x1 layers): x [N, C_in, H, W], w [N, K, w_dim] -> [N * K, out_channels, H, W],
        stored channels-last."""
        n, k = w.shape[:2]
        _, c_in, h, width = x.shape
        styles = self.affine(w.reshape(n * k, -1)) * self.weight_gain
        weight = self.weight.reshape(self.out_channels, c_in) * styles.reshape(n, k, 1, c_in)
        pixels = x.permute(0, 2, 3, 1).reshape(n, 1, h * width, c_in)
        y = torch.matmul(pixels, weight.to(x.dtype).transpose(-1, -2))
        y = bias_act(y, self.bias.to(y.dtype), clamp=self.conv_clamp, dim=3, overwrite=True)
        return y.view(n * k, h, width, self.out_channels).permute(0, 3, 1, 2)


class SynthesisBlock(nn.Module):
    """One resolution of the skip-architecture synthesis network.

    conv0 (x2 upsampling unless `upsample=False` or it is the 4x4 block, which starts from a learned constant),
    conv1, then a ToRGB layer whose output is added to the x2-upsampled running image.
    ws: [N, num_conv + num_torgb, w_dim]. Returns (x [N, C_out, R, R], img [N, img_channels, R, R] float32)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = 256, use_fp16: bool = False, fp16_channels_last: bool = False,
                 fused_modconv_default=True, upsample: bool = True, with_torgb: bool = True, **layer_kwargs):
        super().__init__()
        if architecture != "skip":
            raise ValueError(f"only the 'skip' synthesis architecture is used by OP3D/EG3D models, got "
                             f"{architecture!r}")
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.fused_modconv_default = fused_modconv_default
        self.upsample = upsample
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                        up=2 if upsample else 1, resample_filter=resample_filter,
                                        conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if with_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1

    def run_convs(self, x: torch.Tensor | None, w_iter, batch_size: int, device: torch.device,
                  force_fp32: bool = False, fused_modconv=None, **layer_kwargs) -> tuple[torch.Tensor, bool]:
        """The conv trunk: returns the block features and the resolved fused_modconv flag."""
        if not runs_fp16(device):
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        channels_last = (self.channels_last and not force_fp32) or FAST.channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        fused_modconv = resolve_fused_modconv(fused_modconv, self.fused_modconv_default, self.training)
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([batch_size, 1, 1, 1])
            x = x.contiguous(memory_format=memory_format)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        else:
            in_res = self.resolution // 2 if self.upsample else self.resolution
            if x.shape[1:] != (self.in_channels, in_res, in_res):
                raise ValueError(f"block b{self.resolution}: expected input [N, {self.in_channels}, {in_res}, "
                                 f"{in_res}], got {list(x.shape)}")
            x = x.to(dtype=dtype, memory_format=memory_format)
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        return x, fused_modconv

    def upsample_image(self, img: torch.Tensor | None) -> torch.Tensor | None:
        if img is None or not self.upsample:
            return img
        return upsample2d(img, self.resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, force_fp32: bool = False,
                fused_modconv=None, update_emas: bool = False, **layer_kwargs):
        w_iter = iter(ws.unbind(dim=1))
        x, fused_modconv = self.run_convs(x, w_iter, ws.shape[0], ws.device, force_fp32, fused_modconv,
                                          **layer_kwargs)
        img = self.upsample_image(img)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
        y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        # Out of place: without upsampling `img` may be the caller's tensor (e.g. a view of the feature image).
        img = img + y if img is not None else y
        return x, img


def block_resolutions(img_resolution: int) -> list[int]:
    log2 = int(math.log2(img_resolution))
    if 2 ** log2 != img_resolution or img_resolution < 4:
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return [2 ** i for i in range(2, log2 + 1)]


class SynthesisNetwork(nn.Module):
    """Skip-architecture StyleGAN2 synthesis: ws [N, num_ws, w_dim] -> image [N, img_channels, R, R].

    Channels per resolution: min(channel_base // res, channel_max). Each block consumes its convs' ws and
    (EG3D layout) the w that follows them for its ToRGB."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, **block_kwargs):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = block_resolutions(img_resolution)
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (int(math.log2(img_resolution)) + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = self.make_block(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                    resolution=res, img_channels=img_channels, is_last=is_last,
                                    use_fp16=res >= fp16_resolution, **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def make_block(self, in_channels, out_channels, **kwargs) -> SynthesisBlock:
        return SynthesisBlock(in_channels, out_channels, **kwargs)

    def split_ws(self, ws: torch.Tensor, dim: int = 1) -> list[torch.Tensor]:
        """Per-block slices of ws along `dim`: a block's convs' ws plus its ToRGB w (overlapping the next block)."""
        if ws.shape[dim] != self.num_ws:
            raise ValueError(f"expected {self.num_ws} ws along dim {dim}, got shape {list(ws.shape)}")
        slices, w_idx = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            slices.append(ws.narrow(dim, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv
        return slices

    def forward(self, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        x = img = None
        for res, block_ws in zip(self.block_resolutions, self.split_ws(ws)):
            x, img = getattr(self, f"b{res}")(x, img, block_ws, **block_kwargs)
        return img


class StyleGAN2Backbone(nn.Module):
    """Mapping + synthesis pair (the official `Generator` of networks_stylegan2); only `.mapping` and
    `.synthesis` are called by the 3D generators."""

    synthesis_class = SynthesisNetwork

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = self.synthesis_class(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))
