"""Switches for op3d's fast paths.

Every fast path computes the same function as the plain reference path next to it (the official-equivalent
computation the parity tests pin down); they differ only in float rounding order, within the core parity
tolerance, and each has a test that compares the two. All are on by default.

    with op3d.fast_paths.reference():      # everything on the plain path (parity checks, benchmarks)
        G(z, c)
    with op3d.fast_paths.configured(fused_lookup=False):   # one switch off
        G(z, c)
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass


@dataclass
class FastPaths:
    """Which fast paths are on (process-wide)."""

    fir: bool = True
    """FIR resampling (upfirdn2d): up-sampling by separable polyphase filtering from strided slices instead of a
    depthwise 2-D convolution over a zero-stuffed copy; filtering without up-sampling on channels-last tensors as
    a depthwise convolution read in that layout (oneDNN's native one)."""
    channels_last: bool = True
    """Run the StyleGAN2 convolutions (backbone and superresolution) in channels-last memory layout."""
    plane_gemm: bool = True
    """OrthoPlanes backbone: the K styled skip outputs of a block as one batched matrix product over the shared
    features, instead of a grouped 1x1 convolution over K repeated copies."""
    fused_lookup: bool = True
    """Feature lookup of all plane groups as one weighted row gather (embedding_bag) from planes stored
    channels-last, returning the group mean the decoder needs; the reference is one grid_sample per group."""
    shape_grid: bool = True
    """Shape extraction slab by slab (fixed z): each plane group interpolated along z once per slab, the remaining
    corners of every point gathered in one weighted row sum, density-only decoding in cache-sized chunks; the
    reference runs the generator's lookup and decoder per chunk of points."""
    fused_marching: bool = True
    """Volume rendering: the coarse pass computes only its interval weights; the final composite weights each sample
    by half of the two intervals it bounds, in the samples' own order, and sums the colours of the coarse and fine
    sets by one batched matrix product each, instead of sorting, averaging and multiplying copies of all colours."""
    inplace_act: bool = True
    """bias + activation + gain + clamp (bias_act) in place on one new tensor when no gradient is recorded,
    instead of a new tensor per step (bitwise the same values, fewer allocations and memory passes)."""


FAST = FastPaths()
NAMES = tuple(f.name for f in dataclasses.fields(FastPaths))


@contextlib.contextmanager
def configured(**switches: bool):
    """Set some switches for the duration of a `with` block (restored afterwards, also on error)."""
    unknown = set(switches) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown fast path(s) {sorted(unknown)}; known: {list(NAMES)}")
    saved = dataclasses.asdict(FAST)
    try:
        for name, value in switches.items():
            setattr(FAST, name, bool(value))
        yield FAST
    finally:
        for name, value in saved.items():
            setattr(FAST, name, value)


def reference():
    """All fast paths off: the plain reference computation."""
    return configured(**{name: False for name in NAMES})
