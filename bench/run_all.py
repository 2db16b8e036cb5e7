"""The benchmark suite: every row measures op3d's fast path against its reference path (op3d.fast_paths.reference,
the plain official-equivalent computation) in the same run, each in a fresh process, and prints a table. Each row
runs a fast-path process, a reference process and a fast-path process again, so that the host's speed drifting
during a row (a shared VM) does not favour either path; the fast time is the median over both fast processes.

    python bench/run_all.py [--device cpu|cuda] [--threads 2] [--repeats 3] [--only generator,shapes,train]
                            [--rows "released, batch 1, neural 128;512^3"] [--write docs/benchmarks.md]

Rows: generator forward (the fixture checkpoints; K = 4, 8, 12 at L = 10; batch 1 and 8; neural rendering 64
and 128), shape extraction (128^3, 256^3, and 512^3 on GPU; the reference is the official procedure, the whole
generator re-run per chunk of 1M points), and a training iteration (tiny config; the FFHQ config on GPU). Peak
memory: CUDA max allocated, or the peak resident set size of the process on CPU (model and interpreter
included). --rows keeps the rows whose description (the table's "row" column) contains one of its
';'-separated parts. --write replaces this device's section of the file (between `<!-- run_all:DEVICE -->`
markers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

FIXTURE_SETS = {"ffhq_k8_l10": "official/ffhq_k8_l10", "shhq_k4_l6": "official/shhq_k4_l6"}
SIZES = {"fixture": (4096, 32), "released": (24576, 384)}  # (channel_base, channel_max)


def rows_for(device: str, only: set[str]) -> list[dict]:
    gpu = device.startswith("cuda")
    rows = []
    if "generator" in only:
        for name in FIXTURE_SETS:
            rows.append({"stage": "generator", "source": name, "batch": 1, "nrr": 64})
        size = "released" if gpu else "fixture"
        batches, nrrs = ((1, 8), (64, 128)) if gpu else ((1,), (64,))
        for k in (4, 8, 12):
            for batch in batches:
                for nrr in nrrs:
                    rows.append({"stage": "generator", "source": f"K={k} L=10 {size}", "k": k, "size": size,
                                 "batch": batch, "nrr": nrr})
        if not gpu:
            rows.append({"stage": "generator", "source": "K=8 L=10 fixture", "k": 8, "size": "fixture", "batch": 1,
                         "nrr": 128})
    if "shapes" in only:
        for name in FIXTURE_SETS:
            for res in (128, 256, 512) if gpu else (128, 256):
                rows.append({"stage": "shapes", "source": name, "resolution": res})
    if "train" in only:
        for config in ("tiny", "ffhq") if gpu else ("tiny",):
            rows.append({"stage": "train", "source": config})
    return rows


def peak_memory_gib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def generator_for(row: dict, device):
    import op3d
    import torch
    from generator import fixtures_root

    if row["source"] in FIXTURE_SETS:
        return op3d.load_network_pkl(fixtures_root() / FIXTURE_SETS[row["source"]] / "G.pkl", device=device)["G_ema"]
    from op3d.training.build import build_networks
    from op3d.training.options import TrainingOptions, training_spec
    from train_step import _FakeDataset

    cbase, cmax = SIZES[row["size"]]
    opts = TrainingOptions(outdir="-", cfg="ffhq", data="-", gpus=1, batch=8, gamma=1, cbase=cbase, cmax=cmax,
                           map_depth=2, plane_number=row["k"], fourier_L=10)
    torch.manual_seed(0)
    G, _ = build_networks(training_spec(opts, 512, 1000), _FakeDataset(512), device)
    return G.eval().requires_grad_(False)


def measure(row: dict, repeats: int, device) -> dict:
    """Run one row on the current path; returns {'runs': [seconds, ...], extra}."""
    import torch
    from generator import timed

    if row["stage"] == "generator":
        import op3d.cameras

        G = generator_for(row, device)
        G.neural_rendering_resolution = row["nrr"]
        z = torch.randn(row["batch"], G.z_dim, device=device)
        c = op3d.cameras.orbit_camera(math.pi / 2, math.pi / 2, 2.7, device=device).repeat(row["batch"], 1)
        with torch.no_grad():
            G(z, c, noise_mode="const")
            runs = [timed(lambda: G(z, c, noise_mode="const"), device) for _ in range(repeats)]
        return {"runs": runs, "images": row["batch"]}
    if row["stage"] == "shapes":
        import op3d
        from op3d import fast_paths, generation, shapes
        from generator import fixtures_root
        from shapes import per_chunk_recompute

        G = op3d.load_network_pkl(fixtures_root() / FIXTURE_SETS[row["source"]] / "G.pkl", device=device)["G_ema"]
        ws = generation.seed_to_ws(G, 0, device=device)
        if fast_paths.FAST.shape_grid:  # `repeats` runs: one is a few seconds, exposed to host noise
            shapes.extract_density(G, ws, 32)
            return {"runs": [timed(lambda: shapes.extract_density(G, ws, row["resolution"]), device)
                             for _ in range(repeats)]}
        per_chunk_recompute(G, ws, 32, 1_000_000)  # one run: ten times longer, so it averages the same noise
        return {"runs": [timed(lambda: per_chunk_recompute(G, ws, row["resolution"], 1_000_000), device)]}
    from train_step import bench

    result = bench(row["source"], device, repeats)
    return {"runs": [result["sec_per_kimg"]], "unit": "s/kimg"}


def run_child(spec: dict) -> None:
    import torch

    from op3d import fast_paths

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    context = fast_paths.configured() if spec["fast"] else fast_paths.reference()
    with context:
        result = measure(spec["row"], spec["repeats"], device)
    result["peak_gib"] = peak_memory_gib(device)
    print("RESULT " + json.dumps(result), flush=True)


def run_in_child(row: dict, fast: bool, args) -> dict:
    spec = {"row": row, "fast": fast, "threads": args.threads, "device": args.device, "repeats": args.repeats}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark row {row} ({'fast' if fast else 'reference'}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def describe(row: dict) -> str:
    if row["stage"] == "generator":
        return f"{row['source']}, batch {row['batch']}, neural {row['nrr']}"
    if row["stage"] == "shapes":
        return f"{row['source']}, {row['resolution']}^3"
    return f"{row['source']} config"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    # The host's vector extensions (the kernels ATen dispatches to) change CPU times a lot between machines.
    return f"{platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()} kernels)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="generator,shapes,train")
    parser.add_argument("--rows", default=None, help="';'-separated parts of row descriptions: only those rows")
    parser.add_argument("--write", default=None, help="markdown file whose section for this device is replaced")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(json.loads(args.child))
        return
    import torch

    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    header = (f"device: {device_name(args.device)}, torch {torch.__version__}, {args.threads} threads; each row: a "
              f"fast-path process, a reference process, a fast-path process, each {args.repeats} runs after a "
              f"warm-up, medians (shapes: the reference, the per-chunk procedure, runs once; training: see "
              f"bench/train_step.py); {time.strftime('%Y-%m-%d')}")
    if os.environ.get("THP_MEM_ALLOC_ENABLE"):  # PyTorch's transparent-huge-page switch changes both paths' times
        header += f"; THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']}"
    table = [header, "",
             "| stage | row | reference | fast | speed-up | peak GiB ref / fast | fast images/s |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(table), flush=True)
    rows = rows_for(args.device, set(args.only.split(",")))
    if args.rows:
        parts = [part.strip() for part in args.rows.split(";") if part.strip()]
        rows = [row for row in rows if any(part in f"{row['stage']} {describe(row)}" for part in parts)]
        if not rows:
            parser.error(f"--rows {args.rows!r} matches no row of --only {args.only!r} on {args.device}")
    for row in rows:
        # Fast, reference, fast: the fast runs surround the reference in time, so a drift of the host's speed
        # during the row (this is a shared VM) does not favour either path.
        before, ref, after = (run_in_child(row, fast, args) for fast in (True, False, True))
        ref_seconds = statistics.median(ref["runs"])
        fast_seconds = statistics.median(before["runs"] + after["runs"])
        unit = ref.get("unit", "s")
        fast_peak = max(before["peak_gib"], after["peak_gib"])
        line = (f"| {row['stage']} | {describe(row)} | {ref_seconds:.3g} {unit} | {fast_seconds:.3g} {unit} | "
                f"{ref_seconds / fast_seconds:.2f}x | {ref['peak_gib']:.2f} / {fast_peak:.2f} | ")
        line += f"{ref['images'] / fast_seconds:.2f} |" if "images" in ref else " |"
        table.append(line)
        print(line, flush=True)
    if args.write:
        path = pathlib.Path(args.write)
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        start, end = f"<!-- run_all:{kind} -->", f"<!-- /run_all:{kind} -->"
        block = f"{start}\n" + "\n".join(table) + f"\n{end}"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
        text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
