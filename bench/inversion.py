"""Inversion speed: seconds per projection step (stage 1) and per pivotal-tuning step (stage 2), batch 1, at the
fixture size (official/ffhq_k8_l10: 512 px output, 64^2 neural rendering, 48 + 48 samples per ray, fixture
channels) and on the bundled demo model (32 px output, 16^2 neural rendering, 12 + 12 samples), on op3d's default
path.

    python bench/inversion.py [--sets demo,ffhq_k8_l10] [--steps 3] [--threads 2] [--device cpu]
                              [--detector-dir DIR]

Each row runs --steps optimisation steps; the first is a warm-up and the table gives the median and minimum of the
others (the per-step wall times Projection.seconds / Tuning.seconds, which wait for the device). The target is the
model's own render of seed 1 at the average camera turned 0.2 rad in yaw, with its camera label. Rows: projection
in W with the noise maps optimised (the published recipe) and the camera fixed; the same with the camera optimised
too; PTI. Loss MSE; with --detector-dir (a folder holding vgg16.pkl) the projection and PTI rows are repeated with
LPIPS. Sets: demo, or a fixture folder name under ../shared/fixtures/official or /eg3d ($OP3D_FIXTURES).
The header gives the 1-minute load average: the CPU is shared, and wall times scale with it. "CPU s/step" is the
process's CPU time (all its threads) over all the steps, warm-up and w_avg's 1000 mapped samples included: it
depends much less on other jobs; on an idle machine wall time is about CPU time / threads.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import pathlib
import platform
import statistics
import sys
import time

import torch

import op3d
from op3d import generation
from op3d.inversion.camera import OrbitCamera
from op3d.inversion.losses import ImageLoss, load_lpips
from op3d.inversion.projector import ProjectionSettings, project
from op3d.inversion.pti import PTISettings, pivotal_tuning
from op3d.metrics.detectors import DetectorError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from generator import fixtures_root  # noqa: E402


def load_set(name: str, device) -> torch.nn.Module:
    if name == "demo":
        path = pathlib.Path(generation.DEMO_NETWORK)
    else:
        found = [fixtures_root() / group / name / "G.pkl" for group in ("official", "eg3d")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise SystemExit(f"--sets: no fixture {name} under {fixtures_root()}/official or /eg3d")
        path = found[0]
    return op3d.load_network_pkl(path, device=device)["G_ema"]


def target_of(G, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(target [1, 3, R, R], its label [1, 25])."""
    ws = generation.seed_to_ws(G, 1, device=device)
    c = generation.camera_label(G, math.pi / 2 + 0.2, math.pi / 2, device=device)
    with torch.no_grad():
        torch.manual_seed(0)
        return G.synthesis(ws, c, noise_mode="const")["image"], c


def bench_set(name: str, steps: int, device, lpips) -> list[dict]:
    G = load_set(name, device)
    target, c = target_of(G, device)
    pivot = G.settings.avg_camera_pivot
    s = G.settings
    base = {"set": name, "model": type(G).__name__.replace("Generator", ""), "res": G.img_resolution,
            "nrr": G.neural_rendering_resolution, "samples": f"{s.depth_resolution}+{s.depth_resolution_importance}"}
    rows = []
    for kind in ["mse"] + (["lpips"] if lpips is not None else []):
        loss = ImageLoss(kind, lpips)
        for camera_too in (False, True) if kind == "mse" else (False,):
            settings = ProjectionSettings(num_steps=steps, w_avg_samples=1000, optimize_camera=camera_too)
            camera = OrbitCamera.from_label(c, pivot).to(device)
            cpu = time.process_time()
            result = project(copy.deepcopy(G), target, camera, loss, settings)
            cpu = (time.process_time() - cpu) / steps
            stage = "projection, W + noise maps" + (" + camera" if camera_too else "")
            rows.append(dict(base, stage=stage, loss=kind, seconds=result.seconds[1:], cpu=cpu))
        G_work = copy.deepcopy(G)
        ws = generation.seed_to_ws(G, 2, device=device)  # any pivot: the cost does not depend on it
        pti_loss = ImageLoss("mse" if kind == "mse" else "lpips+mse", lpips)
        cpu = time.process_time()
        tuning = pivotal_tuning(G_work, ws, c, target, pti_loss, PTISettings(num_steps=steps))
        cpu = (time.process_time() - cpu) / steps
        rows.append(dict(base, stage="PTI", loss=pti_loss.kind, seconds=tuning.seconds[1:], cpu=cpu))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="demo,ffhq_k8_l10")
    parser.add_argument("--steps", type=int, default=3, help="Steps per row, the first a warm-up (>= 2).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detector-dir", default=None, help="Folder holding vgg16.pkl (adds the LPIPS rows).")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps: at least 2 (the first is a warm-up)")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        lpips = load_lpips(args.detector_dir, device) if args.detector_dir else None
    except DetectorError as error:
        raise SystemExit(f"--detector-dir: {error}") from None
    rows = [row for name in args.sets.split(",") for row in bench_set(name, args.steps, device, lpips)]
    if device.type == "cpu":
        where = f"{platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()} kernels), {args.threads} threads"
    else:
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"device: {where}, torch {torch.__version__}, batch 1, {args.steps - 1} timed steps after 1 warm-up, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print("| set | model | output / neural res | samples/ray | stage | loss | s/step median | min | CPU s/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['model']} | {r['res']} / {r['nrr']} | {r['samples']} | {r['stage']} | {r['loss']} | "
              f"{statistics.median(r['seconds']):.2f} | {min(r['seconds']):.2f} | {r['cpu']:.2f} |")


if __name__ == "__main__":
    main()
