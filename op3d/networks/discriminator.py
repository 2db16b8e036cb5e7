"""Camera-conditioned dual discriminator (spec section 3.2): a ResNet StyleGAN2 discriminator that judges the
final image concatenated with the up-sampled raw image, projected onto a label embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from op3d.networks.construction import records_init_kwargs

from op3d.networks.deformation import N_BETAS, POSE_CODE_DIM, pose_euler_code
from op3d.networks.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork
from op3d.networks.ops import setup_filter, upfirdn2d
from op3d.networks.synthesis import block_resolutions, built_for_fp16, channels_at, fp16_now

POSE_LABEL_DIM = 25 + N_BETAS + POSE_CODE_DIM
"""Label width of DualDiscriminatorWithWarping: camera (25), betas (10), pose Euler code (69)."""


def filtered_resizing(image: torch.Tensor, size: int, f: torch.Tensor, filter_mode: str = "antialiased"):
    """Resize [N, C, H, W] to size x size. 'antialiased' (the default everywhere): bilinear with antialiasing;
    'none': plain bilinear; 'classic': FIR x2 upsampling then bilinear."""
    if filter_mode == "antialiased":
        return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if filter_mode == "none":
        return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    if filter_mode == "classic":
        image = upfirdn2d(image, f, up=2, padding=[2, 1, 2, 1], gain=4)
        return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    raise ValueError(f"filter_mode must be 'antialiased', 'none' or 'classic', got {filter_mode!r}")


SQRT_HALF = math.sqrt(0.5)
"""Gain of both branches of a residual block, so that their sum keeps the variance of one."""


@dataclass(frozen=True)
class DiscriminatorBlockConfig:
    """One residual block of the discriminator, resolution R -> R/2."""

    resolution: int
    in_channels: int
    """0 for the first block, which reads the image through a 1x1 `fromrgb` layer."""
    tmp_channels: int
    out_channels: int
    img_channels: int
    use_fp16: bool = False
    conv_clamp: float | None = None
    activation: str = "lrelu"
    resample_filter: tuple = (1, 3, 3, 1)
    fp16_channels_last: bool = False

    @property
    def reads_image(self) -> bool:
        return self.in_channels == 0

    @property
    def channels_last(self) -> bool:
        return self.use_fp16 and self.fp16_channels_last

    def layer_arguments(self) -> dict[str, dict]:
        """Conv2dLayer arguments of the block's layers by module name, input side first (the order in which
        layers are counted for freezing and drawn at initialisation). conv1 and the bias-free linear 1x1 skip
        down-sample with the FIR; fromrgb and conv0 keep the resolution."""
        activated = dict(activation=self.activation, conv_clamp=self.conv_clamp)
        halving = dict(down=2, resample_filter=self.resample_filter)
        tmp, out = self.tmp_channels, self.out_channels
        layers = {}
        if self.reads_image:
            layers["fromrgb"] = dict(in_channels=self.img_channels, out_channels=tmp, kernel_size=1, **activated)
        layers["conv0"] = dict(in_channels=tmp, out_channels=tmp, kernel_size=3, **activated)
        layers["conv1"] = dict(in_channels=tmp, out_channels=out, kernel_size=3, **activated, **halving)
        layers["skip"] = dict(in_channels=tmp, out_channels=out, kernel_size=1, bias=False, **halving)
        return layers


class DiscriminatorBlock(nn.Module):
    """ResNet D block at resolution R: [fromrgb 1x1], conv0 3x3, conv1 3x3 stride-2 FIR, 1x1 skip; R -> R/2.

    The first `frozen_layers` layers (counted from the input side) keep their weights as buffers."""

    def __init__(self, config: DiscriminatorBlockConfig, frozen_layers: int = 0):
        super().__init__()
        self.config = config
        self.register_buffer("resample_filter", setup_filter(config.resample_filter))
        for index, (name, arguments) in enumerate(config.layer_arguments().items()):
            self.add_module(name, Conv2dLayer(**arguments, channels_last=config.channels_last,
                                              trainable=index >= frozen_layers))

    @property
    def use_fp16(self) -> bool:
        return self.config.use_fp16

    @property
    def num_layers(self) -> int:
        return len(self.config.layer_arguments())

    def forward(self, x: torch.Tensor, force_fp32: bool = False) -> torch.Tensor:
        """x: the input image [N, img_channels, R, R] (first block) or the previous block's features
        [N, C_in, R, R] -> [N, C_out, R/2, R/2]."""
        half = fp16_now(x.device, force_fp32)
        x = x.to(dtype=torch.float16 if self.config.use_fp16 and half else torch.float32,
                 memory_format=torch.channels_last if self.config.channels_last and half else torch.contiguous_format)
        if self.config.reads_image:
            x = self.fromrgb(x)
        shortcut = self.skip(x, gain=SQRT_HALF)
        return shortcut.add_(self.conv1(self.conv0(x), gain=SQRT_HALF))


def group_std(x: torch.Tensor, group_size: int, num_channels: int) -> torch.Tensor:
    """x [N, C, H, W] -> [N / G, F]: for each of the N / G groups (sample i belongs to group i mod N / G) and each
    of F = num_channels slices of the channels, the population standard deviation over the G group members
    (+ 1e-8 inside the root), averaged over the slice's features and pixels."""
    n = x.shape[0]
    members = x.reshape(group_size, n // group_size, num_channels, -1)  # [G, N / G, F, C / F * H * W]
    variance = (members - members.mean(dim=0)).square().mean(dim=0)
    return (variance + 1e-8).sqrt().mean(dim=2)


class MinibatchStdLayer(nn.Module):
    """Appends `num_channels` constant channels holding group_std of the sample's minibatch group (groups of
    `group_size` samples, or the whole batch when smaller or None): [N, C, H, W] -> [N, C + F, H, W]."""

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        group_size = n if self.group_size is None else min(self.group_size, n)
        per_sample = group_std(x, group_size, self.num_channels).repeat(group_size, 1)  # row i: group i mod N / G
        return torch.cat([x, per_sample[:, :, None, None].expand(-1, -1, h, w)], dim=1)


@dataclass(frozen=True)
class EpilogueConfig:
    """Options of the 4x4 head (the official `epilogue_kwargs`)."""

    mbstd_group_size: int | None = 4
    mbstd_num_channels: int = 1
    """Minibatch-std channels appended before the conv; 0 leaves the statistic out."""
    activation: str = "lrelu"


def project_onto_label(x: torch.Tensor, cmap: torch.Tensor) -> torch.Tensor:
    """Projection logit: <x, cmap> / sqrt(cmap_dim) per sample. x, cmap: [N, cmap_dim] -> [N, 1]."""
    return (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(cmap.shape[1]))


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, 3x3 conv, FC, output FC (cmap_dim outputs, or one logit without labels), then the
    projection onto the label embedding cmap. x [N, C, 4, 4], cmap [N, cmap_dim] or None -> logits [N, 1]."""

    def __init__(self, in_channels: int, cmap_dim: int, config: EpilogueConfig, conv_clamp: float | None = None,
                 resolution: int = 4):
        super().__init__()
        self.cmap_dim = cmap_dim
        stats = config.mbstd_num_channels
        self.mbstd = MinibatchStdLayer(config.mbstd_group_size, stats) if stats > 0 else nn.Identity()
        self.conv = Conv2dLayer(in_channels + stats, in_channels, kernel_size=3, activation=config.activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=config.activation)
        self.out = FullyConnectedLayer(in_channels, cmap_dim or 1)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        x = self.mbstd(x.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        x = self.out(self.fc(self.conv(x).flatten(1)))
        return project_onto_label(x, cmap) if self.cmap_dim > 0 else x


def discriminator_blocks(img_resolution: int, img_channels: int, channel_base: int, channel_max: int,
                         num_fp16_res: int, conv_clamp: float | None, **options) -> list[DiscriminatorBlockConfig]:
    """The residual blocks from img_resolution down to 8 (each halves the resolution; the 4x4 head follows).
    A block at R works with channels_at(R) and hands channels_at(R / 2) on; options: DiscriminatorBlockConfig
    fields (activation, resample_filter, fp16_channels_last)."""
    configs = []
    for res in reversed(block_resolutions(img_resolution)[1:]):
        configs.append(DiscriminatorBlockConfig(
            resolution=res, in_channels=0 if res == img_resolution else channels_at(res, channel_base, channel_max),
            tmp_channels=channels_at(res, channel_base, channel_max),
            out_channels=channels_at(res // 2, channel_base, channel_max), img_channels=img_channels,
            use_fp16=built_for_fp16(res, img_resolution, num_fp16_res), conv_clamp=conv_clamp, **options))
    return configs


def label_embedding_dim(c_dim: int, cmap_dim: int | None, head_channels: int) -> int:
    """Width of the label embedding cmap the logits are projected on: 0 for an unconditional D, else cmap_dim,
    by default the 4x4 head's channel count."""
    if c_dim == 0:
        return 0
    return head_channels if cmap_dim is None else cmap_dim


@records_init_kwargs
class DualDiscriminator(nn.Module):
    """D({'image': [N, 3, R, R], 'image_raw': [N, 3, r, r]}, c [N, c_dim]) -> logits [N, 1].

    image_raw is resized to R (bilinear, antialiased) and concatenated to the image (6 channels).
    block_kwargs: freeze_layers (the first layers, counted from the input, keep fixed weights) and
    DiscriminatorBlockConfig fields; epilogue_kwargs: EpilogueConfig fields; mapping_kwargs: MappingNetwork's."""

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, architecture: str = "resnet",
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 4,
                 conv_clamp: float | None = 256, cmap_dim: int | None = None, disc_c_noise: float = 0,
                 block_kwargs: dict | None = None, mapping_kwargs: dict | None = None,
                 epilogue_kwargs: dict | None = None):
        super().__init__()
        if architecture != "resnet":
            raise ValueError(f"only the 'resnet' discriminator architecture is supported, got {architecture!r}")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = 2 * img_channels  # image and up-sampled raw image side by side
        self.disc_c_noise = disc_c_noise
        block_options = dict(block_kwargs or {})
        still_frozen = block_options.pop("freeze_layers", 0)
        blocks = discriminator_blocks(img_resolution, self.img_channels, channel_base, channel_max, num_fp16_res,
                                      conv_clamp, **block_options)
        self.block_resolutions = [block.resolution for block in blocks]
        for config in blocks:
            block = DiscriminatorBlock(config, frozen_layers=still_frozen)
            still_frozen = max(still_frozen - block.num_layers, 0)
            setattr(self, f"b{config.resolution}", block)
        head_channels = channels_at(4, channel_base, channel_max)
        cmap_dim = label_embedding_dim(c_dim, cmap_dim, head_channels)
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(head_channels, cmap_dim, EpilogueConfig(**(epilogue_kwargs or {})),
                                        conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", setup_filter())

    def label_embedding(self, c: torch.Tensor) -> torch.Tensor | None:
        """cmap [N, cmap_dim] from the labels, after the optional training noise (disc_c_noise times the
        per-column std over the batch); None for an unconditional D."""
        if self.c_dim == 0:
            return None
        if self.disc_c_noise > 0:
            c = c + torch.randn_like(c) * c.std(0) * self.disc_c_noise
        return self.mapping(None, c)

    def forward(self, img: dict, c: torch.Tensor, update_emas: bool = False, **block_kwargs) -> torch.Tensor:
        image = img["image"]
        image_raw = filtered_resizing(img["image_raw"], size=image.shape[-1], f=self.resample_filter)
        x = torch.cat([image, image_raw], dim=1)
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, **block_kwargs)
        return self.b4(x, self.label_embedding(c))


@records_init_kwargs
class DualDiscriminatorWithWarping(DualDiscriminator):
    """Pose-conditioned dual discriminator (spec 4.6): D(img, c [N, 25], real_conditions) -> logits [N, 1].

    The label fed to the mapping network is [camera (25), betas (10), pose Euler code (69)] = 104 values, built
    without gradient from the batched pose-condition dict (body_shape [N, 10], full_pose [N, 24, 3, 3]). As
    officially, the c_dim argument only says whether D is conditioned at all (c_dim > 0 -> 104)."""

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, architecture: str = "resnet",
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 4,
                 conv_clamp: float | None = 256, cmap_dim: int | None = None, disc_c_noise: float = 0,
                 block_kwargs: dict | None = None, mapping_kwargs: dict | None = None,
                 epilogue_kwargs: dict | None = None):
        super().__init__(POSE_LABEL_DIM if c_dim > 0 else 0, img_resolution, img_channels, architecture=architecture,
                         channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
                         conv_clamp=conv_clamp, cmap_dim=cmap_dim, disc_c_noise=disc_c_noise,
                         block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs)

    def forward(self, img: dict, c: torch.Tensor, real_conditions: dict, update_emas: bool = False,
                **block_kwargs) -> torch.Tensor:
        if self.c_dim > 0:
            with torch.no_grad():
                c = torch.cat([c, real_conditions["body_shape"].to(c.dtype),
                               pose_euler_code(real_conditions["full_pose"]).to(c.dtype)], dim=1)
        return super().forward(img, c, update_emas=update_emas, **block_kwargs)
