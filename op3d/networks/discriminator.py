"""Camera-conditioned dual discriminator (spec section 3.2): a ResNet StyleGAN2 discriminator that judges the
final image concatenated with the up-sampled raw image, projected onto a label embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from op3d.networks.construction import records_init_kwargs

from op3d.networks.deformation import N_BETAS, POSE_CODE_DIM, pose_euler_code
from op3d.networks.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork
from op3d.networks.ops import runs_fp16, setup_filter, upfirdn2d

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


class DiscriminatorBlock(nn.Module):
    """ResNet D block at resolution R: [fromrgb 1x1], conv0 3x3, conv1 3x3 stride-2 FIR, 1x1 skip; R -> R/2."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 first_layer_idx: int, architecture: str = "resnet", activation: str = "lrelu",
                 resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None, use_fp16: bool = False,
                 fp16_channels_last: bool = False, freeze_layers: int = 0):
        super().__init__()
        if architecture != "resnet":
            raise ValueError(f"only the 'resnet' discriminator architecture is supported, got {architecture!r}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_layers = 0

        def trainable() -> bool:
            layer_idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return layer_idx >= freeze_layers

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2, trainable=trainable(),
                                 resample_filter=resample_filter, **common)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2, trainable=trainable(),
                                resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor, force_fp32: bool = False):
        if not runs_fp16((x if x is not None else img).device):
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0:
            y = self.fromrgb(img.to(dtype=dtype, memory_format=memory_format))
            x = x + y if x is not None else y
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y.add_(x), None


class MinibatchStdLayer(nn.Module):
    """Appends the std over groups of `group_size` samples, averaged over features, as extra channels."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, 3x3 conv, FC, output FC, projection onto the label embedding cmap."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 architecture: str = "resnet", mbstd_group_size: int = 4, mbstd_num_channels: int = 1,
                 activation: str = "lrelu", conv_clamp: float | None = None):
        super().__init__()
        if architecture != "resnet":
            raise ValueError(f"only the 'resnet' discriminator architecture is supported, got {architecture!r}")
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


@records_init_kwargs
class DualDiscriminator(nn.Module):
    """D({'image': [N, 3, R, R], 'image_raw': [N, 3, r, r]}, c [N, c_dim]) -> logits [N, 1].

    image_raw is resized to R (bilinear, antialiased) and concatenated to the image (6 channels)."""

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, architecture: str = "resnet",
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 4,
                 conv_clamp: float | None = 256, cmap_dim: int | None = None, disc_c_noise: float = 0,
                 block_kwargs: dict | None = None, mapping_kwargs: dict | None = None,
                 epilogue_kwargs: dict | None = None):
        super().__init__()
        img_channels *= 2
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res], channels[res // 2],
                                       resolution=res, first_layer_idx=layer_idx, use_fp16=res >= fp16_resolution,
                                       **(block_kwargs or {}), **common)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **(epilogue_kwargs or {}),
                                        **common)
        self.register_buffer("resample_filter", setup_filter())
        self.disc_c_noise = disc_c_noise

    def forward(self, img: dict, c: torch.Tensor, update_emas: bool = False, **block_kwargs) -> torch.Tensor:
        image_raw = filtered_resizing(img["image_raw"], size=img["image"].shape[-1], f=self.resample_filter)
        x, img = None, torch.cat([img["image"], image_raw], dim=1)
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = None
        if self.c_dim > 0:
            if self.disc_c_noise > 0:
                c = c + torch.randn_like(c) * c.std(0) * self.disc_c_noise
            cmap = self.mapping(None, c)
        return self.b4(x, cmap)


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
