"""Shape extraction time: op3d (planes once per seed, decoder per chunk) against the official procedure (the whole
generator, backbone included, re-run for every chunk of points), measured in the same run.

    python bench/shapes.py [--resolutions 128,256] [--threads 2] [--max-batch 1000000] [--device cpu]

Uses the fixture checkpoints (../shared/fixtures or $OP3D_FIXTURES); both paths must give the same density.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from generator import SETS, fixtures_root, timed  # noqa: E402

import op3d  # noqa: E402
from op3d import generation, shapes  # noqa: E402


@torch.no_grad()
def per_chunk_recompute(G, ws, resolution: int, max_batch: int) -> np.ndarray:
    """The official loop: G.sample on each chunk, which recomputes the planes every time."""
    grid = shapes.ShapeGrid(resolution, G.settings.box_warp)
    sigma = np.empty(grid.num_points, dtype=np.float32)
    for start in range(0, grid.num_points, max_batch):
        stop = min(start + max_batch, grid.num_points)
        points = grid.points(start, stop, device=ws.device).unsqueeze(0)
        directions = torch.zeros_like(points)
        directions[..., 2] = -1
        torch.manual_seed(0)
        sigma[start:stop] = G.sample(points, directions, ws, noise_mode="const")["sigma"].reshape(-1).cpu()
    return sigma.reshape(resolution, resolution, resolution)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", default="128,256")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=1_000_000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"max_batch {args.max_batch}")
    print("| set | N | op3d (s) | per-chunk recompute (s) | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for name in SETS:
        G = op3d.load_network_pkl(fixtures_root() / name / "G.pkl", device=device)["G_ema"]
        ws = generation.seed_to_ws(G, 0, device=device)
        shapes.extract_density(G, ws, 32)  # warm-up
        per_chunk_recompute(G, ws, 32, args.max_batch)
        for res in (int(r) for r in args.resolutions.split(",")):
            result = {}
            t_fast = timed(lambda: result.setdefault("fast", shapes.extract_density(G, ws, res, args.max_batch)),
                           device)
            t_ref = timed(lambda: result.setdefault("ref", per_chunk_recompute(G, ws, res, args.max_batch)), device)
            diff = np.abs(result["fast"] - result["ref"]).max()
            print(f"| {name.split('/')[-1]} | {res} | {t_fast:.1f} | {t_ref:.1f} | {t_ref / t_fast:.2f}x | "
                  f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
