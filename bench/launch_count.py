"""Kernel launches per G_ema forward at batch 1, on op3d's fast path and on its reference path.

    python bench/launch_count.py [--nrr 128] [--k 8]

At batch 1 a GPU finishes many of the forward's kernels in microseconds, and each launch costs some microseconds of
host time (Python, the dispatcher, the driver) whatever its size, so the number of launches bounds how fast an
eager forward can go. This counts, without a GPU, the ATen operations of one forward of a released-size model
(cbase 24576, cmax 384, 512 output; built from the FFHQ training options, random weights) on PyTorch's meta device,
which has shapes and no values: the count takes seconds on any machine and does no arithmetic. The forward runs as
on CUDA: blocks built with use_fp16 compute in float16 (their casts count), and the FIR fast path gets the filter
taps it would read from the real filters (meta tensors have no values to read). Views and allocations launch
nothing and are not counted.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

# ATen operations that only make a new view of existing memory or allocate it: no kernel.
NO_KERNEL = frozenset({
    "view", "_unsafe_view", "reshape", "_reshape_alias", "expand", "permute", "transpose", "t", "unsqueeze", "squeeze",
    "select", "slice", "as_strided", "detach", "alias", "split", "split_with_sizes", "unbind", "narrow", "diagonal",
    "unflatten", "lift_fresh", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations run inside it, by name."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    def launches(self) -> int:
        return sum(n for name, n in self.counts.items() if name not in NO_KERNEL)


def meta_generator(k: int):
    """A released-size generator with random weights on the meta device, and the FIR taps of its filters."""
    from op3d.networks import ops
    from run_all import generator_for

    G = generator_for({"source": f"K={k} L=10 released", "k": k, "size": "released"}, torch.device("cpu"))
    taps_by_name = {name: ops.separable_taps(buf) for name, buf in G.named_buffers() if buf.ndim == 2}
    G = G.to("meta")  # new buffer tensors: the taps are keyed by the meta tensors upfirdn2d will be handed
    taps = {id(buf): taps_by_name[name] for name, buf in G.named_buffers() if name in taps_by_name}
    return G, taps


def count_forward(G, taps: dict, nrr: int, fast: bool) -> OpCounter:
    import op3d.cameras
    from op3d import fast_paths
    from op3d.networks import ops

    plain_taps = ops.separable_taps
    saved_fp16 = ops.FP16_DEVICE_TYPES
    ops.separable_taps = lambda f: taps[id(f)] if id(f) in taps else plain_taps(f)
    ops.FP16_DEVICE_TYPES = saved_fp16 | {"meta"}
    try:
        c = op3d.cameras.orbit_camera(torch.pi / 2, torch.pi / 2, 2.7).to("meta")
        z = torch.randn(1, G.z_dim, device="meta")
        with torch.no_grad(), (fast_paths.configured() if fast else fast_paths.reference()), OpCounter() as counter:
            G(z, c, noise_mode="const", neural_rendering_resolution=nrr)
    finally:
        ops.separable_taps, ops.FP16_DEVICE_TYPES = plain_taps, saved_fp16
    return counter


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nrr", type=int, default=128, help="neural rendering resolution")
    parser.add_argument("--k", type=int, default=8, help="planes per axis")
    args = parser.parse_args()

    G, taps = meta_generator(args.k)
    print(f"released-size generator, K={args.k} L=10, batch 1, neural {args.nrr}, fp16 blocks as on CUDA\n")
    print("| path | kernel launches | of which convolutions | matmuls | ATen ops (views included) | most frequent |")
    print("|---|---|---|---|---|---|")
    for fast in (False, True):
        counter = count_forward(G, taps, args.nrr, fast)
        counts = counter.counts
        frequent = ", ".join([f"{name} {n}" for name, n in counts.most_common() if name not in NO_KERNEL][:6])
        matmuls = sum(counts[name] for name in ("addmm", "mm", "bmm", "matmul", "baddbmm"))
        print(f"| {'fast' if fast else 'reference'} | {counter.launches()} | {counts['convolution']} | {matmuls} | "
              f"{sum(counts.values())} | {frequent} |")


if __name__ == "__main__":
    main()
