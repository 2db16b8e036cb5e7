"""Regression tests of issue 17 (part A): the FIR taps cache, construction-only rendering settings, and shape and
gradient flow of every superresolution variant.

Expectations come from the reference path (`fast_paths.reference()`) or from the definitions, never from outputs
of the code under test.
"""

import pytest
import torch

from op3d import fast_paths
from op3d.networks import ops
from op3d.networks.generator import OrthoPlanesGenerator
from op3d.networks.superresolution import VARIANTS, Superresolution
from op3d.rendering.settings import CONSTRUCTION_ONLY


def filter_over(raw: bytearray) -> torch.Tensor:
    """A [4, 4] float32 filter whose storage is `raw` (the address stays the same when raw is rewritten)."""
    return torch.frombuffer(raw, dtype=torch.float32).view(4, 4)


def test_fir_taps_follow_the_values_of_a_new_filter_at_a_freed_filters_address():
    """A filter freed and a different one allocated at the same address, same shape, fresh version counter (what
    the allocator does for same-size tensors): the second must be filtered with its own taps."""
    first = ops.setup_filter([1, 3, 3, 1]).numpy()
    second = ops.setup_filter([1, 2, 3, 4]).numpy()
    raw = bytearray(first.tobytes())
    x = torch.randn(1, 2, 9, 9)
    with torch.no_grad():
        old = filter_over(raw)
        address = old.data_ptr()
        ops.upfirdn2d(x, old, down=2, padding=1)  # the first filter's taps are read (and cached)
        del old
        raw[:] = second.tobytes()  # the first tensor is gone; a new one lives at its address
        f = filter_over(raw)
        assert f.data_ptr() == address and f._version == 0 and torch.equal(f, torch.from_numpy(second))
        fast = ops.upfirdn2d(x, f, down=2, padding=1)
        with fast_paths.reference():
            ref = ops.upfirdn2d(x, torch.from_numpy(second.copy()), down=2, padding=1)
    assert torch.allclose(fast, ref, rtol=1e-6, atol=1e-6)
    assert ops.separable_taps(f) == ops.separable_taps(torch.from_numpy(second.copy()))


def test_fir_taps_follow_in_place_changes_and_keep_the_answer_per_tensor():
    f = ops.setup_filter([1, 3, 3, 1])
    taps = ops.separable_taps(f)
    assert ops.separable_taps(f) is taps  # read once per filter tensor
    f.copy_(ops.setup_filter([1, 2, 2, 1]))
    assert ops.separable_taps(f) == ops.separable_taps(ops.setup_filter([1, 2, 2, 1])) != taps


def test_fir_taps_cache_does_not_keep_filters_alive():
    sizes = []
    for _ in range(3):
        ops.separable_taps(ops.setup_filter([1, 3, 3, 1]))
        sizes.append(len(ops._TAPS_CACHE))
    assert sizes[0] == sizes[-1]


# ---- construction-only settings --------------------------------------------------------------------------------

def tiny_generator(**rendering):
    rendering_kwargs = dict(depth_resolution=4, depth_resolution_importance=4, ray_start=2.25, ray_end=3.3,
                            superresolution_module="training.superresolution.SuperresolutionHybrid2X", **rendering)
    return OrthoPlanesGenerator(z_dim=8, c_dim=25, w_dim=512, img_resolution=128, img_channels=3,
                                channel_base=256, channel_max=8, mapping_kwargs={"num_layers": 1},
                                per_dir_plane_number=2, fourier_L=1, rendering_kwargs=rendering_kwargs)


CHANGED = {"superresolution_module": "training.superresolution.SuperresolutionHybrid4X", "sr_antialias": False,
           "decoder_lr_mul": 0.5}


def test_construction_only_settings_are_the_three_that_shape_modules():
    assert set(CONSTRUCTION_ONLY) == set(CHANGED)


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_writing_a_construction_only_setting_is_refused(key):
    G = tiny_generator()
    before = dict(G.rendering_kwargs)
    with pytest.raises(ValueError, match=f"{key}.*fixed at construction"):
        G.rendering_kwargs[key] = CHANGED[key]
    with pytest.raises(ValueError, match=f"{key}.*fixed at construction"):
        G.rendering_kwargs.update({key: CHANGED[key], "depth_resolution": 6})
    with pytest.raises(ValueError, match=f"{key}.*fixed at construction"):
        G.rendering_kwargs = {**before, key: CHANGED[key]}
    assert dict(G.rendering_kwargs) == before  # nothing changed, not even depth_resolution
    G.rendering_kwargs[key] = before[key]  # the value it was built with is accepted
    G.rendering_kwargs = {k: v for k, v in before.items() if k != key}  # absent: keeps the built value
    assert G.rendering_kwargs[key] == before[key]


def test_construction_only_settings_are_set_at_construction():
    G = tiny_generator(sr_antialias=False, decoder_lr_mul=0.5)
    assert G.superresolution.sr_antialias is False and G.rendering_kwargs["sr_antialias"] is False
    assert G.rendering_kwargs["decoder_lr_mul"] == 0.5


# ---- superresolution variants: shape and gradient flow ---------------------------------------------------------

def variant_case(name):
    spec = VARIANTS[name]
    out_res = spec.img_resolution or 32  # 0: op3d's any-size variant
    in_res = spec.input_resolution or out_res // 2
    return out_res, in_res


# Hybrid8XDC (the released models') is checked against the official gradients by tests/test_loss_parity.py; its
# backward at 512 x 512 with 256/128 channels would take minutes on the CI CPU.
@pytest.mark.parametrize("name", sorted(set(VARIANTS) - {"SuperresolutionHybrid8XDC"}))
def test_superresolution_variant_shape_and_gradient_flow(name):
    """Training mode, at the variant's own input resolution: the output is [1, 3, R, R] and every parameter, the
    features and the raw RGB receive a finite, non-zero gradient."""
    torch.manual_seed(0)
    out_res, in_res = variant_case(name)
    sr = Superresolution(name, channels=32, img_resolution=out_res).train()
    for p in sr.parameters():  # noise_strength starts at 0, which would cut the noise gradient only
        if p.ndim == 0:
            p.data.fill_(0.1)
    rgb = torch.randn(1, 3, in_res, in_res, requires_grad=True)
    x = torch.randn(1, 32, in_res, in_res, requires_grad=True)
    ws = torch.randn(1, 4, 512, requires_grad=True)
    y = sr(rgb, x, ws, noise_mode="random")
    assert y.shape == (1, 3, out_res, out_res) and y.dtype == torch.float32
    (y * torch.randn_like(y)).sum().backward()
    for label, t in [("rgb", rgb), ("features", x), *sr.named_parameters()]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().max() > 0, (name, label)
    assert ws.grad[:, :-1].abs().max() == 0 and ws.grad[:, -1].abs().max() > 0  # only the last w is used
