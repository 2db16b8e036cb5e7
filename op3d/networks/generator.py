"""The 3D-aware generators: OrthoPlanes (K planes per axis) and EG3D tri-planes, with the official module API
(`mapping`, `synthesis`, `sample`, `sample_mixed`, `forward`; spec sections 1.1 and 2.6).

Shapes: z [B, z_dim]; c [B, 25] (16 row-major cam2world + 9 normalized intrinsics, OpenCV convention);
ws [B, num_ws, w_dim]; image [B, 3, R, R]; image_raw [B, 3, r, r]; image_depth [B, 1, r, r] (world units).
"""

from __future__ import annotations

import torch
from torch import nn

from op3d.networks.construction import records_init_kwargs

from op3d.networks.multiplane import MultiplaneBackbone
from op3d.networks.superresolution import Superresolution
from op3d.networks.synthesis import StyleGAN2Backbone
from op3d.representation.decoder import OSGDecoder
from op3d.fast_paths import FAST
from op3d.representation.orthoplanes import (orthoplane_slab_lookup, sample_orthoplanes,
                                             sample_orthoplanes_mean)
from op3d.representation.triplanes import sample_triplanes, sample_triplanes_mean, triplane_slab_lookup
from op3d.rendering.rays import sample_rays
from op3d.rendering.renderer import RendererDraws, render_rays
from op3d.rendering.settings import RenderingKwargsView, RenderingSettings, replace_settings

PLANE_CHANNELS = 32
BACKBONE_RESOLUTION = 256
# Keys of sr_kwargs that the official superresolution classes accept and ignore.
_IGNORED_SR_KWARGS = ("channel_base", "channel_max", "num_fp16_res", "conv_clamp")


def superresolution_variant(class_path: str) -> str:
    """'training.superresolution.SuperresolutionHybrid8XDC' -> 'SuperresolutionHybrid8XDC'."""
    return class_path.rsplit(".", 1)[-1]


class PlaneGenerator(nn.Module):
    """Shared machinery: mapping, ray casting, volume rendering, decoder, superresolution.

    Subclasses define `backbone`, `compute_planes(ws, **kw)`, `sample_features(planes, coordinates)` (features
    per group, the reference lookup), `sample_mean_features(planes, coordinates)` (their mean, fast path) and
    `slab_sampler(planes)` (a grid_lookup.SlabLookup: points [M, 3] of one shape-grid slab -> their mean [M, C],
    fast path)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 sr_num_fp16_res: int = 0, rendering_kwargs: dict | None = None, sr_kwargs: dict | None = None,
                 plane_channels: int = PLANE_CHANNELS, decoder_hidden_dim: int = 64, decoder_hidden_layers: int = 1):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.settings = RenderingSettings.from_kwargs(dict(rendering_kwargs or {}))
        sr_kwargs = {k: v for k, v in (sr_kwargs or {}).items() if k not in _IGNORED_SR_KWARGS}
        self.superresolution = Superresolution(superresolution_variant(self.settings.superresolution_module),
                                               channels=PLANE_CHANNELS, img_resolution=img_resolution,
                                               sr_num_fp16_res=sr_num_fp16_res,
                                               sr_antialias=self.settings.sr_antialias, **sr_kwargs)
        self.decoder = OSGDecoder(plane_channels, hidden_dim=decoder_hidden_dim, decoder_output_dim=PLANE_CHANNELS,
                                  decoder_lr_mul=self.settings.decoder_lr_mul, n_hidden_layers=decoder_hidden_layers)
        self.neural_rendering_resolution = 64
        self._last_planes = None
        self.register_buffer("dataset_label_std", None)

    # --- settings -------------------------------------------------------------------------------------------
    @property
    def rendering_kwargs(self) -> RenderingKwargsView:
        """The official rendering_kwargs as a validated, writable dict view of `self.settings`."""
        return RenderingKwargsView(self.settings)

    @rendering_kwargs.setter
    def rendering_kwargs(self, value: dict) -> None:
        self.settings = replace_settings(self.settings, dict(value))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The training loop registers dataset_label_std after construction: accept it when the state has it.
        key = prefix + "dataset_label_std"
        if key in state_dict and self.dataset_label_std is None:
            self.dataset_label_std = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- official API -----------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """z [B, z_dim], c [B, c_dim] -> ws [B, num_ws, w_dim]. The label is zeroed for models without pose
        conditioning and scaled by c_scale."""
        if self.settings.c_gen_conditioning_zero:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.settings.c_scale, truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    def synthesis_planes(self, ws: torch.Tensor, neural_rendering_resolution: int | None, update_emas: bool,
                         cache_backbone: bool, use_cached_backbone: bool, **synthesis_kwargs):
        """synthesis' common start: the neural rendering resolution (given: remembered, as officially) and the
        planes (from the backbone cache when asked and filled) -> (resolution, planes)."""
        if neural_rendering_resolution is None:
            neural_rendering_resolution = self.neural_rendering_resolution
        else:
            self.neural_rendering_resolution = neural_rendering_resolution
        if use_cached_backbone and self._last_planes is not None:
            planes = self._last_planes
        else:
            planes = self.compute_planes(ws, update_emas=update_emas, **synthesis_kwargs)
        if cache_backbone:
            self._last_planes = planes
        return neural_rendering_resolution, planes

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None,
                  update_emas: bool = False, cache_backbone: bool = False, use_cached_backbone: bool = False,
                  return_planes: bool = False, renderer_draws: RendererDraws | None = None,
                  **synthesis_kwargs) -> dict:
        """Render ws from cameras c [B, 25] -> {'image', 'image_raw', 'image_depth'} (+ 'planes' if asked).

        renderer_draws replays recorded random draws of the renderer (see RendererDraws)."""
        if c.ndim != 2 or c.shape[1] != 25:
            raise ValueError(f"camera label c: expected shape [B, 25], got {list(c.shape)}")
        cam2world = c[:, :16].view(-1, 4, 4)
        intrinsics = c[:, 16:25].view(-1, 3, 3)
        feature = synthesis_kwargs.pop("feature", False)  # official flag asking for the plane tensor
        neural_rendering_resolution, planes = self.synthesis_planes(
            ws, neural_rendering_resolution, update_emas, cache_backbone, use_cached_backbone, **synthesis_kwargs)

        origins, directions = sample_rays(cam2world, intrinsics, neural_rendering_resolution)
        features, depth, _ = render_rays(lambda x, d: self.run_field(planes, x, d), origins, directions,
                                         self.settings, renderer_draws)
        return self.assemble_outputs(features, depth, ws, neural_rendering_resolution, planes,
                                     return_planes, feature, synthesis_kwargs)

    def assemble_outputs(self, features: torch.Tensor, depth: torch.Tensor, ws: torch.Tensor, resolution: int,
                         planes: torch.Tensor, return_planes: bool, feature: bool, synthesis_kwargs: dict) -> dict:
        """Rendered rays (features [B, r*r, C], depth [B, r*r, 1]) -> the synthesis dict: feature and depth
        images, the super-resolved image, and the planes when asked (`return_planes`, or official `feature` as 'ff')."""
        n, r = ws.shape[0], resolution
        feature_image = features.permute(0, 2, 1).reshape(n, features.shape[-1], r, r).contiguous()
        depth_image = depth.permute(0, 2, 1).reshape(n, 1, r, r)
        rgb_image = feature_image[:, :3]
        sr_kwargs = {k: v for k, v in synthesis_kwargs.items() if k != "noise_mode"}
        image = self.superresolution(rgb_image, feature_image, ws,
                                     noise_mode=self.settings.superresolution_noise_mode, **sr_kwargs)
        out = {"image": image, "image_raw": rgb_image, "image_depth": depth_image}
        if return_planes or feature:
            out["planes"] = planes
            if feature:
                out["ff"] = planes
        return out

    def run_field(self, planes: torch.Tensor, coordinates: torch.Tensor, directions: torch.Tensor) -> dict:
        """Decode features at world points: coordinates [B, N, 3] -> {'rgb': [B, N, 32], 'sigma': [B, N, 1]}."""
        if FAST.fused_lookup:  # one group holding the mean: the decoder (and any hook on it) sees [B, 1, N, C]
            return self.decoder(self.sample_mean_features(planes, coordinates).unsqueeze(1), directions)
        return self.decoder(self.sample_features(planes, coordinates), directions)

    def sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor,
                     truncation_psi: float = 1, truncation_cutoff: int | None = None, update_emas: bool = False,
                     **synthesis_kwargs) -> dict:
        """Density and features at points [B, N, 3] from given ws (raw sigma, before the softplus)."""
        planes = self.compute_planes(ws, update_emas=update_emas, mixed=True, **synthesis_kwargs)
        return self.run_field(planes, coordinates, directions)

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, neural_rendering_resolution: int | None = None,
                update_emas: bool = False, cache_backbone: bool = False, use_cached_backbone: bool = False,
                **synthesis_kwargs) -> dict:
        """mapping then synthesis: z [B, z_dim], c [B, 25] -> the synthesis dict."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, c, update_emas=update_emas, neural_rendering_resolution=neural_rendering_resolution,
                              cache_backbone=cache_backbone, use_cached_backbone=use_cached_backbone,
                              **synthesis_kwargs)


@records_init_kwargs
class OrthoPlanesGenerator(PlaneGenerator):
    """OrthoPlanes generator (official `TriMultiPlaneGenerator`): K planes per axis from a 256x256, 96-channel
    multiplane backbone; planes [B, K, 96, 256, 256].

    plane_resolution (op3d addition, for small models such as CPU configs; official models use 256) sets the
    backbone's output size, hence the plane size and the number of ws."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 sr_num_fp16_res: int = 0, mapping_kwargs: dict | None = None, rendering_kwargs: dict | None = None,
                 sr_kwargs: dict | None = None, per_dir_plane_number: int = 8, fourier_L: int = 10,
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 4,
                 conv_clamp: float | None = 256, fused_modconv_default="inference_only",
                 plane_resolution: int = BACKBONE_RESOLUTION):
        super().__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, sr_num_fp16_res=sr_num_fp16_res,
                         rendering_kwargs=rendering_kwargs, sr_kwargs=sr_kwargs)
        if per_dir_plane_number < 1 or fourier_L < 0:
            raise ValueError(f"need per_dir_plane_number >= 1 and fourier_L >= 0, got {per_dir_plane_number}, "
                             f"{fourier_L}")
        self.n_planes_per_axis = per_dir_plane_number
        self.L = fourier_L
        self.backbone = MultiplaneBackbone(z_dim, c_dim, w_dim, img_resolution=plane_resolution,
                                           img_channels=3 * PLANE_CHANNELS, mapping_kwargs=mapping_kwargs,
                                           fourier_L=fourier_L, channel_base=channel_base, channel_max=channel_max,
                                           num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                                           fused_modconv_default=fused_modconv_default)

    def compute_planes(self, ws: torch.Tensor, update_emas: bool = False, mixed: bool = False,
                       **synthesis_kwargs) -> torch.Tensor:
        """ws [B, 13, w_dim] -> planes [B, K, 96, 256, 256]. mixed=True styles every block with the last w."""
        k = self.n_planes_per_axis
        shared_w = ws[:, -1] if mixed else None
        planes = self.backbone.synthesis(ws, k, shared_w=shared_w, update_emas=update_emas, **synthesis_kwargs)
        return planes.view(ws.shape[0], k, *planes.shape[1:])

    def sample_features(self, planes: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        return sample_orthoplanes(planes, coordinates, self.settings.box_warp, self.settings.plane_projection)

    def sample_mean_features(self, planes: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        return sample_orthoplanes_mean(planes, coordinates, self.settings.box_warp, self.settings.plane_projection)

    def slab_sampler(self, planes: torch.Tensor):
        return orthoplane_slab_lookup(planes, self.settings.box_warp, self.settings.plane_projection)

    def sample(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor, c: torch.Tensor = None,
               truncation_psi: float = 1, truncation_cutoff: int | None = None, update_emas: bool = False,
               **synthesis_kwargs) -> dict:
        """Density and features at points [B, N, 3] from ws (the official OrthoPlanes `sample` takes ws;
        truncation arguments are ignored, as officially)."""
        planes = self.compute_planes(ws, update_emas=update_emas, **synthesis_kwargs)
        return self.run_field(planes, coordinates, directions)


@records_init_kwargs
class TriPlaneGenerator(PlaneGenerator):
    """EG3D tri-plane generator: three 32-channel planes from a 256x256, 96-channel StyleGAN2 backbone
    (14 ws: the last block's ToRGB has its own w); planes [B, 3, 32, 256, 256].

    OP3D's "large tri-plane" baseline is the same with plane_channels=128 (a 384-channel backbone output) and a
    128-wide decoder with 4 FC layers (decoder_hidden_dim=128, decoder_hidden_layers=3). plane_resolution: as for
    OrthoPlanesGenerator (op3d addition; released models use 256)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 sr_num_fp16_res: int = 0, mapping_kwargs: dict | None = None, rendering_kwargs: dict | None = None,
                 sr_kwargs: dict | None = None, channel_base: int = 32768, channel_max: int = 512,
                 num_fp16_res: int = 4, conv_clamp: float | None = 256, fused_modconv_default="inference_only",
                 plane_channels: int = PLANE_CHANNELS, decoder_hidden_dim: int = 64, decoder_hidden_layers: int = 1,
                 plane_resolution: int = BACKBONE_RESOLUTION):
        super().__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, sr_num_fp16_res=sr_num_fp16_res,
                         rendering_kwargs=rendering_kwargs, sr_kwargs=sr_kwargs, plane_channels=plane_channels,
                         decoder_hidden_dim=decoder_hidden_dim, decoder_hidden_layers=decoder_hidden_layers)
        self.plane_channels = plane_channels
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=plane_resolution,
                                          img_channels=3 * plane_channels, mapping_kwargs=mapping_kwargs,
                                          channel_base=channel_base, channel_max=channel_max,
                                          num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                                          fused_modconv_default=fused_modconv_default)

    def compute_planes(self, ws: torch.Tensor, update_emas: bool = False, mixed: bool = False,
                       **synthesis_kwargs) -> torch.Tensor:
        """ws [B, 14, w_dim] -> planes [B, 3, 32, 256, 256]."""
        planes = self.backbone.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
        return planes.view(ws.shape[0], 3, self.plane_channels, *planes.shape[-2:])

    def sample_features(self, planes: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        return sample_triplanes(planes, coordinates, self.settings.box_warp, self.settings.plane_projection)

    def sample_mean_features(self, planes: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        return sample_triplanes_mean(planes, coordinates, self.settings.box_warp, self.settings.plane_projection)

    def slab_sampler(self, planes: torch.Tensor):
        return triplane_slab_lookup(planes, self.settings.box_warp, self.settings.plane_projection)

    def sample(self, coordinates: torch.Tensor, directions: torch.Tensor, z: torch.Tensor, c: torch.Tensor,
               truncation_psi: float = 1, truncation_cutoff: int | None = None, update_emas: bool = False,
               **synthesis_kwargs) -> dict:
        """Density and features at points [B, N, 3] from z (EG3D's `sample` maps z itself)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.sample_mixed(coordinates, directions, ws, update_emas=update_emas, **synthesis_kwargs)
