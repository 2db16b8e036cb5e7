"""Metrics of a snapshot file on one or many processes: what test_scripts/cal_metrics.py runs."""

from __future__ import annotations

import dataclasses
import os

import torch

from op3d.distributed import local_device, rank_and_world, run
from op3d.metrics.detectors import find_detector
from op3d.metrics.registry import METRICS, MetricContext, calc_metric, check_metric_names, report_metric


@dataclasses.dataclass
class EvaluationOptions:
    """Options of one evaluation run (see cal_metrics.py --help). data/mirror None: from the snapshot's
    training_set_kwargs."""
    network_pkl: str
    metrics: list[str]
    data: str | None = None
    mirror: bool | None = None
    device: str = "cpu"
    detector_dir: str | None = None
    gen_batch: int = 4
    detector_batch: int = 64
    num_gen: int | None = None
    seed: int = 0
    progress: bool = True
    use_cache: bool = True


def dataset_kwargs_for(options: EvaluationOptions, training_set_kwargs: dict | None) -> dict:
    """ImageFolderDataset kwargs: --data / --mirror, else the snapshot's training set (ValueError if neither)."""
    training_set_kwargs = training_set_kwargs or {}
    path = options.data or training_set_kwargs.get("path")
    if not path:
        raise ValueError(f"--data: {options.network_pkl} records no training set; pass the dataset zip or folder")
    mirror = options.mirror if options.mirror is not None else bool(training_set_kwargs.get("xflip", False))
    return {"path": path, "xflip": mirror}


def run_dir_of(network_pkl: str) -> str | None:
    """The training run directory holding a snapshot (it has training_options.json), else None."""
    folder = os.path.dirname(os.path.abspath(network_pkl))
    return folder if os.path.isfile(os.path.join(folder, "training_options.json")) else None


def _evaluate_here(options: EvaluationOptions, lines: list | None) -> None:
    from op3d.checkpoints import load_network_pkl

    rank, _ = rank_and_world()
    device = local_device(options.device)
    snapshot = load_network_pkl(options.network_pkl, device=device)
    G = snapshot["G_ema"].eval().requires_grad_(False)
    ctx = MetricContext(G, dataset_kwargs_for(options, snapshot["training_set_kwargs"]), device=device,
                        detector_dir=options.detector_dir, gen_batch=options.gen_batch,
                        detector_batch=options.detector_batch, num_gen=options.num_gen, seed=options.seed,
                        progress=options.progress and rank == 0, use_cache=options.use_cache)
    for name in options.metrics:
        result = calc_metric(name, ctx)
        if rank == 0:
            line = report_metric(result, run_dir_of(options.network_pkl), options.network_pkl)
            print(line, flush=True)
            if lines is not None:
                lines.append(line)


def preflight(options: EvaluationOptions) -> None:
    """Every check that can fail before the work starts, in this process (so that errors are one clear line even
    when the work runs in other processes): metric names, the snapshot, the dataset (resolution equal to the
    generator's when an image metric is asked), and the detector files."""
    from op3d.checkpoints import load_network_pkl
    from op3d.datasets import ImageFolderDataset

    check_metric_names(options.metrics)
    snapshot = load_network_pkl(options.network_pkl)
    G = snapshot["G_ema"]
    kwargs = dataset_kwargs_for(options, snapshot["training_set_kwargs"])
    detectors = {d.file_name: d for name in options.metrics for d in METRICS[name].detectors}
    if detectors:
        kwargs["resolution"] = G.img_resolution
    ImageFolderDataset(**kwargs, use_labels=G.c_dim != 0).close()
    for detector in detectors.values():
        find_detector(detector, options.detector_dir)


def evaluate(options: EvaluationOptions, num_processes: int = 1) -> list[str]:
    """Compute options.metrics; returns the jsonl lines (one process) and prints them (rank 0 always).

    num_processes > 1 starts that many local processes (one per GPU with device 'cuda'); under torchrun the
    environment's process group is used instead."""
    if num_processes > 1 and torch.device(options.device).type == "cuda" and torch.cuda.device_count() < num_processes:
        raise ValueError(f"--gpus: {num_processes} processes need {num_processes} GPUs, "
                         f"found {torch.cuda.device_count()}")
    preflight(options)
    lines: list[str] = []
    if num_processes == 1:
        run(_evaluate_here, (options, lines))
    else:
        run(_evaluate_here, (options, None), num_processes=num_processes, device=options.device)
    return lines
