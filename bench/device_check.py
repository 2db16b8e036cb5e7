"""The GPU checks of issue #7 as one prepared call on a lent device machine (H100/H200): correctness on the GPU,
the benchmark rows that the issue's GPU targets name, and where the GPU time goes. Each step is skipped when
less of --budget (seconds, default 480) is left than its estimate, so one device call with timeout_s=570 covers
the whole script with time to spare (a session is lent 15 minutes of device time, the machine's start included).

Here, without a GPU, once per session:
    python bench/device_check.py --stage      # the fixture G.pkl files -> .device_fixtures/ (git-ignored, 43 MB)
Then the device tool (the ../shared beside the checkout does not travel, the carried folder does):
    run(command="python3 bench/device_check.py", carry=[".device_fixtures"], timeout_s=570)
A dry run of the logic on this machine's CPU (small sizes, no fixtures needed beyond ../shared):
    python bench/device_check.py --device cpu --quick

Writes into $OUT (else out/device_check): check.log (everything printed), benchmarks.md (bench/run_all.py's
table for the device, to paste into docs/benchmarks.md) and profile.txt (the top kernels). Steps, in order; a
failing step is reported and the next one runs:
  1. environment: device, driver, torch, triton;
  2. pytest: the generator on the accelerator against the CPU (tests/test_networks.py -k accelerator);
  3. targets: bench/run_all.py --device cuda on the released-size K = 8 forward (batch 1 and 8, neural 128),
     the fixture forwards, 512^3 shapes, and the training iteration at the FFHQ config;
  4. the fixture checkpoints on the device: fast path against reference path (images, a 128^3 volume) and
     against the CPU, as max |diff|;
  5. profile: the top CUDA kernels of a batch-1 released-size forward and of a 256^3 extraction;
  6. the batch-1 forward with each fast path switched off in turn: which pay on the GPU (they were chosen on the
     CPU; e.g. the separable FIR path launches more, smaller kernels, bench/launch_count.py);
  7. torch.compile of the field (fused lookup + decoder): speed-up of the batch-1 forward and the difference it
     makes (on the CPU it gained 4% of a synthesis, docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import pathlib
import shutil
import subprocess
import sys
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
STAGED = REPO / ".device_fixtures"
FIXTURE_SETS = ("official/ffhq_k8_l10", "official/shhq_k4_l6")
TARGET_ROWS = ("K=8 L=10 released, batch 1, neural 128", "K=8 L=10 released, batch 8, neural 128",
               "ffhq_k8_l10, batch 1", "shhq_k4_l6, batch 1", "512^3", "train ffhq")


def stage() -> None:
    """Copy the fixture checkpoints into .device_fixtures/ (in .gitignore: never committed, travels by carry)."""
    from generator import fixtures_root

    for name in FIXTURE_SETS:
        source = fixtures_root() / name / "G.pkl"
        if not source.is_file():
            raise SystemExit(f"--stage: fixture checkpoint {source} not found (set OP3D_FIXTURES)")
        target = STAGED / name / "G.pkl"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        print(f"staged {target} ({target.stat().st_size / 2 ** 20:.0f} MiB)")
    print('now: run(command="python3 bench/device_check.py", carry=[".device_fixtures"], timeout_s=570)')


class Tee(io.TextIOBase):
    """Writes to several text streams (the console and check.log)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


def step(title: str, estimate_s: float, deadline: float):
    """A context manager for one step: prints its title, yields whether the budget allows it, times it, and
    reports a failure instead of raising it."""

    @contextlib.contextmanager
    def runner():
        left = deadline - time.monotonic()
        print(f"\n## {title} (budget left {left:.0f} s, estimate {estimate_s:.0f} s)", flush=True)
        if left < estimate_s:
            print("SKIPPED: not enough budget left", flush=True)
            yield False
            return
        start = time.monotonic()
        try:
            yield True
            print(f"done in {time.monotonic() - start:.1f} s", flush=True)
        except Exception:  # a failing step is reported; the remaining steps still run
            traceback.print_exc(file=sys.stdout)
            print(f"FAILED after {time.monotonic() - start:.1f} s", flush=True)

    return runner()


def environment(device) -> None:
    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, device {device}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}: {props.total_memory / 2 ** 30:.0f} GiB, {props.multi_processor_count} SMs, "
              f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
        with contextlib.suppress(Exception):
            print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm",
                                  "--format=csv,noheader"], capture_output=True, text=True).stdout.strip())
    with contextlib.suppress(ImportError):
        import triton

        print(f"triton {triton.__version__}")


def accelerator_tests() -> None:
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_networks.py",
               "-k", "accelerator"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    print(result.stdout[-4000:], result.stderr[-2000:])
    if result.returncode != 0:
        raise RuntimeError(f"pytest exited with {result.returncode}")


def max_diff(a, b) -> float:
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


def fixture_agreement(device, quick: bool) -> None:
    """Fast against reference path on the device, and the device against the CPU, with the same renderer draws."""
    import torch

    import op3d
    import op3d.cameras
    from generator import fixtures_root
    from op3d import fast_paths, generation, shapes
    from op3d.rendering.renderer import RendererDraws

    resolution = 32 if quick else 128
    for name in FIXTURE_SETS:
        path = fixtures_root() / name / "G.pkl"
        G_cpu = op3d.load_network_pkl(path)["G_ema"]
        G = op3d.load_network_pkl(path, device=device)["G_ema"]
        r, settings = G.neural_rendering_resolution, G.settings
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(1, G.z_dim, generator=gen)
        c = op3d.cameras.orbit_camera(math.pi / 2 + 0.2, math.pi / 2 - 0.1, 2.7)
        draws = RendererDraws(torch.rand(1, r * r, settings.depth_resolution, 1, generator=gen),
                              torch.rand(r * r, settings.depth_resolution_importance, generator=gen))
        on_device = RendererDraws(draws.stratified.to(device), draws.importance.to(device))
        outputs = {}
        with torch.no_grad():
            with fast_paths.reference():
                outputs["cpu reference"] = G_cpu(z, c, noise_mode="const", renderer_draws=draws)
                outputs["device reference"] = G(z.to(device), c.to(device), noise_mode="const",
                                                renderer_draws=on_device)
            outputs["device fast"] = G(z.to(device), c.to(device), noise_mode="const", renderer_draws=on_device)
        for a, b in (("device fast", "device reference"), ("device reference", "cpu reference")):
            diffs = ", ".join(f"{key} {max_diff(outputs[a][key], outputs[b][key]):.2e}"
                              for key in ("image", "image_raw", "image_depth"))
            print(f"{name}: {a} against {b}: max |diff| {diffs}")
        ws = generation.seed_to_ws(G, 0, device=device)
        with fast_paths.reference():
            ref = shapes.extract_density(G, ws, resolution)
        fast = shapes.extract_density(G, ws, resolution)
        print(f"{name}: {resolution}^3 density, fast against reference on the device: max |diff| "
              f"{abs(fast - ref).max():.2e} (values up to {abs(ref).max():.1f})")


def benchmark_rows(device, out: pathlib.Path, quick: bool) -> None:
    rows = "ffhq_k8_l10, batch 1;128^3" if quick else ";".join(TARGET_ROWS)
    command = [sys.executable, str(REPO / "bench" / "run_all.py"), "--device", str(device), "--rows", rows,
               "--repeats", "2" if quick else "3", "--write", str(out / "benchmarks.md")]
    if quick:
        command += ["--only", "generator,shapes"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    print(result.stdout, result.stderr[-3000:])
    if result.returncode != 0:
        raise RuntimeError(f"run_all exited with {result.returncode}")


def released_generator(device, quick: bool):
    """The released FFHQ size (K = 8, L = 10, 512 output, neural rendering 128), random weights."""
    from run_all import generator_for

    row = {"source": "K=8 L=10", "k": 8, "size": "fixture" if quick else "released"}
    G = generator_for(row, device)
    G.neural_rendering_resolution = 64 if quick else 128
    return G


def profile(device, out: pathlib.Path, quick: bool) -> None:
    import torch
    from torch.profiler import ProfilerActivity

    import op3d.cameras
    from op3d import generation, shapes

    G = released_generator(device, quick)
    z = torch.randn(1, G.z_dim, device=device)
    c = op3d.cameras.orbit_camera(math.pi / 2, math.pi / 2, 2.7, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    report = []
    with torch.no_grad():
        for _ in range(2):
            G(z, c, noise_mode="const")  # warm-up (cuDNN algorithm choice, allocator)
        with torch.profiler.profile(activities=activities) as prof:
            G(z, c, noise_mode="const")
        report.append(f"# batch-1 forward, neural {G.neural_rendering_resolution}\n"
                      + prof.key_averages().table(sort_by=sort, row_limit=30))
        ws = generation.seed_to_ws(G, 0, device=device)
        resolution = 32 if quick else 256
        shapes.extract_density(G, ws, 32)
        with torch.profiler.profile(activities=activities) as prof:
            shapes.extract_density(G, ws, resolution)
        report.append(f"# {resolution}^3 shape extraction\n" + prof.key_averages().table(sort_by=sort, row_limit=20))
    (out / "profile.txt").write_text("\n\n".join(report))
    print("\n\n".join(text[:6000] for text in report))


def switch_ablation(device, quick: bool) -> None:
    """The batch-1 released-size forward with every fast path on, with each switched off in turn, and with all off
    (the reference path): which of them pay on this device (they were chosen on the CPU)."""
    import torch

    import op3d.cameras
    from generator import timed
    from op3d import fast_paths

    G = released_generator(device, quick)
    z = torch.randn(1, G.z_dim, device=device)
    c = op3d.cameras.orbit_camera(math.pi / 2, math.pi / 2, 2.7, device=device)
    repeats = 2 if quick else 7
    settings = [("all on", {})] + [(f"{name} off", {name: False}) for name in fast_paths.NAMES if name != "shape_grid"]
    settings += [("all off (reference)", {name: False for name in fast_paths.NAMES}), ("all on, again", {})]
    times = {}
    with torch.no_grad():
        for label, switches in settings:
            with fast_paths.configured(**switches):
                G(z, c, noise_mode="const")  # warm-up (cuDNN algorithm choice for this path's shapes)
                times[label] = min(timed(lambda: G(z, c, noise_mode="const"), device) for _ in range(repeats))
    base = min(times["all on"], times["all on, again"])  # measured first and last: drift shows between the two
    for label, best in times.items():
        print(f"{label:<24s} {best * 1e3:8.1f} ms  ({best / base:.2f} x all on)")


def compiled_field(device, quick: bool) -> None:
    """torch.compile of the per-point field (fused lookup + decoder) on the batch-1 forward: time and difference."""
    import torch

    import op3d.cameras
    from generator import timed

    G = released_generator(device, quick)
    z = torch.randn(1, G.z_dim, device=device)
    c = op3d.cameras.orbit_camera(math.pi / 2, math.pi / 2, 2.7, device=device)
    with torch.no_grad():
        G(z, c, noise_mode="const")
        plain = [timed(lambda: G(z, c, noise_mode="const"), device) for _ in range(5)]
        torch.manual_seed(1)  # the same renderer draws for both images
        image = G(z, c, noise_mode="const")["image"]
        G.run_field = torch.compile(G.run_field, dynamic=False)  # an instance attribute: this G only
        start = time.perf_counter()
        torch.manual_seed(1)
        compiled_image = G(z, c, noise_mode="const")["image"]
        compile_s = time.perf_counter() - start
        compiled = [timed(lambda: G(z, c, noise_mode="const"), device) for _ in range(5)]
    print(f"batch-1 forward: plain {min(plain) * 1e3:.1f} ms, field compiled {min(compiled) * 1e3:.1f} ms "
          f"(compile {compile_s:.0f} s), image max |diff| {max_diff(image, compiled_image):.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", action="store_true", help="copy the fixture checkpoints for the device call")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", type=float, default=480, help="seconds; steps that would overrun are skipped")
    parser.add_argument("--quick", action="store_true", help="small sizes: a dry run of the logic (CPU)")
    args = parser.parse_args()
    if args.stage:
        stage()
        return
    if STAGED.is_dir() and not os.environ.get("OP3D_FIXTURES"):
        os.environ["OP3D_FIXTURES"] = str(STAGED)  # also for the subprocesses
    # op3d is not installed on the device machine: the subprocesses import it from the checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu --quick for a dry run)")
    out = pathlib.Path(os.environ.get("OUT") or REPO / "out" / "device_check")
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    with open(out / "check.log", "w") as log, contextlib.redirect_stdout(Tee(sys.stdout, log)):
        print(f"bench/device_check.py, {time.strftime('%Y-%m-%d %H:%M:%S')}, budget {args.budget:.0f} s")
        steps = [("1. environment", 5, lambda: environment(device)),
                 ("2. accelerator tests", 60, accelerator_tests),
                 ("3. benchmark rows (bench/run_all.py)", 240, lambda: benchmark_rows(device, out, args.quick)),
                 ("4. fixture checkpoints: fast against reference, device against CPU", 60,
                  lambda: fixture_agreement(device, args.quick)),
                 ("5. profile", 40, lambda: profile(device, out, args.quick)),
                 ("6. each fast path switched off (batch-1 forward)", 30, lambda: switch_ablation(device, args.quick)),
                 ("7. torch.compile of the field (lookup + decoder)", 90,
                  lambda: compiled_field(device, args.quick))]
        if device.type != "cuda":
            steps.pop(1)  # the accelerator tests skip without one
        for title, estimate, run in steps:
            with step(title, estimate, deadline) as go:
                if go:
                    run()
        print(f"\nfinished; files in {out}")


if __name__ == "__main__":
    main()
