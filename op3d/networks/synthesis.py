"""StyleGAN2 synthesis network (skip architecture): modulated layers, blocks, the network and the
mapping + synthesis backbone that EG3D's tri-plane generator and the superresolution modules use.

Blocks run in fp16 only when built with use_fp16 and the input is on CUDA; elsewhere they run in fp32.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from op3d.fast_paths import FAST
from op3d.networks.layers import FullyConnectedLayer, MappingNetwork
from op3d.networks.ops import ACTIVATIONS, bias_act, modulated_conv2d, runs_fp16, setup_filter, upsample2d

NOISE_MODES = ("random", "const", "none")


# --- the resolution ladder, shared with the discriminator -----------------------------------------------------------

def block_resolutions(img_resolution: int) -> list[int]:
    """4, 8, ..., img_resolution (a power of two >= 4)."""
    log2 = int(math.log2(img_resolution))
    if 2 ** log2 != img_resolution or img_resolution < 4:
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return [2 ** i for i in range(2, log2 + 1)]


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature channels of the layers working at `resolution`: channel_base / resolution, capped at channel_max."""
    return min(channel_base // resolution, channel_max)


def built_for_fp16(resolution: int, img_resolution: int, num_fp16_res: int) -> bool:
    """Whether the block at `resolution` is built for fp16: the `num_fp16_res` finest resolutions, never below 8."""
    return resolution >= 8 and resolution * 2 ** num_fp16_res > img_resolution


def fp16_now(device: torch.device, force_fp32: bool) -> bool:
    """Whether blocks built for fp16 compute in fp16 in this call: on an fp16 device (CUDA) and not forced to fp32."""
    return runs_fp16(device) and not force_fp32


def resolve_fused_modconv(fused_modconv, default, training: bool) -> bool:
    """The official 'inference_only' default means: fused grouped conv in eval mode, shared conv in training."""
    choice = default if fused_modconv is None else fused_modconv
    return (not training) if choice == "inference_only" else bool(choice)


# --- layers ------------------------------------------------------------------------------------------------------

def add_styled_weight(layer: nn.Module, in_channels: int, out_channels: int, w_dim: int, kernel_size: int,
                      channels_last: bool) -> None:
    """Give a modulated conv layer its two learned parts, drawn in this order (seeded builds depend on it):
    `affine` (w [N, w_dim] -> one style per input channel, bias init 1) and `weight` [out, in, k, k] ~ N(0, 1)."""
    layer.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
    weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
    layer.weight = nn.Parameter(weight.to(memory_format=torch.channels_last if channels_last
                                          else torch.contiguous_format))


@dataclass(frozen=True)
class SynthesisLayerConfig:
    """One modulated conv of a synthesis block (x2 upsampling when up == 2)."""

    in_channels: int
    out_channels: int
    w_dim: int
    resolution: int
    """Output resolution, also the size of the stored constant noise."""
    up: int = 1
    kernel_size: int = 3
    use_noise: bool = True
    activation: str = "lrelu"
    resample_filter: tuple = (1, 3, 3, 1)
    conv_clamp: float | None = None
    channels_last: bool = False


class SynthesisLayer(nn.Module):
    """Modulated conv (optionally x2 upsampling) + per-pixel noise + bias + activation, clamped by conv_clamp.

    x: [N, C_in, R/up, R/up], w: [N, w_dim] -> [N, C_out, R, R]. noise_mode: 'random', 'const' or 'none'.
    Parameters: affine, weight, noise_strength (with the buffer noise_const) when use_noise, bias."""

    def __init__(self, config: SynthesisLayerConfig):
        super().__init__()
        self.config = config
        self.register_buffer("resample_filter", setup_filter(config.resample_filter))
        add_styled_weight(self, config.in_channels, config.out_channels, config.w_dim, config.kernel_size,
                          config.channels_last)
        if config.use_noise:
            self.register_buffer("noise_const", torch.randn([config.resolution, config.resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([config.out_channels]))

    @property
    def conv_clamp(self) -> float | None:
        return self.config.conv_clamp

    def noise(self, batch_size: int, device: torch.device, noise_mode: str) -> torch.Tensor | None:
        """The noise image added after the conv: [N, 1, R, R] ('random'), [R, R] ('const') or None."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        if not self.config.use_noise or noise_mode == "none":
            return None
        if noise_mode == "const":
            return self.noise_const * self.noise_strength
        res = self.config.resolution
        return torch.randn([batch_size, 1, res, res], device=device) * self.noise_strength

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1) -> torch.Tensor:
        cfg = self.config
        noise = self.noise(x.shape[0], x.device, noise_mode)
        y = modulated_conv2d(x, self.weight, self.affine(w), noise=noise, up=cfg.up, padding=cfg.kernel_size // 2,
                             resample_filter=self.resample_filter, flip_weight=cfg.up == 1,
                             fused_modconv=fused_modconv)
        clamp = None if cfg.conv_clamp is None else cfg.conv_clamp * gain
        act_gain = ACTIVATIONS[cfg.activation][1] * gain
        return bias_act(y, self.bias.to(y.dtype), act=cfg.activation, gain=act_gain, clamp=clamp,
                        overwrite=True)  # y: the convolution's new output


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation + bias (the skip-image output of a block).

    x: [N, C_in, H, W], w: [N, w_dim] -> [N, out_channels, H, W]. The styles carry the equalized-lr gain
    1 / sqrt(C_in k^2), as demodulation does not normalise the weight here."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        add_styled_weight(self, in_channels, out_channels, w_dim, kernel_size, channels_last)
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.conv_clamp = conv_clamp
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        return self.affine(w) * self.weight_gain

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        y = modulated_conv2d(x, self.weight, self.styles(w), demodulate=False, fused_modconv=fused_modconv)
        return bias_act(y, self.bias.to(y.dtype), clamp=self.conv_clamp, overwrite=True)

    def forward_planes(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """forward(x repeated K times, w) for K styles of the same features, as one batched matrix product (the
        `plane_gemm` fast path of 1x1 layers): x [N, C_in, H, W], w [N, K, w_dim] -> [N * K, out_channels, H, W],
        stored channels-last."""
        n, k = w.shape[:2]
        _, c_in, h, width = x.shape
        c_out = self.out_channels
        per_plane = self.weight.reshape(c_out, c_in) * self.styles(w.reshape(n * k, -1)).reshape(n, k, 1, c_in)
        pixels = x.permute(0, 2, 3, 1).reshape(n, 1, h * width, c_in)
        y = torch.matmul(pixels, per_plane.to(x.dtype).transpose(-1, -2))
        y = bias_act(y, self.bias.to(y.dtype), clamp=self.conv_clamp, dim=3, overwrite=True)
        return y.view(n * k, h, width, c_out).permute(0, 3, 1, 2)


# --- blocks ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthesisBlockConfig:
    """One resolution of the skip-architecture synthesis network (see SynthesisBlock for the arguments)."""

    in_channels: int
    """0 for the 4x4 block, which starts from a learned constant instead of conv0."""
    out_channels: int
    w_dim: int
    resolution: int
    img_channels: int
    is_last: bool
    resample_filter: tuple = (1, 3, 3, 1)
    conv_clamp: float | None = 256
    use_fp16: bool = False
    fp16_channels_last: bool = False
    fused_modconv_default: bool | str = True
    upsample: bool = True
    with_torgb: bool = True
    layer_options: dict = dataclasses.field(default_factory=dict)
    """Further SynthesisLayerConfig fields for conv0 and conv1 (e.g. use_noise)."""

    @property
    def starts_from_constant(self) -> bool:
        return self.in_channels == 0

    @property
    def channels_last(self) -> bool:
        return self.use_fp16 and self.fp16_channels_last

    @property
    def input_resolution(self) -> int:
        return self.resolution // 2 if self.upsample else self.resolution

    def conv_configs(self) -> dict[str, SynthesisLayerConfig]:
        """conv0 (absent in the constant-input block; x2 upsampling when `upsample`) and conv1, by module name."""
        shared = dict(w_dim=self.w_dim, resolution=self.resolution, conv_clamp=self.conv_clamp,
                      channels_last=self.channels_last, **self.layer_options)
        convs = {}
        if not self.starts_from_constant:
            convs["conv0"] = SynthesisLayerConfig(self.in_channels, self.out_channels, up=2 if self.upsample else 1,
                                                  resample_filter=self.resample_filter, **shared)
        convs["conv1"] = SynthesisLayerConfig(self.out_channels, self.out_channels, **shared)
        return convs


class SynthesisBlock(nn.Module):
    """One resolution of the skip-architecture synthesis network.

    conv0 (x2 upsampling unless `upsample=False` or it is the 4x4 block, which starts from a learned constant),
    conv1, then a ToRGB layer whose output is added to the x2-upsampled running image.
    ws: [N, num_conv + num_torgb, w_dim]. Returns (x [N, C_out, R, R], img [N, img_channels, R, R] float32).
    Extra keyword arguments go to the two convs (fields of SynthesisLayerConfig)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = 256, use_fp16: bool = False, fp16_channels_last: bool = False,
                 fused_modconv_default=True, upsample: bool = True, with_torgb: bool = True, **layer_kwargs):
        super().__init__()
        if architecture != "skip":
            raise ValueError(f"only the 'skip' synthesis architecture is used by OP3D/EG3D models, got "
                             f"{architecture!r}")
        config = SynthesisBlockConfig(in_channels, out_channels, w_dim, resolution, img_channels, is_last,
                                      resample_filter=resample_filter, conv_clamp=conv_clamp, use_fp16=use_fp16,
                                      fp16_channels_last=fp16_channels_last,
                                      fused_modconv_default=fused_modconv_default, upsample=upsample,
                                      with_torgb=with_torgb, layer_options=layer_kwargs)
        self.config = config
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if config.starts_from_constant:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        convs = config.conv_configs()
        self.conv_names = tuple(convs)
        for name, conv_config in convs.items():
            self.add_module(name, SynthesisLayer(conv_config))
        if with_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=config.channels_last)

    @property
    def use_fp16(self) -> bool:
        return self.config.use_fp16

    @property
    def channels_last(self) -> bool:
        return self.config.channels_last

    @property
    def num_conv(self) -> int:
        return len(self.conv_names)

    @property
    def num_torgb(self) -> int:
        return int(self.config.with_torgb)

    def block_input(self, x: torch.Tensor | None, batch_size: int, dtype: torch.dtype,
                    memory_format: torch.memory_format) -> torch.Tensor:
        """What conv0 (or, in the 4x4 block, conv1) reads: the previous block's features, checked and cast, or
        the learned constant repeated over the batch."""
        cfg = self.config
        if cfg.starts_from_constant:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([batch_size, 1, 1, 1])
            return x.contiguous(memory_format=memory_format)
        expected = (cfg.in_channels, cfg.input_resolution, cfg.input_resolution)
        if x.shape[1:] != expected:
            raise ValueError(f"block b{cfg.resolution}: expected input [N, {', '.join(map(str, expected))}], "
                             f"got {list(x.shape)}")
        return x.to(dtype=dtype, memory_format=memory_format)

    def run_convs(self, x: torch.Tensor | None, w_iter, batch_size: int, device: torch.device,
                  force_fp32: bool = False, fused_modconv=None, **layer_kwargs) -> tuple[torch.Tensor, bool]:
        """The conv trunk: returns the block features and the resolved fused_modconv flag."""
        half = fp16_now(device, force_fp32)
        dtype = torch.float16 if self.use_fp16 and half else torch.float32
        channels_last = (self.channels_last and half) or FAST.channels_last
        x = self.block_input(x, batch_size, dtype, torch.channels_last if channels_last else torch.contiguous_format)
        fused_modconv = resolve_fused_modconv(fused_modconv, self.config.fused_modconv_default, self.training)
        for name in self.conv_names:
            x = getattr(self, name)(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        return x, fused_modconv

    def upsample_image(self, img: torch.Tensor | None) -> torch.Tensor | None:
        if img is None or not self.config.upsample:
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


# --- network -----------------------------------------------------------------------------------------------------

class SynthesisNetwork(nn.Module):
    """Skip-architecture StyleGAN2 synthesis: ws [N, num_ws, w_dim] -> image [N, img_channels, R, R].

    Channels per resolution: channels_at(res). Each block consumes its convs' ws and (EG3D layout) the w that
    follows them for its ToRGB; only the last block's ToRGB w is a w of its own."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, **block_kwargs):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = block_resolutions(img_resolution)
        for res in self.block_resolutions:
            in_channels = 0 if res == 4 else channels_at(res // 2, channel_base, channel_max)
            block = self.make_block(in_channels, channels_at(res, channel_base, channel_max), w_dim=w_dim,
                                    resolution=res, img_channels=img_channels, is_last=res == img_resolution,
                                    use_fp16=built_for_fp16(res, img_resolution, num_fp16_res), **block_kwargs)
            setattr(self, f"b{res}", block)
        self.num_ws = sum(block.num_conv for block in self.blocks()) + self.blocks()[-1].num_torgb

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def make_block(self, in_channels, out_channels, **kwargs) -> SynthesisBlock:
        return SynthesisBlock(in_channels, out_channels, **kwargs)

    def split_ws(self, ws: torch.Tensor, dim: int = 1) -> list[torch.Tensor]:
        """Per-block slices of ws along `dim`: a block's convs' ws plus its ToRGB w (overlapping the next block)."""
        if ws.shape[dim] != self.num_ws:
            raise ValueError(f"expected {self.num_ws} ws along dim {dim}, got shape {list(ws.shape)}")
        starts = [0]
        for block in self.blocks():
            starts.append(starts[-1] + block.num_conv)
        return [ws.narrow(dim, start, block.num_conv + block.num_torgb)
                for start, block in zip(starts, self.blocks())]

    def forward(self, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        x = img = None
        for block, block_ws in zip(self.blocks(), self.split_ws(ws)):
            x, img = block(x, img, block_ws, **block_kwargs)
        return img


class StyleGAN2Backbone(nn.Module):
    """Mapping + synthesis pair (the official `Generator` of networks_stylegan2); only `.mapping` and
    `.synthesis` are called by the 3D generators. The synthesis network is built first (seeded builds depend on
    the order); the mapping network broadcasts w to its num_ws."""

    synthesis_class = SynthesisNetwork

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs):
        super().__init__()
        self.synthesis = self.synthesis_class(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                              **synthesis_kwargs)
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws
