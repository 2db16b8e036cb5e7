"""The metric registry: each named metric (official names, plus op3d's 3D-consistency metric mvc1k) as a function of
a MetricContext, and the jsonl report lines the official tools write.

    ctx = MetricContext(G, dataset_kwargs=dict(path='data.zip'), device='cuda', detector_dir='detectors/')
    result = calc_metric('fid50k_full', ctx)     # {'results': {'fid50k_full': ...}, 'metric': ..., ...}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable

import numpy as np
import torch
import tqdm

from op3d.cameras import rotate_label_about_y
from op3d.distributed import gather, rank_and_world
from op3d.metrics import consistency, scores
from op3d.metrics.detectors import INCEPTION, VGG16, Detector, find_detector, load_detector
from op3d.metrics.features import FeatureJob, dataset_features, fake_batches, generator_features

MVC_YAW = 0.3  # radians between the two views of the 3D-consistency metric (about 17 degrees)


@dataclasses.dataclass
class MetricContext:
    """Everything a metric needs: the generator (eval mode), the dataset options (ImageFolderDataset kwargs: path,
    xflip, ...), the device, where detectors live, batch sizes, an optional override of the number of generated
    images (quick runs), the seed of the generated latents, progress bars and the dataset-statistics cache."""
    G: torch.nn.Module
    dataset_kwargs: dict
    device: torch.device | str = "cpu"
    detector_dir: str | None = None
    gen_batch: int = 4
    detector_batch: int = 64
    num_gen: int | None = None
    seed: int = 0
    progress: bool = False
    use_cache: bool = True
    _detectors: dict = dataclasses.field(default_factory=dict, repr=False)

    def dataset(self, full: bool, check_resolution: bool = True):
        """The evaluation dataset: all items (max_size None), without mirroring for the '_full' metrics."""
        from op3d.datasets import ImageFolderDataset

        kwargs = dict(self.dataset_kwargs, max_size=None, use_labels=self.G.c_dim != 0)
        if full:
            kwargs["xflip"] = False
        if check_resolution:
            kwargs["resolution"] = self.G.img_resolution
        return ImageFolderDataset(**kwargs)

    def job(self, detector: Detector, **detector_kwargs) -> FeatureJob:
        """A feature job for one detector file, loaded once per context."""
        if detector.file_name not in self._detectors:
            path = find_detector(detector, self.detector_dir)
            self._detectors[detector.file_name] = (load_detector(path, self.device), str(path))
        module, path = self._detectors[detector.file_name]
        return FeatureJob(module, path, detector_kwargs, torch.device(self.device), self.detector_batch,
                          self.progress)

    def count(self, default: int) -> int:
        return self.num_gen or default


def _real_and_fake(ctx: MetricContext, detector: Detector, detector_kwargs: dict, full: bool, max_real: int | None,
                   num_gen: int, **stats_kwargs):
    dataset = ctx.dataset(full)
    job = ctx.job(detector, **detector_kwargs)
    real = dataset_features(dataset, job, max_items=max_real, use_cache=ctx.use_cache, **stats_kwargs)
    fake = generator_features(ctx.G, dataset, job, ctx.count(num_gen), seed=ctx.seed, gen_batch=ctx.gen_batch,
                              **stats_kwargs)
    return real, fake


def fid(ctx: MetricContext, max_real: int | None, num_gen: int, full: bool) -> float:
    """Fréchet Inception distance of num_gen fakes against max_real reals (None: all)."""
    real, fake = _real_and_fake(ctx, INCEPTION, dict(return_features=True), full, max_real, num_gen,
                                capture_mean_cov=True)
    return scores.frechet_distance(*fake.get_mean_cov(), *real.get_mean_cov())


def kid(ctx: MetricContext, max_real: int, num_gen: int, full: bool, num_subsets: int = 100,
        max_subset_size: int = 1000) -> float:
    """Kernel Inception distance (official subset count and size)."""
    real, fake = _real_and_fake(ctx, INCEPTION, dict(return_features=True), full, max_real, num_gen,
                                capture_all=True)
    return scores.kernel_inception_distance(real.get_all(), fake.get_all(), num_subsets, max_subset_size,
                                            seed=ctx.seed)


def precision_recall(ctx: MetricContext, max_real: int, num_gen: int, full: bool, nhood_size: int = 3,
                     row_batch_size: int = 10000, col_batch_size: int = 10000) -> tuple[float, float]:
    """Precision and recall on VGG16 features (official neighbourhood size and batch sizes)."""
    real, fake = _real_and_fake(ctx, VGG16, dict(return_features=True), full, max_real, num_gen, capture_all=True)
    return scores.precision_recall(real.get_all(), fake.get_all(), nhood_size, row_batch_size, col_batch_size,
                                   device=ctx.device)


def inception_score(ctx: MetricContext, num_gen: int, num_splits: int = 10) -> tuple[float, float]:
    """Inception score of num_gen fakes (class probabilities without the output bias, as the official tool)."""
    dataset = ctx.dataset(full=True)
    job = ctx.job(INCEPTION, no_output_bias=True)
    fake = generator_features(ctx.G, dataset, job, ctx.count(num_gen), seed=ctx.seed, gen_batch=ctx.gen_batch,
                              capture_all=True)
    return scores.inception_score(fake.get_all(), num_splits)


def render_view_pair(G, z: torch.Tensor, c: torch.Tensor, yaw: torch.Tensor) -> tuple[dict, dict, torch.Tensor]:
    """Render each sample from its camera c [B, 25] and from c turned by yaw [B] radians about the model's camera
    pivot, with the same planes: -> (view A outputs, view B outputs, label of view B)."""
    ws = G.mapping(z, c)
    c_b = rotate_label_about_y(c, yaw, G.settings.avg_camera_pivot)
    view_a = G.synthesis(ws, c, cache_backbone=True)
    view_b = G.synthesis(ws, c_b, use_cached_backbone=True)
    G._last_planes = None
    return view_a, view_b, c_b


def multiview_consistency(ctx: MetricContext, num_gen: int, yaw: float = MVC_YAW) -> dict:
    """3D consistency of num_gen fakes: each is rendered from a dataset camera and from that camera turned by
    +-yaw; one view's depth is unprojected, reprojected into the other and compared (both directions) on mutually
    visible pixels (op3d.metrics.consistency). Returns nan-means over samples of depth_error (world units),
    relative_depth_error, photometric_error ([-1, 1] scale, raw RGB) and visible_fraction."""
    G = ctx.G
    dataset = ctx.dataset(full=True, check_resolution=False)
    device = torch.device(ctx.device)
    num_gen = ctx.count(num_gen)
    rank, world = rank_and_world()
    keys = ("depth_error", "relative_depth_error", "photometric_error", "visible_fraction")
    collected = []
    bar = tqdm.tqdm(total=num_gen, desc="multi-view consistency", unit="img",
                    disable=not (ctx.progress and rank == 0))
    step = 0
    while sum(len(x) for x in collected) < num_gen:
        index = step * world + rank
        with torch.no_grad():
            for z, c in fake_batches(G, dataset, device, ctx.seed, ctx.gen_batch, index, 1):
                signs = 1 - 2 * (torch.arange(len(z), device=device) % 2)
                view_a, view_b, c_b = render_view_pair(G, z, c, yaw * signs)
                errors = consistency.reprojection_errors(view_a["image_depth"], view_a["image_raw"][:, :3], c,
                                                         view_b["image_depth"], view_b["image_raw"][:, :3], c_b)
        rows = gather(torch.stack([errors[k].float() for k in keys], dim=1), interleave=False)
        collected.append(rows.cpu().numpy())
        bar.update(min(len(rows), num_gen - bar.n))
        step += 1
    bar.close()
    table = np.concatenate(collected)[:num_gen]
    return {key: float(np.nanmean(table[:, i])) if np.isfinite(table[:, i]).any() else math.nan
            for i, key in enumerate(keys)}


def _prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}_{key}": value for key, value in values.items()}


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered metric: compute(ctx) -> {result name: value}, and the detector files it needs (the dataset
    must then have the generator's resolution)."""
    compute: Callable[[MetricContext], dict]
    detectors: tuple[Detector, ...]


METRICS: dict[str, Metric] = {
    "fid50k_full": Metric(lambda ctx: {"fid50k_full": fid(ctx, max_real=None, num_gen=50000, full=True)},
                          (INCEPTION,)),
    "kid50k_full": Metric(lambda ctx: {"kid50k_full": kid(ctx, max_real=1000000, num_gen=50000, full=True)},
                          (INCEPTION,)),
    "pr50k3_full": Metric(lambda ctx: _prefixed("pr50k3_full", dict(zip(
        ("precision", "recall"), precision_recall(ctx, max_real=200000, num_gen=50000, full=True)))), (VGG16,)),
    "is50k": Metric(lambda ctx: _prefixed("is50k", dict(zip(("mean", "std"), inception_score(ctx, num_gen=50000)))),
                    (INCEPTION,)),
    "fid50k": Metric(lambda ctx: {"fid50k": fid(ctx, max_real=50000, num_gen=50000, full=False)}, (INCEPTION,)),
    "kid50k": Metric(lambda ctx: {"kid50k": kid(ctx, max_real=50000, num_gen=50000, full=False)}, (INCEPTION,)),
    "pr50k3": Metric(lambda ctx: _prefixed("pr50k3", dict(zip(
        ("precision", "recall"), precision_recall(ctx, max_real=50000, num_gen=50000, full=False)))), (VGG16,)),
    "mvc1k": Metric(lambda ctx: _prefixed("mvc1k", multiview_consistency(ctx, num_gen=1000)), ()),
}

# Official metrics that call G.synthesis without a camera: undefined for 3D-aware generators (they fail in the
# official code too), so op3d names them and refuses them.
UNSUPPORTED = ("ppl2_wend", "eqt50k_int", "eqt50k_frac", "eqr50k")


def check_metric_names(names: list[str]) -> None:
    """ValueError naming any metric that op3d does not compute, with the list of those it does."""
    for name in names:
        if name in UNSUPPORTED:
            raise ValueError(f"--metrics: {name} is not defined for 3D-aware generators (it renders without a "
                             f"camera; the official code fails on it too); available: {', '.join(METRICS)}")
        if name not in METRICS:
            raise ValueError(f"--metrics: unknown metric {name!r}; available: {', '.join(METRICS)}")


def _format_time(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"


def calc_metric(name: str, ctx: MetricContext) -> dict:
    """Compute one metric on every process of the group; the result dict of the official tools."""
    check_metric_names([name])
    start = time.time()
    results = METRICS[name].compute(ctx)
    total = time.time() - start
    return {"results": results, "metric": name, "total_time": total, "total_time_str": _format_time(total),
            "num_gpus": rank_and_world()[1]}


def report_metric(result: dict, run_dir: str | None = None, snapshot_pkl: str | None = None) -> str:
    """The jsonl line for a result (snapshot_pkl relative to run_dir, timestamp); appended to
    <run_dir>/metric-<name>.jsonl when run_dir is a directory. Returns the line."""
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, f"metric-{result['metric']}.jsonl"), "at") as f:
            f.write(line + "\n")
    return line
