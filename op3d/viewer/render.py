"""The viewer's render service: one model, a cache of planes per latent, one render at a time.

    service = RenderService(model)                       # model: op3d.viewer.model.ViewerModel
    frame = service.render(Latent(seed=0, psi=0.7), label, resolution=64, outputs='image')
    frame.image      # [H, W, 3] uint8, or None and frame.error holds a one-line message
    frame.timings    # {'backbone': s, 'renderer': s, 'superresolution': s}

The backbone runs once per latent (seed, truncation, noise mode, style mixing, pose); its planes, ws and pose
condition stay in an LRU cache, and a camera move re-runs only the renderer and the superresolution, through the
generator's own backbone cache (`_last_planes` with `use_cached_backbone=True`, the official visualizer API), so the
image is bitwise the one of a full `G.synthesis`. A lock lets one render (or mesh extraction) use the model at a
time: tabs share the model and its settings, never a half-finished render. Any exception in a render becomes the
frame's error message; the service keeps working.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

import numpy as np
import torch

from op3d import generation
from op3d.viewer.camera import pivot_distance

OUTPUTS = ("image", "image_raw", "image_depth", "all")
NOISE_MODES = ("const", "random", "none")


@dataclasses.dataclass(frozen=True)
class Latent:
    """What the backbone depends on. mix_seed: style mixing, ws from index mix_cutoff on come from that seed."""

    seed: int = 0
    psi: float = 0.7
    cutoff: int | None = None
    noise_mode: str = "const"
    mix_seed: int | None = None
    mix_cutoff: int = 7
    pose_id: int | None = None

    def __post_init__(self):
        if self.noise_mode not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {self.noise_mode!r}")
        if self.seed < 0 or (self.mix_seed is not None and self.mix_seed < 0):
            raise ValueError(f"seeds must be >= 0, got {self.seed}, {self.mix_seed}")


@dataclasses.dataclass
class Sample:
    """A cached latent: ws [1, num_ws, w_dim], planes, and the batch-1 pose condition (conditional models)."""

    ws: torch.Tensor
    planes: torch.Tensor
    conditions: dict | None


@dataclasses.dataclass
class Frame:
    """One rendered view: the displayed image [H, W, 3] uint8 (None on error), the label it was rendered from,
    seconds per stage, and the error message if the render failed."""

    image: np.ndarray | None
    label: torch.Tensor
    timings: dict
    error: str | None = None


class PlaneCache:
    """Least-recently-used cache of Samples keyed by Latent (capacity >= 1)."""

    def __init__(self, capacity: int = 4):
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.entries: collections.OrderedDict = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Latent, compute) -> Sample:
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.misses += 1
        value = compute(key)
        self.entries[key] = value
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return value


def one_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


class StageTimer:
    """Times the superresolution module inside G.synthesis with forward hooks (CUDA-synchronised on CUDA)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self._start = None
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _before(self, *_):
        self._start = self.now()

    def _after(self, *_):
        self.seconds += self.now() - self._start


class RawUpsample(torch.nn.Module):
    """Stands in for a generator's superresolution module in preview frames: the raw (neural-rendered) RGB image
    resized bilinearly to the final image size. Takes the superresolution module's arguments."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, rgb: torch.Tensor, features: torch.Tensor, ws: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.nn.functional.interpolate(rgb, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                               antialias=rgb.shape[-1] > self.size)


class RenderService:
    """Renders views of one ViewerModel for any number of clients, one at a time (see the module docstring)."""

    def __init__(self, model, cache_size: int = 4):
        self.model = model
        self.G = model.G
        self.device = model.device
        self.lock = threading.Lock()
        self.cache = PlaneCache(cache_size)
        self.sr_timer = StageTimer(self.G.superresolution, self.device)

    # --- latents ------------------------------------------------------------------------------------------------
    def _compute_sample(self, key: Latent) -> Sample:
        G, dev = self.G, self.device
        ws = generation.seed_to_ws(G, key.seed, key.psi, key.cutoff, device=dev)
        if key.mix_seed is not None:
            mix = generation.seed_to_ws(G, key.mix_seed, key.psi, key.cutoff, device=dev)
            ws = ws.clone()
            ws[:, key.mix_cutoff:] = mix[:, key.mix_cutoff:]
        torch.manual_seed(key.seed)  # the backbone's noise in 'random' mode: drawn once per latent
        with torch.no_grad():
            planes = G.compute_planes(ws, noise_mode=key.noise_mode)
        return Sample(ws, planes, self.model.pose(key.pose_id))

    def sample(self, key: Latent) -> tuple[Sample, float]:
        """The cached sample of a latent (computed on a miss) and the seconds spent computing it. Call under lock."""
        start = time.perf_counter()
        misses = self.cache.misses
        sample = self.cache.get(key, self._compute_sample)
        return sample, (time.perf_counter() - start if self.cache.misses > misses else 0.0)

    # --- views --------------------------------------------------------------------------------------------------
    def synthesize(self, sample: Sample, label: torch.Tensor, resolution: int, noise_mode: str,
                   superresolution: bool = True) -> dict:
        """G.synthesis of a cached sample from label [1, 25] at a neural rendering resolution, reusing its planes.
        The renderer's random draws are seeded (0) so that a view is the same every time. superresolution=False:
        'image' is the raw image resized to the final size (RawUpsample), for fast previews. Call under lock."""
        G = self.G
        if not superresolution:
            module = G.superresolution
            G.superresolution = RawUpsample(G.img_resolution)
            try:
                return self.synthesize(sample, label, resolution, noise_mode)
            finally:
                G.superresolution = module
        pose = () if sample.conditions is None else (sample.conditions,)
        settings = G.rendering_kwargs
        saved = dict(ray_start=settings["ray_start"], ray_end=settings["ray_end"])
        saved_resolution = G.neural_rendering_resolution
        try:
            self.model.shift_ray_range(pivot_distance(label, G.settings.avg_camera_pivot))
            G._last_planes = sample.planes
            torch.manual_seed(0)
            with torch.no_grad():
                return G.synthesis(sample.ws, label.to(self.device), *pose, neural_rendering_resolution=resolution,
                                   noise_mode=noise_mode, use_cached_backbone=True)
        finally:
            G._last_planes = None
            G.neural_rendering_resolution = saved_resolution
            settings.update(saved)

    def render(self, key: Latent, label: torch.Tensor, resolution: int, outputs: str = "image",
               superresolution: bool = True) -> Frame:
        """Render a view; never raises for a failing render (the Frame carries the error). superresolution=False
        shows the raw image resized to the final size instead of the superresolution module's output."""
        if outputs not in OUTPUTS:
            return Frame(None, label, {}, f"output must be one of {OUTPUTS}, got {outputs!r}")
        with self.lock:
            try:
                sample, backbone = self.sample(key)
                self.sr_timer.seconds = 0.0
                start = self.sr_timer.now()
                out = self.synthesize(sample, label, resolution, key.noise_mode, superresolution)
                total = self.sr_timer.now() - start
                timings = {"backbone": backbone, "renderer": total - self.sr_timer.seconds,
                           "superresolution": self.sr_timer.seconds}
                return Frame(compose(out, outputs), label, timings)
            except Exception as err:  # noqa: BLE001 - any failure (e.g. out of memory) becomes a page message
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                return Frame(None, label, {}, one_line(err))


def compose(out: dict, outputs: str) -> np.ndarray:
    """The synthesis dict -> the displayed uint8 image: one output, or all three side by side at the final image's
    size (raw and depth upsampled, nearest)."""
    def convert(name):
        tensor = out[name]
        return generation.depth_to_uint8(tensor)[0] if name == "image_depth" else generation.to_uint8(tensor)[0]

    if outputs != "all":
        return convert(outputs)
    images = [convert(name) for name in ("image", "image_raw", "image_depth")]
    size = images[0].shape[0]
    resized = [np.repeat(np.repeat(im, -(-size // im.shape[0]), 0), -(-size // im.shape[1]), 1)[:size, :size]
               for im in images]
    return np.concatenate(resized, axis=1)
