"""Each fast path (op3d.fast_paths) against the plain reference path it replaces: same function, only float
rounding differs. Whole-generator agreement at the fixture configurations is checked in test_official_parity
(fast paths on, against the official outputs) and here (fast against reference, same inputs)."""

import itertools

import numpy as np
import pytest
import torch

import op3d.cameras
from op3d import fast_paths
from op3d.networks import ops
from op3d.networks.generator import OrthoPlanesGenerator, TriPlaneGenerator
from op3d.networks.synthesis import SynthesisBlock, ToRGBLayer
from op3d.representation import fused_lookup, orthoplanes, triplanes
from op3d.rendering.ray_marcher import march_rays, march_sample_sets
from op3d.rendering.renderer import RendererDraws, merge_samples, render_rays
from op3d.rendering.settings import RenderingSettings
from op3d.shapes import ShapeGrid, extract_density
from test_official_parity import assert_matches

RENDERING = {"superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
             "depth_resolution": 6, "depth_resolution_importance": 6, "ray_start": 2.25, "ray_end": 3.3,
             "box_warp": 1.0, "c_scale": 1.0, "superresolution_noise_mode": "none", "white_back": False,
             "avg_camera_pivot": [0, 0, 0]}


def small_generator(cls=OrthoPlanesGenerator, seed=0, **kwargs):
    torch.manual_seed(seed)
    extra = {"per_dir_plane_number": 4, "fourier_L": 2} if cls is OrthoPlanesGenerator else {}
    G = cls(z_dim=8, c_dim=25, w_dim=512, img_resolution=128, img_channels=3, channel_base=256, channel_max=8,
            mapping_kwargs={"num_layers": 2}, sr_num_fp16_res=0, num_fp16_res=0, conv_clamp=None,
            rendering_kwargs=dict(RENDERING), plane_resolution=32, **extra, **kwargs).eval()
    with torch.no_grad():  # untrained decoders give nearly flat densities: make the shape tests see structure
        for p in G.decoder.parameters():
            p.mul_(3)
    return G


def test_switches_restore_and_reject_unknown_names():
    assert fast_paths.FAST.fir
    with fast_paths.reference():
        assert not any(vars(fast_paths.FAST).values())
        with fast_paths.configured(fir=True):
            assert fast_paths.FAST.fir and not fast_paths.FAST.fused_lookup
        assert not fast_paths.FAST.fir
    assert all(vars(fast_paths.FAST).values())
    with pytest.raises(ValueError, match="unknown fast path"):
        with fast_paths.configured(warp_speed=True):
            pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fir_resampling_matches_reference(dtype):
    torch.manual_seed(0)
    f = ops.setup_filter()
    configs = itertools.product([1, 2], [1, 2], [0, 1, [2, 1, 2, 1], [-1, 2, 0, -1], [3, 0, 1, 2]], [False, True],
                                [1, 4], [(7, 9), (8, 8), (1, 3)])
    checked = 0
    for up, down, pad, flip, gain, (h, w) in configs:
        if up > 1 and down > 1:
            continue  # not a fast-path case
        x = torch.randn(2, 3, h, w, dtype=dtype)
        try:
            with fast_paths.reference():
                ref = ops.upfirdn2d(x, f, up, down, pad, flip, gain)
        except RuntimeError:
            continue  # the padding leaves no output
        fast = ops.upfirdn2d(x, f, up, down, pad, flip, gain)
        assert fast.shape == ref.shape, (up, down, pad)
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-14)
        checked += 1
    assert checked == 148  # every configuration with an output
    for size in [(1, 1), (5, 16), (32, 32)]:  # the bilinear form of upsample2d, borders included
        x = torch.randn(2, 4, *size, dtype=dtype).contiguous(memory_format=torch.channels_last)
        with fast_paths.reference():
            ref = ops.upsample2d(x, f)
        torch.testing.assert_close(ops.upsample2d(x, f), ref, rtol=0, atol=1e-6)


def test_channels_last_filtering_runs_depthwise_and_matches_reference():
    """Filtering without up-sampling on channels-last tensors (the depthwise-convolution branch of `fir`)."""
    torch.manual_seed(4)
    f = ops.setup_filter()
    checked = 0
    for down, pad, flip, gain in itertools.product([1, 2], [0, 1, [2, 1, 2, 1], [-1, 2, 0, -1]], [False, True], [1, 4]):
        x = torch.randn(2, 5, 9, 8).contiguous(memory_format=torch.channels_last)
        with fast_paths.reference():
            ref = ops.upfirdn2d(x, f, 1, down, pad, flip, gain)
        fast = ops.upfirdn2d(x, f, 1, down, pad, flip, gain)
        assert fast.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-6)
        checked += 1
    assert checked == 32


@pytest.mark.parametrize("act,bias,gain,clamp", [("lrelu", True, None, 256), ("lrelu", False, 2.0, 0.5),
                                                 ("relu", True, None, None), ("linear", True, 1.0, 1.0),
                                                 ("linear", False, 1.0, None), ("sigmoid", True, 3.0, 0.7),
                                                 ("softplus", False, None, 0.3)])
def test_inplace_bias_act_is_bitwise_the_reference(act, bias, gain, clamp):
    torch.manual_seed(5)
    x = torch.randn(2, 6, 5, 4).contiguous(memory_format=torch.channels_last) * 3
    b = torch.randn(6) if bias else None
    with fast_paths.reference():
        ref = ops.bias_act(x, b, act=act, gain=gain, clamp=clamp)
    kept = x.clone()
    with torch.no_grad():
        fast = ops.bias_act(x, b, act=act, gain=gain, clamp=clamp)
    assert torch.equal(fast, ref) and torch.equal(x, kept)  # overwrite=False leaves the input alone
    with torch.no_grad():
        fast = ops.bias_act(x, b, act=act, gain=gain, clamp=clamp, overwrite=True)
    assert torch.equal(fast, ref)
    leaf = kept.clone().requires_grad_(True)  # recorded gradients: the plain path, input untouched
    out = ops.bias_act(leaf, b, act=act, gain=gain, clamp=clamp, overwrite=True)
    assert torch.equal(out.detach(), ref) and torch.equal(leaf.detach(), kept)
    out.sum().backward()
    assert leaf.grad is not None


def test_non_separable_filter_takes_the_reference_path():
    f = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    assert ops.separable_taps(f) is None
    assert ops.separable_taps(ops.setup_filter([1, 2, 1])) == ([0.25, 0.5, 0.25], [0.25, 0.5, 0.25])
    assert ops.separable_taps(ops.setup_filter([1, 2, 1], device="meta")) is None  # no values to read
    x = torch.randn(1, 2, 6, 6)
    with fast_paths.reference():
        ref = ops.upfirdn2d(x, f, up=2, padding=1)
    assert torch.equal(ops.upfirdn2d(x, f, up=2, padding=1), ref)


@pytest.mark.parametrize("batch", [1, 3])
def test_channels_last_synthesis_block_matches(batch):
    torch.manual_seed(1)
    block = SynthesisBlock(16, 8, w_dim=32, resolution=16, img_channels=3, is_last=False, conv_clamp=256,
                           fused_modconv_default=True).eval()
    x, img, ws = torch.randn(batch, 16, 8, 8), torch.randn(batch, 3, 8, 8), torch.randn(batch, 3, 32)
    with torch.no_grad():
        with fast_paths.reference():
            ref_x, ref_img = block(x, img, ws, noise_mode="const")
        fast_x, fast_img = block(x, img, ws, noise_mode="const")
    assert fast_x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast_x, ref_x, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast_img, ref_img, rtol=0, atol=1e-5)


def test_plane_gemm_matches_repeated_torgb():
    torch.manual_seed(2)
    layer = ToRGBLayer(6, 9, w_dim=20, conv_clamp=256)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 6, 5, 7).contiguous(memory_format=torch.channels_last)
    w = torch.randn(2, 4, 20)
    ref = layer(x.repeat_interleave(4, dim=0), w.reshape(8, 20))
    fast = layer.forward_planes(x, w)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)


def test_fused_lookup_far_outside_the_planes_reads_zero():
    torch.manual_seed(6)
    planes = torch.randn(1, 3, 3 * 4, 6, 5)
    coords = torch.cat([torch.rand(1, 50, 3) * 200 - 100, torch.rand(1, 50, 3) * 1.2 - 0.6], dim=1)
    ref = orthoplanes.sample_orthoplanes(planes, coords, 1.0).mean(1)
    fast = orthoplanes.sample_orthoplanes_mean(planes, coords, 1.0)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-6)
    assert fast[:, :50].abs().max() < 1e-6 < fast[:, 50:].abs().max()


def test_fused_orthoplane_lookup_matches_grid_sample_with_gradients():
    torch.manual_seed(3)
    base = torch.randn(2, 4, 3 * 8, 10, 12)
    coords = torch.rand(2, 300, 3) * 1.6 - 0.8  # partly outside the box: zero padding
    for projection, layout in itertools.product(["compat", "consistent"], ["nchw", "channels_last"]):
        planes = base.clone()
        if layout == "channels_last":
            planes = planes.view(8, 24, 10, 12).contiguous(memory_format=torch.channels_last).view(2, 4, 24, 10, 12)
        planes.requires_grad_(True)
        ref = orthoplanes.sample_orthoplanes(planes, coords, 1.0, projection).mean(1)
        (ref_grad,) = torch.autograd.grad(ref.square().sum(), planes)
        fast = orthoplanes.sample_orthoplanes_mean(planes, coords, 1.0, projection)
        (fast_grad,) = torch.autograd.grad(fast.square().sum(), planes)
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(fast_grad, ref_grad, rtol=0, atol=1e-5)


def test_channels_last_planes_are_read_without_a_copy():
    planes = torch.randn(8, 24, 10, 12).contiguous(memory_format=torch.channels_last).view(2, 4, 24, 10, 12)
    table, strides = fused_lookup.plane_rows(orthoplanes.orthoplane_volumes(planes))
    assert table.data_ptr() == planes.data_ptr() and table.shape == (2 * 4 * 10 * 12 * 3, 8)
    volumes = orthoplanes.orthoplane_volumes(planes)
    b, g, k, h, w = 1, 2, 3, 4, 5
    assert torch.equal(table[b * strides[0] + g * strides[1] + k * strides[2] + h * strides[3] + w * strides[4]],
                       volumes[b, g, k, h, w])


def test_fused_triplane_lookup_matches_grid_sample():
    torch.manual_seed(4)
    planes = torch.randn(2, 3, 8, 10, 12)
    coords = torch.rand(2, 300, 3) * 1.6 - 0.8
    for projection in ["compat", "consistent"]:
        ref = triplanes.sample_triplanes(planes, coords, 1.0, projection).mean(1)
        torch.testing.assert_close(triplanes.sample_triplanes_mean(planes, coords, 1.0, projection), ref,
                                   rtol=0, atol=1e-6)


def random_sample_set(rays, samples, channels, dtype, sort=True):
    """colors, raw densities, depths of `samples` samples on each of `rays` rays (2 images)."""
    depths = 2.25 + torch.rand(2, rays, samples, 1, dtype=dtype)
    depths = torch.sort(depths, -2).values if sort else depths
    return (torch.rand(2, rays, samples, channels, dtype=dtype), torch.randn(2, rays, samples, 1, dtype=dtype) * 3,
            depths)


@pytest.mark.parametrize("white_back", [False, True])
def test_marching_sample_sets_is_merge_and_march(white_back):
    """In float64 the fused composite equals merge_samples + march_rays up to 1e-12, also with depth ties between
    the sets and unsorted fine samples, and so do the gradients of colours and densities."""
    torch.manual_seed(0)
    coarse = random_sample_set(50, 7, 5, torch.float64)
    fine = random_sample_set(50, 9, 5, torch.float64, sort=False)
    fine[2][:, :10, :3] = coarse[2][:, :10, 2:5]  # ties across the sets
    leaves = [t.requires_grad_(True) for t in coarse[:2] + fine[:2]]
    fused = march_sample_sets([coarse, fine], white_back)
    depths, colors, densities = merge_samples(coarse[2], coarse[0], coarse[1], fine[2], fine[0], fine[1])
    merged = march_rays(colors, densities, depths, white_back)
    for got, want in zip(fused, merged):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    probe = [torch.randn_like(t) for t in merged[:2]]
    grads_fused = torch.autograd.grad(sum((t * p).sum() for t, p in zip(fused[:2], probe)), leaves)
    grads_merged = torch.autograd.grad(sum((t * p).sum() for t, p in zip(merged[:2], probe)), leaves)
    for got, want in zip(grads_fused, grads_merged):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # One set (no importance pass) is march_rays itself.
    single = march_sample_sets([coarse], white_back)
    for got, want in zip(single, march_rays(*coarse, white_back)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("importance", [0, 12])
def test_fused_marching_renders_the_reference(importance):
    """render_rays with fused_marching against the reference path (the coarse weights and so the importance
    samples are bitwise the same), float32, within the core tolerance."""
    torch.manual_seed(1)
    weights = torch.randn(6, 9, dtype=torch.float32)

    def field(x, d):
        hidden = torch.cat([x, d], -1) @ weights
        return {"rgb": torch.sigmoid(hidden[..., 1:]), "sigma": hidden[..., :1] * 4}

    settings = RenderingSettings.from_kwargs({**RENDERING, "depth_resolution": 16,
                                              "depth_resolution_importance": importance})
    origins = torch.tensor([0.0, 0.0, 2.7]).expand(2, 300, 3)
    directions = torch.nn.functional.normalize(torch.randn(2, 300, 3) * 0.1 + torch.tensor([0, 0, -1.0]), dim=-1)
    draws = RendererDraws(torch.rand(2, 300, 16, 1), torch.rand(600, importance) if importance else None)
    fast = render_rays(field, origins, directions, settings, draws)
    with fast_paths.configured(fused_marching=False):
        ref = render_rays(field, origins, directions, settings, draws)
    for name, got, want in zip(("features", "depth", "weight sum"), fast, ref):
        assert_matches(name, got, want)


@pytest.mark.parametrize("cls", [OrthoPlanesGenerator, TriPlaneGenerator])
def test_generator_fast_path_matches_reference(cls):
    G = small_generator(cls)
    torch.manual_seed(5)
    z = torch.randn(2, 8)
    c = torch.cat([op3d.cameras.orbit_camera(torch.pi / 2 + 0.3 * i, torch.pi / 2, 2.7) for i in range(2)])
    draws = RendererDraws(torch.rand(2, 64 * 64, 6, 1), torch.rand(2 * 64 * 64, 6))
    with torch.no_grad():
        with fast_paths.reference():
            ref = G(z, c, noise_mode="const", renderer_draws=draws, return_planes=True)
        fast = G(z, c, noise_mode="const", renderer_draws=draws, return_planes=True)
    torch.testing.assert_close(fast["planes"], ref["planes"], rtol=0, atol=2e-5)
    for key in ("image_raw", "image_depth", "image"):  # the core tolerance (an importance bin may flip)
        assert_matches(key, fast[key], ref[key], image=True)


@pytest.mark.parametrize("cls", [OrthoPlanesGenerator, TriPlaneGenerator])
@pytest.mark.parametrize("fast", [True, False])
def test_generator_forward_makes_no_host_sync(cls, fast):
    """Tensors on the meta device have shapes and no values, so reading a value on the host (`.item()`, `bool()`,
    `.cpu()`, shapes that depend on values) raises there. A whole forward (mapping, backbone, lookup, both
    rendering passes, superresolution) that runs on meta therefore never waits for a GPU to finish. (The FIR
    fast path reads each filter's taps once per filter tensor, cached; on meta it takes the plain path.)"""
    G = small_generator(cls).to("meta")
    c = op3d.cameras.orbit_camera(torch.pi / 2, torch.pi / 2, 2.7).to("meta")
    with torch.no_grad(), (fast_paths.configured() if fast else fast_paths.reference()):
        out = G(torch.randn(2, 8, device="meta"), c.repeat(2, 1), noise_mode="const", return_planes=True)
    assert out["image"].device.type == "meta" and out["image"].shape == (2, 3, 128, 128)
    assert out["image_raw"].shape == (2, 3, 64, 64) and out["image_depth"].shape == (2, 1, 64, 64)


@pytest.mark.parametrize("cls,resolution,compat", [(OrthoPlanesGenerator, 32, True), (OrthoPlanesGenerator, 24, False),
                                                   (OrthoPlanesGenerator, 40, True), (TriPlaneGenerator, 32, True)])
def test_shape_grid_fast_path_matches_reference(cls, resolution, compat):
    """The slab path against the per-chunk reference, in float32, within the core tolerance. (40: the official
    float32 grid at a size where y is not constant along grid lines.)"""
    G = small_generator(cls)
    ws = G.mapping(torch.randn(1, 8), torch.zeros(1, 25))
    with fast_paths.reference():
        ref = extract_density(G, ws, resolution, max_batch=5000, compat_grid=compat)
    fast = extract_density(G, ws, resolution, compat_grid=compat)
    assert ref.std() > 0.1
    assert fast.shape == ref.shape and fast.dtype == np.float32 and fast.flags.c_contiguous
    assert_matches("density", fast, ref)


def test_shape_grid_workers_give_the_same_volume():
    """Slabs spread over worker threads (one intra-op thread each) give bitwise the sequential result, and the
    thread setting is restored."""
    G = small_generator(seed=2)
    ws = G.mapping(torch.randn(1, 8), torch.zeros(1, 25))
    threads = torch.get_num_threads()
    one = extract_density(G, ws, 20, workers=1)
    three = extract_density(G, ws, 20, workers=3)
    assert np.array_equal(one, three) and torch.get_num_threads() == threads


@pytest.mark.parametrize("resolution,compat", [(32, True), (24, False), (40, True), (7, True)])
@pytest.mark.parametrize("projection", ["compat", "consistent"])
def test_slab_lookup_is_the_trilinear_lookup(resolution, compat, projection):
    """In float64 the slab lookup equals the reference grid_sample lookup up to 1e-12 on every slab: the same
    function, only the order of the interpolations differs. Planes smaller than the grid, and a box_warp that
    puts grid points outside the planes (zero padding)."""
    torch.manual_seed(resolution)
    planes = torch.randn(1, 4, 3 * 8, 12, 10, dtype=torch.float64)
    tri = planes[:, 0].view(1, 3, 8, 12, 10)
    grid = ShapeGrid(resolution, 1.0, compat)
    for box_warp in (1.0, 0.8):
        ortho_lookup = orthoplanes.orthoplane_slab_lookup(planes, box_warp, projection)
        tri_lookup = triplanes.triplane_slab_lookup(tri, box_warp, projection)
        for k in range(resolution):
            points = grid.slab(k).reshape(-1, 3)
            ref = orthoplanes.sample_orthoplanes(planes, points.unsqueeze(0), box_warp, projection).mean(1)[0]
            torch.testing.assert_close(ortho_lookup(points), ref, rtol=0, atol=1e-12)
            ref = triplanes.sample_triplanes(tri, points.unsqueeze(0), box_warp, projection).mean(1)[0]
            torch.testing.assert_close(tri_lookup(points), ref, rtol=0, atol=1e-12)


def test_slab_lookup_needs_a_slab():
    lookup = orthoplanes.orthoplane_slab_lookup(torch.randn(1, 2, 6, 4, 4), 1.0)
    points = ShapeGrid(4, 1.0).points()
    with pytest.raises(ValueError, match="z is constant"):
        lookup(points)


def test_slab_points_are_the_grid_points():
    for grid in (ShapeGrid(16, 1.0), ShapeGrid(12, 0.8, compat=False), ShapeGrid(20, 1.0)):
        n = grid.resolution
        everything = grid.points().view(n, n, n, 3)  # index [i, j, k]
        for k in (0, 5, n - 1):
            assert torch.equal(grid.slab(k), everything[:, :, k].transpose(0, 1))
