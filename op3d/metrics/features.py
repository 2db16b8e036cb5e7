"""Detector features of real and generated images, split across processes, with a cache for dataset statistics.

The generation protocol follows the official tools: fakes are G(z, c) with z ~ N(0, I) and c the label of a random
dataset item, in the model's default (random) noise mode, quantised to uint8 as x * 127.5 + 128. op3d seeds every
generator batch from (seed, batch index), so a result does not depend on the number of processes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Callable, Iterator

import numpy as np
import torch
import tqdm

from op3d.distributed import gather, rank_and_world
from op3d.metrics.detectors import detect


class FeatureStats:
    """Running statistics of [N, D] features: all items (capture_all) and/or float64 mean and covariance
    (capture_mean_cov), stopping at max_items."""

    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = False, max_items: int | None = None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self._all = []
        self._sum = None
        self._sum_outer = None

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: np.ndarray) -> None:
        """Add features [N, D] (items past max_items are dropped)."""
        x = np.asarray(x, dtype=np.float32)
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        if self.num_features is None:
            self.num_features = x.shape[1]
            self._sum = np.zeros(x.shape[1], dtype=np.float64)
            self._sum_outer = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self._all.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self._sum += x64.sum(axis=0)
            self._sum_outer += x64.T @ x64

    def get_all(self) -> np.ndarray:
        """[N, D] float32 features (capture_all)."""
        return np.concatenate(self._all) if self._all else np.zeros((0, self.num_features or 0), np.float32)

    def get_mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean [D] and biased covariance [D, D] (divided by N, as the official tool)."""
        mean = self._sum / self.num_items
        cov = self._sum_outer / self.num_items - np.outer(mean, mean)
        return mean, cov

    def to_arrays(self) -> dict:
        out = {"num_items": np.int64(self.num_items)}
        if self.capture_all:
            out["all"] = self.get_all()
        if self.capture_mean_cov:
            out["sum"], out["sum_outer"] = self._sum, self._sum_outer
        return out

    @classmethod
    def from_arrays(cls, arrays, capture_all: bool = False, capture_mean_cov: bool = False) -> "FeatureStats":
        stats = cls(capture_all=capture_all, capture_mean_cov=capture_mean_cov)
        stats.num_items = int(arrays["num_items"])
        if capture_all:
            stats._all = [arrays["all"]]
            stats.num_features = arrays["all"].shape[1]
        if capture_mean_cov:
            stats._sum, stats._sum_outer = arrays["sum"], arrays["sum_outer"]
            stats.num_features = arrays["sum"].shape[0]
        return stats


@dataclasses.dataclass
class FeatureJob:
    """How to run a detector: the module, the file it came from (for messages and cache keys), its call kwargs,
    the device, the detector batch size and whether to show progress bars."""
    detector: torch.nn.Module
    detector_path: str
    detector_kwargs: dict
    device: torch.device
    batch_size: int = 64
    progress: bool = False

    def features(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return detect(self.detector, images_uint8.to(self.device), self.detector_path, **self.detector_kwargs)


def cache_dir() -> pathlib.Path:
    """Dataset statistics cache: $OP3D_CACHE_DIR/gan-metrics or ~/.cache/op3d/gan-metrics."""
    root = os.environ.get("OP3D_CACHE_DIR") or pathlib.Path.home() / ".cache" / "op3d"
    return pathlib.Path(root) / "gan-metrics"


def _file_identity(path: str) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def dataset_cache_path(dataset, job: FeatureJob, stats_kwargs: dict) -> pathlib.Path:
    """Cache file for a dataset's statistics, keyed by the dataset file (path, size, mtime), its options, the
    detector file and kwargs and the statistics options."""
    key = json.dumps({"dataset": _file_identity(dataset.path), "resolution": dataset.resolution,
                      "len": len(dataset), "xflip": dataset.xflip, "detector": _file_identity(job.detector_path),
                      "detector_kwargs": job.detector_kwargs, "stats": stats_kwargs}, sort_keys=True)
    digest = hashlib.md5(key.encode("utf-8")).hexdigest()
    return cache_dir() / f"{dataset.name}-{pathlib.Path(job.detector_path).stem}-{digest}.npz"


def dataset_features(dataset, job: FeatureJob, max_items: int | None = None, use_cache: bool = True,
                     **stats_kwargs) -> FeatureStats:
    """Statistics of the first min(len(dataset), max_items) dataset images, items split rank-strided across
    processes. Cached per options (rank 0 writes the cache)."""
    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    cache_path = dataset_cache_path(dataset, job, dict(stats_kwargs, max_items=num_items))
    if use_cache and cache_path.is_file():
        with np.load(cache_path) as arrays:
            return FeatureStats.from_arrays(arrays, **stats_kwargs)
    rank, world = rank_and_world()
    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    per_rank = (num_items - 1) // world + 1
    subset = [(i * world + rank) % num_items for i in range(per_rank)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, subset), batch_size=job.batch_size)
    bar = tqdm.tqdm(total=num_items, desc=f"{dataset.name} features", unit="img",
                    disable=not (job.progress and rank == 0))
    for images, _labels in loader:
        features = gather(job.features(images), interleave=True)
        stats.append(features.cpu().numpy())
        bar.update(min(features.shape[0], bar.total - bar.n))
    bar.close()
    if use_cache and rank == 0:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".tmp-{os.getpid()}.npz")
        np.savez(tmp, **stats.to_arrays())
        os.replace(tmp, cache_path)
    return stats


def batch_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """A torch generator for generator batch `index` of a run with `seed` (same on every process count)."""
    state = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    torch.manual_seed(state)  # the renderer's and noise layers' draws come from the global generator
    return torch.Generator(device=device).manual_seed(state)


def fake_batches(G, dataset, device: torch.device, seed: int, gen_batch: int, first_index: int,
                 num_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Latents and labels for generator batches first_index .. first_index + num_batches - 1:
    yields (z [gen_batch, z_dim], c [gen_batch, c_dim]) with c the labels of random dataset items."""
    for index in range(first_index, first_index + num_batches):
        gen = batch_generator(seed, index, device)
        z = torch.randn([gen_batch, G.z_dim], generator=gen, device=device)
        items = torch.randint(len(dataset), [gen_batch], generator=gen, device=device).tolist()
        c = torch.from_numpy(np.stack([dataset.get_label(i) for i in items])).to(device)
        yield z, c


def generator_steps(num_items: int, gen_batch: int, detector_batch: int) -> int:
    """Generator batches per process and step: a detector batch's worth, or fewer when fewer items are needed."""
    _, world = rank_and_world()
    total_batches = -(-num_items // gen_batch)
    return max(1, min(detector_batch // gen_batch, -(-total_batches // world)))


def generator_features(G, dataset, job: FeatureJob, num_gen: int, seed: int = 0, gen_batch: int = 4,
                       render: Callable | None = None, **stats_kwargs) -> FeatureStats:
    """Statistics of num_gen generated images. In step s, process r renders generator batches
    (s * world + r) * n .. + n - 1 (n = generator_steps(...)), so the items are the same for any process count;
    render(G, z, c) -> image [B, C, H, W] in [-1, 1] defaults to G(z, c)['image']."""
    if job.batch_size % gen_batch:
        raise ValueError(f"detector batch {job.batch_size} must be a multiple of the generator batch {gen_batch}")
    render = render or (lambda G_, z, c: G_(z, c)["image"])
    rank, world = rank_and_world()
    stats = FeatureStats(max_items=num_gen, **stats_kwargs)
    per_step = generator_steps(num_gen, gen_batch, job.batch_size)
    bar = tqdm.tqdm(total=num_gen, desc="generated features", unit="img", disable=not (job.progress and rank == 0))
    step = 0
    while not stats.is_full():
        first = (step * world + rank) * per_step
        images = []
        with torch.no_grad():
            for z, c in fake_batches(G, dataset, job.device, seed, gen_batch, first, per_step):
                images.append((render(G, z, c) * 127.5 + 128).clamp(0, 255).to(torch.uint8))
        features = gather(job.features(torch.cat(images)), interleave=False)
        before = stats.num_items
        stats.append(features.cpu().numpy())
        bar.update(stats.num_items - before)
        step += 1
    bar.close()
    return stats
