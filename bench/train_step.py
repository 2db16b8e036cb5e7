"""Training speed: sec/kimg of one G+D training iteration (Gmain, Dmain every iteration; Greg every 4th and Dreg
every 16th, weighted accordingly), at the tiny CPU config and at the FFHQ config (K=8, L=10, 64^2 neural
rendering, 512 output, batch 8 per GPU, released channel sizes).

    python bench/train_step.py [--configs tiny,ffhq] [--device cuda] [--repeats 3] [--threads 2]

Random reals and labels (speed only). Prints a table with the device; record GPU rows in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from op3d.cameras import orbit_camera
from op3d.training.build import build_networks
from op3d.training.loss import GANLoss
from op3d.training.optimization import make_phases
from op3d.training.options import TrainingOptions, training_spec

CONFIGS = {
    "tiny": dict(cfg="tiny", batch=4, resolution=32, extra=dict(cbase=512, cmax=16, map_depth=2, plane_number=4,
                                                                fourier_L=2, d_num_fp16_res=0, sr_num_fp16_res=0)),
    "ffhq": dict(cfg="ffhq", batch=8, resolution=512, extra=dict(cbase=32768, cmax=512, map_depth=2, plane_number=8,
                                                                 fourier_L=10, gen_pose_cond=True)),
}


class _FakeDataset:
    """What build_networks reads from a dataset: label size, resolution, channels, label std."""

    def __init__(self, resolution: int):
        self.label_dim, self.resolution, self.num_channels = 25, resolution, 3

    def get_label_std(self):
        return np.ones(25, np.float32)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name: str, device: torch.device, repeats: int) -> dict:
    cfg = CONFIGS[name]
    opts = TrainingOptions(outdir="-", cfg=cfg["cfg"], data="-", gpus=1, batch=cfg["batch"], gamma=1,
                           **cfg["extra"])
    spec = training_spec(opts, cfg["resolution"], 1000)
    G, D = build_networks(spec, _FakeDataset(cfg["resolution"]), device)
    loss = GANLoss(G, D, **{k: v for k, v in spec["loss_kwargs"].items() if k != "class_name"})
    phases = make_phases(G, D, spec)
    b, r = cfg["batch"], cfg["resolution"]
    real = torch.rand(b, 3, r, r, device=device) * 2 - 1
    c = orbit_camera(math.pi / 2, math.pi / 2, device=device).repeat(b, 1)
    times = {}
    for phase in phases:
        samples = []
        for _ in range(repeats + 1):
            z = torch.randn(b, G.z_dim, device=device)
            phase.module.requires_grad_(True)
            phase.optimizer.zero_grad(set_to_none=True)
            sync(device)
            start = time.perf_counter()
            loss.accumulate_gradients(phase.name, real, c, z, c, gain=phase.interval, cur_nimg=0)
            phase.optimizer.step()
            sync(device)
            samples.append(time.perf_counter() - start)
            phase.module.requires_grad_(False)
        times[phase.name] = statistics.median(samples[1:])
    per_iteration = sum(t / phase.interval for t, phase in zip(times.values(), phases))
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    return {"config": name, "batch": b, **times, "sec_per_kimg": per_iteration / b * 1000, "peak_gib": peak}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,ffhq")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'} "
          f"({args.threads} threads)")
    print(f"{'config':8} {'batch':>5} {'Gmain s':>8} {'Greg s':>8} {'Dmain s':>8} {'Dreg s':>8} {'sec/kimg':>9} "
          f"{'peak GiB':>8}")
    for name in args.configs.split(","):
        row = bench(name, device, args.repeats)
        print(f"{row['config']:8} {row['batch']:5d} {row['Gmain']:8.3f} {row['Greg']:8.3f} {row['Dmain']:8.3f} "
              f"{row['Dreg']:8.3f} {row['sec_per_kimg']:9.1f} {row['peak_gib']:8.2f}")


if __name__ == "__main__":
    main()
