"""G_ema forward time per stage at the fixture configurations (batch 1, noise 'const', the pickle's rendering
settings), on op3d's fast path and on its reference path (op3d.fast_paths.reference) in the same run.

    python bench/generator.py [--threads 2] [--repeats 5] [--device cpu]

Prints one row per fixture set and path: median / min wall time of mapping + synthesis, and the median time of
its parts (backbone planes, renderer, superresolution). Needs ../shared/fixtures (or $OP3D_FIXTURES).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import time

import torch

import op3d
import op3d.cameras
from op3d import fast_paths

SETS = ("official/ffhq_k8_l10", "official/shhq_k4_l6")


def fixtures_root() -> pathlib.Path:
    default = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
    return pathlib.Path(os.environ.get("OP3D_FIXTURES") or default)


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_set(name: str, repeats: int, device: torch.device) -> dict:
    G = op3d.load_network_pkl(fixtures_root() / name / "G.pkl", device=device)["G_ema"]
    z = torch.randn(1, G.z_dim, device=device)
    c = op3d.cameras.orbit_camera(torch.pi / 2, torch.pi / 2, 2.7, lookat=(0, 0, 0.2), device=device)

    def forward():
        G(z, c, noise_mode="const")

    with torch.no_grad():
        forward()  # warm-up
        totals = [timed(forward, device) for _ in range(repeats)]
        ws = G.mapping(z, c)
        G.synthesis(ws, c, noise_mode="const", cache_backbone=True)  # fills the backbone cache
        parts = {"backbone": [], "renderer + sr": [], "sr": []}
        for _ in range(repeats):
            parts["backbone"].append(timed(lambda: G.compute_planes(ws, noise_mode="const"), device))
            parts["renderer + sr"].append(timed(lambda: G.synthesis(ws, c, use_cached_backbone=True), device))
            r = G.neural_rendering_resolution
            feat = torch.rand(1, 32, r, r, device=device)
            parts["sr"].append(timed(lambda: G.superresolution(feat[:, :3], feat, ws, noise_mode="none"), device))
    med = {k: statistics.median(v) for k, v in parts.items()}
    s = G.settings
    return {"set": name.split("/")[-1], "path": "fast" if fast_paths.FAST.fir else "reference", "K": G.n_planes_per_axis, "L": G.L,
            "samples": f"{s.depth_resolution}+{s.depth_resolution_importance}", "nrr": G.neural_rendering_resolution,
            "median_s": statistics.median(totals), "min_s": min(totals), "backbone_s": med["backbone"],
            "renderer_s": med["renderer + sr"] - med["sr"], "sr_s": med["sr"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in SETS:
        for context in (fast_paths.reference, fast_paths.configured):
            with context():
                rows.append(bench_set(name, args.repeats, device))
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, batch 1, "
          f"{args.repeats} runs after 1 warm-up")
    header = ("| set | path | K | L | samples/ray | neural res | forward median (s) | min (s) | backbone (s) | "
              "renderer (s) | superres (s) |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        print(f"| {r['set']} | {r['path']} | {r['K']} | {r['L']} | {r['samples']} | {r['nrr']} | {r['median_s']:.2f} | "
              f"{r['min_s']:.2f} | {r['backbone_s']:.2f} | {r['renderer_s']:.2f} | {r['sr_s']:.2f} |")


if __name__ == "__main__":
    main()
