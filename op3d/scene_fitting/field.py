"""Plane fields for single-scene fitting: the plane tensor is a parameter (no backbone, no GAN), read by the
generators' own lookup and decoded by their own decoder.

`OrthoPlanesField` and `TriPlaneField` take their lookup methods (`sample_features`, `sample_mean_features`,
`slab_sampler`) and `run_field` from `OrthoPlanesGenerator` / `TriPlaneGenerator` / `PlaneGenerator` themselves,
so a field is rendered by `op3d.rendering.renderer.render_rays` and meshed by `op3d.shapes.extract_density`
exactly as a generator's planes are. Only the planes' origin differs.

Plane layouts (as the generators'): OrthoPlanes [1, K, 3 * C, H, H]; tri-plane [1, 3, C, H, H].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from op3d.networks.generator import OrthoPlanesGenerator, PlaneGenerator, TriPlaneGenerator
from op3d.representation.decoder import OSGDecoder
from op3d.rendering.settings import RenderingSettings

REPRESENTATIONS = ("orthoplanes", "triplane")


@dataclass(frozen=True)
class FieldSpec:
    """A representation and its size: planes of ``resolution`` x ``resolution`` with ``channels`` features;
    ``planes_per_axis`` (K) parallel planes per axis group for OrthoPlanes (ignored for tri-planes)."""

    representation: str
    resolution: int
    channels: int
    planes_per_axis: int = 4

    def __post_init__(self):
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation: expected one of {REPRESENTATIONS}, found {self.representation!r}")
        if min(self.resolution, self.channels, self.planes_per_axis) < 1:
            raise ValueError(f"resolution, channels and planes_per_axis: expected >= 1, found {self}")

    @property
    def label(self) -> str:
        """The poster's notation, e.g. 'OrthoPlanes (32^2, 16, K=4)', 'tri-plane (64^2, 16)'."""
        if self.representation == "orthoplanes":
            return f"OrthoPlanes ({self.resolution}^2, {self.channels}, K={self.planes_per_axis})"
        return f"tri-plane ({self.resolution}^2, {self.channels})"

    @property
    def plane_parameters(self) -> int:
        """Number of plane values: 3 K C H^2 (OrthoPlanes) or 3 C H^2 (tri-plane)."""
        planes = 3 * (self.planes_per_axis if self.representation == "orthoplanes" else 1)
        return planes * self.channels * self.resolution ** 2


def matched_specs(resolution: int, channels: int) -> list[FieldSpec]:
    """The OP3D poster's three representations at the same plane parameter count 12 C H^2: tri-plane (H^2, 4C),
    tri-plane ((2H)^2, C) and OrthoPlanes (H^2, C, K=4)."""
    return [FieldSpec("triplane", resolution, 4 * channels), FieldSpec("triplane", 2 * resolution, channels),
            FieldSpec("orthoplanes", resolution, channels, 4)]


def fitting_settings(box_warp: float, samples: int, white_back: bool = True) -> RenderingSettings:
    """Renderer settings for fitting: ``samples`` coarse + ``samples`` importance samples per ray between the ray's
    entry into and exit from the cube of side ``box_warp`` ('auto' limits), optional white background, and the
    'consistent' plane projection (every axis scaled by 2 / box_warp: the cube is the planes' whole extent)."""
    return RenderingSettings(depth_resolution=samples, depth_resolution_importance=samples, ray_start="auto",
                             ray_end="auto", box_warp=box_warp, white_back=white_back,
                             plane_projection="consistent")


class _PlaneField(nn.Module):
    """Planes as a parameter, initialised N(0, init_std^2), and an `OSGDecoder` (C -> hidden -> 1 + 3: density and
    RGB). `compute_planes` returns the parameter (its arguments are accepted and ignored, so that
    `op3d.shapes.extract_density(field, ws)` works with any ws)."""

    run_field = PlaneGenerator.run_field

    def __init__(self, spec: FieldSpec, settings: RenderingSettings, shape: tuple, hidden_dim: int = 64,
                 init_std: float = 0.1, seed: int = 0):
        super().__init__()
        self.spec = spec
        self.settings = settings
        generator = torch.Generator().manual_seed(seed)
        self.planes = nn.Parameter(torch.randn(shape, generator=generator) * init_std)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.decoder = OSGDecoder(spec.channels, hidden_dim=hidden_dim, decoder_output_dim=3)

    def compute_planes(self, ws=None, **unused) -> torch.Tensor:
        return self.planes

    def field(self, coordinates: torch.Tensor, directions: torch.Tensor) -> dict:
        """The renderer's field: world points [1, N, 3] -> {'rgb': [1, N, 3] in [0, 1], 'sigma': [1, N, 1] raw}."""
        return self.run_field(self.planes, coordinates, directions)


class OrthoPlanesField(_PlaneField):
    """OrthoPlanes planes [1, K, 3 * C, H, H], looked up as `OrthoPlanesGenerator` does."""

    sample_features = OrthoPlanesGenerator.sample_features
    sample_mean_features = OrthoPlanesGenerator.sample_mean_features
    slab_sampler = OrthoPlanesGenerator.slab_sampler

    def __init__(self, spec: FieldSpec, settings: RenderingSettings, **kwargs):
        k, c, h = spec.planes_per_axis, spec.channels, spec.resolution
        super().__init__(spec, settings, (1, k, 3 * c, h, h), **kwargs)


class TriPlaneField(_PlaneField):
    """Tri-plane planes [1, 3, C, H, H], looked up as `TriPlaneGenerator` does."""

    sample_features = TriPlaneGenerator.sample_features
    sample_mean_features = TriPlaneGenerator.sample_mean_features
    slab_sampler = TriPlaneGenerator.slab_sampler

    def __init__(self, spec: FieldSpec, settings: RenderingSettings, **kwargs):
        super().__init__(spec, settings, (1, 3, spec.channels, spec.resolution, spec.resolution), **kwargs)


def make_field(spec: FieldSpec, settings: RenderingSettings, **kwargs) -> _PlaneField:
    """The field of ``spec`` (OrthoPlanesField or TriPlaneField); kwargs: hidden_dim, init_std, seed."""
    cls = OrthoPlanesField if spec.representation == "orthoplanes" else TriPlaneField
    return cls(spec, settings, **kwargs)
