"""Typed rendering settings, and their conversion from/to the official `rendering_kwargs` dict.

The official dict is read and written only here (checkpoint boundary); unknown keys are an error. Generators
expose the settings through `G.rendering_kwargs`, a live dict-like view, so official-style code such as
`G.rendering_kwargs['depth_resolution'] = 96` keeps working and is validated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping
from dataclasses import dataclass, field

PLANE_PROJECTIONS = ("compat", "consistent")

CONSTRUCTION_ONLY = ("superresolution_module", "sr_antialias", "decoder_lr_mul")
"""Settings that shape modules when a generator is built; writing another value later is refused (it would do
nothing)."""


@dataclass
class RenderingSettings:
    """Everything the official `rendering_kwargs` holds, with the official meaning of each key."""

    depth_resolution: int = 48
    """Stratified (coarse) samples per ray."""
    depth_resolution_importance: int = 48
    """Importance (fine) samples per ray; 0 disables the fine pass."""
    ray_start: float | str = 2.25
    """Near depth in world units, or 'auto' (entry into the box of side box_warp; then ray_end must be 'auto')."""
    ray_end: float | str = 3.3
    """Far depth in world units, or 'auto'."""
    box_warp: float = 1.0
    """Side of the cube (centred at the origin) that the feature planes span."""
    white_back: bool = False
    """Composite onto white (adds 1 - total weight to every feature channel)."""
    disparity_space_sampling: bool = False
    """Sample uniformly in inverse depth instead of depth."""
    clamp_mode: str = "softplus"
    """Density activation; only 'softplus' (softplus(sigma - 1)) exists."""
    density_noise: float = 0.0
    """Std of Gaussian noise added to raw densities."""
    superresolution_module: str = "training.superresolution.SuperresolutionHybrid8XDC"
    """Official class path of the superresolution module (construction only)."""
    superresolution_noise_mode: str = "none"
    """Noise mode of the superresolution blocks (the caller's noise_mode only reaches the backbone)."""
    sr_antialias: bool = True
    """Antialias the resize to the superresolution input resolution (construction only)."""
    decoder_lr_mul: float = 1.0
    """Learning-rate multiplier of the decoder FCs (construction only)."""
    image_resolution: int | None = None
    """Output resolution recorded by the train script (informational)."""
    c_gen_conditioning_zero: bool = False
    """Replace the generator's conditioning label by zeros ('noc' models)."""
    c_scale: float = 0.0
    """Multiplier of the conditioning label (absent in a dict means 0, as in the official code)."""
    gpc_reg_prob: float | None = None
    """Generator pose-conditioning swap probability (training)."""
    density_reg: float = 0.25
    """Density regularisation weight (training)."""
    density_reg_p_dist: float = 0.004
    """Perturbation std of the density regularisation (training)."""
    reg_type: str = "l1"
    """Density regularisation type (training)."""
    avg_camera_radius: float = 2.7
    """Camera distance used for conditioning and generation."""
    avg_camera_pivot: list = field(default_factory=lambda: [0.0, 0.0, 0.2])
    """Point the default cameras look at."""
    plane_projection: str = "compat"
    """op3d setting (not in official pickles). 'compat': the official OrthoPlanes lookup, where only the first
    axis group's coordinates are scaled by 2/box_warp (groups 1 and 2 read the raw world coordinates, so the box
    covers only their central half); every released checkpoint was trained with it. 'consistent': all three groups
    scaled by 2/box_warp, for new models."""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        auto = (self.ray_start == "auto", self.ray_end == "auto")
        if any(auto) and not all(auto):
            raise ValueError("rendering settings: ray_start and ray_end must both be 'auto' or both numbers, got "
                             f"{self.ray_start!r} / {self.ray_end!r}")
        if self.clamp_mode != "softplus":
            raise ValueError(f"rendering settings: clamp_mode must be 'softplus', got {self.clamp_mode!r}")
        if self.plane_projection not in PLANE_PROJECTIONS:
            raise ValueError(f"rendering settings: plane_projection must be one of {PLANE_PROJECTIONS}, got "
                             f"{self.plane_projection!r}")
        if self.depth_resolution < 2:
            raise ValueError(f"rendering settings: depth_resolution must be >= 2, got {self.depth_resolution}")
        if self.superresolution_noise_mode not in ("random", "const", "none"):
            raise ValueError("rendering settings: superresolution_noise_mode must be 'random', 'const' or 'none', "
                             f"got {self.superresolution_noise_mode!r}")

    @classmethod
    def from_kwargs(cls, kwargs: dict, source: str = "rendering_kwargs") -> "RenderingSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"{source}: unknown rendering setting(s) {unknown}; known settings: {sorted(known)}")
        return cls(**{k: (list(v) if k == "avg_camera_pivot" else v) for k, v in kwargs.items()})

    def to_kwargs(self) -> dict:
        """The official dict (plus op3d's plane_projection)."""
        return dataclasses.asdict(self)

    @property
    def auto_ray_limits(self) -> bool:
        return self.ray_start == "auto"


def check_construction_only(settings: RenderingSettings, values: dict, owner: str = "G") -> None:
    """Refuse a new value for a construction-only setting (the module it configures is already built)."""
    for key in CONSTRUCTION_ONLY:
        if key in values and values[key] != getattr(settings, key):
            raise ValueError(f"{owner}.rendering_kwargs[{key!r}] is fixed at construction (it is "
                             f"{getattr(settings, key)!r}); build a new network to use {values[key]!r}")


def replace_settings(settings: RenderingSettings, values: dict, source: str = "rendering_kwargs"):
    """New settings from a whole official dict (`G.rendering_kwargs = {...}`): construction-only keys must keep
    their values (absent ones keep them too)."""
    check_construction_only(settings, values)
    kept = {key: getattr(settings, key) for key in CONSTRUCTION_ONLY}
    return RenderingSettings.from_kwargs({**kept, **values}, source)


class RenderingKwargsView(MutableMapping):
    """Dict-like, validated view of a RenderingSettings (what `G.rendering_kwargs` returns). Construction-only
    settings can be read, and written only with the value they have."""

    def __init__(self, settings: RenderingSettings):
        self._settings = settings

    def _check_key(self, key):
        if key not in {f.name for f in dataclasses.fields(self._settings)}:
            raise KeyError(f"unknown rendering setting {key!r}")

    def __getitem__(self, key):
        self._check_key(key)
        return getattr(self._settings, key)

    def __setitem__(self, key, value):
        self.update({key: value})

    def update(self, other=(), /, **kwargs):
        """Set several settings at once, validated together (e.g. ray_start and ray_end to 'auto'); on an invalid
        combination nothing changes."""
        values = dict(other, **kwargs)
        for key in values:
            self._check_key(key)
        check_construction_only(self._settings, values)
        old = {key: getattr(self._settings, key) for key in values}
        for key, value in values.items():
            setattr(self._settings, key, value)
        try:
            self._settings.validate()
        except Exception:
            for key, value in old.items():
                setattr(self._settings, key, value)
            raise

    def __delitem__(self, key):
        raise TypeError("rendering settings cannot be deleted; set them instead")

    def __iter__(self):
        return iter(self._settings.to_kwargs())

    def __len__(self):
        return len(dataclasses.fields(self._settings))

    def __repr__(self):
        return repr(self._settings.to_kwargs())
