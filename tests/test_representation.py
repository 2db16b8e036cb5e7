"""Tests for op3d.representation: OrthoPlanes / tri-plane feature lookup and the OSG decoder.

Every expectation is derived independently of the code under test: a brute-force interpolator written with explicit
loops over the neighbouring texels (zero padding, align_corners=False), planes whose features encode their own
position (ramps), and a hand-written MLP forward pass.
"""

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from op3d.networks.layers import FullyConnectedLayer
from op3d.representation.decoder import CPU_CHUNK, OSGDecoder
from op3d.representation.orthoplanes import group_coordinates, sample_orthoplanes
from op3d.representation.triplanes import sample_triplanes

# ----------------------------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------------------------


def texel_position(u, n):
    """Normalized coordinate u in [-1, 1] -> continuous texel index, align_corners=False: texel j of n is centred at
    u = (2j + 1)/n - 1, so u = -1 is the left edge of texel 0 (index -0.5) and u = 1 the right edge of the last."""
    return ((u + 1.0) * n - 1.0) / 2.0


def texel_to_normalized(index, n):
    return (2.0 * index + 1.0) / n - 1.0


def ref_interpolate(grid, coords):
    """Multilinear interpolation with zero padding by brute force.

    grid: numpy [C, N_1, ..., N_d] (the last axis is the one addressed by coords[0], like grid_sample's (x, y, z));
    coords: d normalized coordinates ordered (width, height[, depth]) -> [C]."""
    sizes = grid.shape[1:][::-1]  # (W, H[, D]) in the order of coords
    positions = [texel_position(u, n) for u, n in zip(coords, sizes)]
    floors = [math.floor(p) for p in positions]
    out = np.zeros(grid.shape[0], dtype=np.float64)
    for offsets in itertools.product((0, 1), repeat=len(coords)):
        weight = 1.0
        index = []
        inside = True
        for p, f, o, n in zip(positions, floors, offsets, sizes):
            i = f + o
            frac = p - f
            weight *= frac if o else 1.0 - frac
            inside &= 0 <= i < n
            index.append(i)
        if inside and weight != 0.0:
            out += weight * grid[(slice(None),) + tuple(reversed(index))]
    return out


def ref_group_coords(point, group, box_warp, projection):
    """(u_W, u_H, u_D) of a world point in an axis group, written from the layout table of the spec."""
    x, y, z = (float(v) for v in point)
    s = 2.0 / box_warp
    if group == 0:  # XY planes stacked along z
        return (s * x, s * y, s * z)
    t = s if projection == "consistent" else 1.0  # 'compat': groups 1, 2 read raw world coordinates
    if group == 1:  # YZ planes stacked along x
        return (t * y, t * z, t * x)
    return (t * z, t * x, t * y)  # ZX planes stacked along y


def ref_sample_orthoplanes(planes, coords, box_warp, projection):
    planes = planes.detach().double().numpy()
    coords = coords.detach().double().numpy()
    b, k, c3, h, w = planes.shape
    c = c3 // 3
    out = np.zeros((b, 3, coords.shape[1], c))
    for bi in range(b):
        for g in range(3):
            volume = np.transpose(planes[bi, :, g * c:(g + 1) * c], (1, 0, 2, 3))  # [C, K, H, W]
            for m in range(coords.shape[1]):
                out[bi, g, m] = ref_interpolate(volume, ref_group_coords(coords[bi, m], g, box_warp, projection))
    return out


TRIPLANE_PAIRS = {  # world axes read as (grid W, grid H) by planes 0, 1, 2
    "compat": ((0, 1), (0, 2), (2, 0)),
    "consistent": ((0, 1), (1, 2), (2, 0)),
}


def ref_sample_triplanes(planes, coords, box_warp, projection):
    planes = planes.detach().double().numpy()
    coords = coords.detach().double().numpy()
    b, n_planes, c, h, w = planes.shape
    s = 2.0 / box_warp
    out = np.zeros((b, n_planes, coords.shape[1], c))
    for bi in range(b):
        for p, (aw, ah) in enumerate(TRIPLANE_PAIRS[projection]):
            for m in range(coords.shape[1]):
                uv = (s * coords[bi, m, aw], s * coords[bi, m, ah])
                out[bi, p, m] = ref_interpolate(planes[bi, p], uv)
    return out


def test_ref_interpolate_sanity():
    """The reference itself: texel centres return the texel, borders fade to half, outside is zero."""
    grid = np.arange(12, dtype=np.float64).reshape(1, 3, 4)  # H=3, W=4
    for i, j in itertools.product(range(3), range(4)):
        u = (texel_to_normalized(j, 4), texel_to_normalized(i, 3))
        assert ref_interpolate(grid, u)[0] == pytest.approx(grid[0, i, j])
    assert ref_interpolate(grid, (1.0, texel_to_normalized(1, 3)))[0] == pytest.approx(0.5 * grid[0, 1, 3])
    assert ref_interpolate(grid, (1.6, 0.0))[0] == 0.0
    mid = (texel_to_normalized(0.5, 4), texel_to_normalized(0, 3))
    assert ref_interpolate(grid, mid)[0] == pytest.approx(0.5)


def random_points(generator, batch, n, extent):
    return (torch.rand(batch, n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * extent


def border_points(box_warp):
    """World points on and beyond the box border (for every projection some group sees them at/over its edge)."""
    h = box_warp / 2
    pts = [
        (h, -h, h), (-h, h, -h), (h, 0.0, 0.0), (0.0, -h, 0.1), (0.05, 0.1, h),
        (0.5, 0.5, -0.5), (1.0, 0.2, -0.3), (-1.0, -1.0, 1.0), (3.0, 0.0, 0.0), (0.0, 0.0, -2.0),
        (0.999 * h, -0.999 * h, 0.0), (1.02 * h, 0.3 * h, -1.02 * h),
    ]
    return torch.tensor(pts, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------------------
# OrthoPlanes
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("projection", ["compat", "consistent"])
@pytest.mark.parametrize("box_warp", [1.0, 1.6])
def test_group_coordinates_layout(projection, box_warp):
    gen = torch.Generator().manual_seed(1)
    coords = random_points(gen, 2, 7, 1.2)
    got = group_coordinates(coords, box_warp, projection)
    assert got.shape == (2, 3, 7, 3)
    for b, g, m in itertools.product(range(2), range(3), range(7)):
        expected = ref_group_coords(coords[b, m], g, box_warp, projection)
        np.testing.assert_allclose(got[b, g, m].numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("projection", ["compat", "consistent"])
@pytest.mark.parametrize("box_warp", [1.0, 1.6])
def test_sample_orthoplanes_matches_brute_force(projection, box_warp):
    gen = torch.Generator().manual_seed(2)
    b, k, c, h, w = 2, 3, 2, 4, 5
    planes = torch.randn(b, k, 3 * c, h, w, generator=gen, dtype=torch.float64)
    coords = random_points(gen, b, 20, 0.7 * box_warp)
    coords = torch.cat([coords, border_points(box_warp).unsqueeze(0).expand(b, -1, -1)], dim=1)
    got = sample_orthoplanes(planes, coords, box_warp, projection)
    assert got.shape == (b, 3, coords.shape[1], c)
    expected = ref_sample_orthoplanes(planes, coords, box_warp, projection)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)
    # The random points must really exercise the zero padding (some reference values are partially faded or zero).
    assert (np.abs(expected) < 1e-12).any()


def test_sample_orthoplanes_float32():
    gen = torch.Generator().manual_seed(3)
    planes = torch.randn(1, 4, 3 * 3, 6, 5, generator=gen)
    coords = random_points(gen, 1, 15, 0.6).float()
    got = sample_orthoplanes(planes, coords, 1.0, "compat")
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref_sample_orthoplanes(planes, coords, 1.0, "compat"), atol=1e-5)


def test_sample_orthoplanes_channel_layout():
    """Channel g*C + f of plane k is feature f of group g: a plane set that is non-zero only in one channel must
    only produce that (group, feature)."""
    b, k, c, h, w = 1, 3, 4, 5, 5
    coords = torch.zeros(1, 1, 3, dtype=torch.float64)  # centre: inside every group for every projection
    for g, f in [(0, 0), (1, 2), (2, 3), (2, 0)]:
        planes = torch.zeros(b, k, 3 * c, h, w, dtype=torch.float64)
        planes[:, :, g * c + f] = 1.0
        out = sample_orthoplanes(planes, coords, 1.0, "compat")[0, :, 0]  # [3, C]
        expected = torch.zeros(3, c, dtype=torch.float64)
        expected[g, f] = 1.0
        torch.testing.assert_close(out, expected)


def ramp_orthoplanes(k, h, w):
    """Feature 0 = plane index, feature 1 = column index, feature 2 = row index, identical for the 3 groups."""
    c = 3
    planes = torch.zeros(1, k, 3 * c, h, w, dtype=torch.float64)
    kk = torch.arange(k, dtype=torch.float64).view(k, 1, 1)
    hh = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    ww = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    for g in range(3):
        planes[0, :, g * c + 0] = kk.expand(k, h, w)
        planes[0, :, g * c + 1] = ww.expand(k, h, w)
        planes[0, :, g * c + 2] = hh.expand(k, h, w)
    return planes


@pytest.mark.parametrize("projection", ["compat", "consistent"])
@pytest.mark.parametrize("box_warp", [1.0, 1.6])
def test_orthoplanes_geometric_meaning(projection, box_warp):
    """Decode the (u_W, u_H, u_D) each group sees from ramp planes (exact for linear interpolation in the interior):
    group 0 = XY planes stacked along z, group 1 = YZ planes stacked along x, group 2 = ZX planes stacked along y."""
    k, h, w = 4, 6, 8
    planes = ramp_orthoplanes(k, h, w)
    gen = torch.Generator().manual_seed(4)
    # Interior: all normalized coordinates within the outermost texel / plane centres (|u| <= 1 - 1/4).
    coords = random_points(gen, 1, 25, 0.37 * box_warp)  # group 0 (always scaled) then has |u| <= 0.74
    out = sample_orthoplanes(planes, coords, box_warp, projection)[0]  # [3, M, 3]
    u_d = texel_to_normalized(out[..., 0], k)
    u_w = texel_to_normalized(out[..., 1], w)
    u_h = texel_to_normalized(out[..., 2], h)
    x, y, z = coords[0, :, 0], coords[0, :, 1], coords[0, :, 2]
    s = 2 / box_warp
    t = s if projection == "consistent" else 1.0
    expected = {0: (s * x, s * y, s * z), 1: (t * y, t * z, t * x), 2: (t * z, t * x, t * y)}
    for g in range(3):
        assert (torch.stack([u_w[g], u_h[g], u_d[g]]).abs() <= 0.75 + 1e-12).all(), "test points must be interior"
        for got, exp in zip((u_w[g], u_h[g], u_d[g]), expected[g]):
            torch.testing.assert_close(got, exp, rtol=0, atol=1e-10)


@pytest.mark.parametrize("projection", ["compat", "consistent"])
def test_orthoplanes_stack_axis_per_group(projection):
    """Moving a point along z changes only group 0's plane-stack coordinate, along x only group 1's, along y only
    group 2's; the change matches the plane spacing."""
    k = 5
    planes = ramp_orthoplanes(k, 6, 6)
    base = torch.tensor([[[0.05, -0.08, 0.1]]], dtype=torch.float64)
    stack_index = lambda p: sample_orthoplanes(planes, p, 1.0, projection)[0, :, 0, 0]  # noqa: E731
    ref = stack_index(base)
    step = 0.1
    for axis, group in [(2, 0), (0, 1), (1, 2)]:
        moved = base.clone()
        moved[0, 0, axis] += step
        delta = stack_index(moved) - ref
        scale = 2.0 if (group == 0 or projection == "consistent") else 1.0  # normalized units per world unit
        expected = torch.zeros(3, dtype=torch.float64)
        expected[group] = step * scale * k / 2  # d(index)/du = K/2
        torch.testing.assert_close(delta, expected, rtol=0, atol=1e-10)


def test_orthoplanes_compat_border_quirk():
    """box_warp = 1, world x = 0.5: 'compat' puts it on group 0's border (half faded by zero padding) but at
    normalized 0.5, well inside, for groups 1 and 2; 'consistent' puts it on the border of all three groups."""
    planes = torch.ones(1, 4, 3 * 2, 6, 6, dtype=torch.float64)
    point = torch.tensor([[[0.5, 0.0, 0.0]]], dtype=torch.float64)
    grid = group_coordinates(point, 1.0, "compat")[0, :, 0]
    assert grid[0, 0].item() == pytest.approx(1.0)  # group 0 u_W = 2 * 0.5
    assert grid[1, 2].item() == pytest.approx(0.5)  # group 1 reads x as its stack coordinate, unscaled
    assert grid[2, 1].item() == pytest.approx(0.5)  # group 2 reads x as its row coordinate, unscaled
    compat = sample_orthoplanes(planes, point, 1.0, "compat")[0, :, 0]
    torch.testing.assert_close(compat, torch.tensor([[0.5] * 2, [1.0] * 2, [1.0] * 2], dtype=torch.float64))
    consistent = sample_orthoplanes(planes, point, 1.0, "consistent")[0, :, 0]
    torch.testing.assert_close(consistent, torch.full((3, 2), 0.5, dtype=torch.float64))
    # Under 'compat' the groups 1/2 only reach their border at world |x| = 1, outside the render box.
    far = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)
    compat_far = sample_orthoplanes(planes, far, 1.0, "compat")[0, :, 0]
    torch.testing.assert_close(compat_far, torch.tensor([[0.0] * 2, [0.5] * 2, [0.5] * 2], dtype=torch.float64))


def test_orthoplanes_plane_positions():
    """Plane k of K sits at normalized (2k+1)/K - 1: a point there reads exactly plane k."""
    k = 4
    gen = torch.Generator().manual_seed(5)
    planes = torch.randn(1, k, 3, 3, 3, generator=gen, dtype=torch.float64)  # C = 1
    for plane in range(k):
        z = texel_to_normalized(plane, k) / 2  # box_warp = 1: group 0 scales by 2
        point = torch.tensor([[[0.0, 0.0, z]]], dtype=torch.float64)
        got = sample_orthoplanes(planes, point, 1.0, "compat")[0, 0, 0, 0]
        assert got.item() == pytest.approx(planes[0, plane, 0, 1, 1].item(), abs=1e-12)


@pytest.mark.parametrize("fn", ["group_coordinates", "sample_orthoplanes"])
def test_orthoplanes_invalid_projection(fn):
    coords = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError):
        if fn == "group_coordinates":
            group_coordinates(coords, 1.0, "eg3d")
        else:
            sample_orthoplanes(torch.zeros(1, 2, 6, 4, 4), coords, 1.0, "bogus")


# ----------------------------------------------------------------------------------------------------------------
# Tri-planes
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("projection", ["compat", "consistent"])
@pytest.mark.parametrize("box_warp", [1.0, 1.6])
def test_sample_triplanes_matches_brute_force(projection, box_warp):
    gen = torch.Generator().manual_seed(6)
    b, c, h, w = 2, 3, 5, 4
    planes = torch.randn(b, 3, c, h, w, generator=gen, dtype=torch.float64)
    coords = random_points(gen, b, 20, 0.65 * box_warp)
    coords = torch.cat([coords, border_points(box_warp).unsqueeze(0).expand(b, -1, -1)], dim=1)
    got = sample_triplanes(planes, coords, box_warp, projection)
    assert got.shape == (b, 3, coords.shape[1], c)
    expected = ref_sample_triplanes(planes, coords, box_warp, projection)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)
    assert (np.abs(expected) < 1e-12).any()


def ramp_triplanes(h, w):
    """Feature 0 = column index, feature 1 = row index on each of the 3 planes."""
    planes = torch.zeros(1, 3, 2, h, w, dtype=torch.float64)
    planes[0, :, 0] = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    planes[0, :, 1] = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    return planes


def decoded_triplane_uv(planes, coords, box_warp, projection):
    h, w = planes.shape[-2:]
    out = sample_triplanes(planes, coords, box_warp, projection)[0]  # [3, M, 2]
    return torch.stack([texel_to_normalized(out[..., 0], w), texel_to_normalized(out[..., 1], h)], -1)


@pytest.mark.parametrize("projection", ["compat", "consistent"])
def test_triplanes_axes(projection):
    planes = ramp_triplanes(8, 10)
    coords = torch.tensor([[[0.1, -0.2, 0.3], [-0.25, 0.15, -0.05]]], dtype=torch.float64)
    uv = decoded_triplane_uv(planes, coords, 1.6, projection)  # [3, M, 2]
    s = 2 / 1.6
    x, y, z = (s * coords[0, :, i] for i in range(3))
    if projection == "compat":
        expected = [(x, y), (x, z), (z, x)]  # EG3D: no plane sees (y, z)
    else:
        expected = [(x, y), (y, z), (z, x)]
    for p in range(3):
        torch.testing.assert_close(uv[p], torch.stack(expected[p], -1), rtol=0, atol=1e-10)


def test_triplanes_compat_axes_match_eg3d_fixture(fixture_file):
    """The official EG3D projection (coords @ inverse(plane_axes[i]), first two components), recorded in the
    fixture, is what sample_triplanes(..., 'compat') reads (decoded back from ramp planes)."""
    data = np.load(fixture_file("eg3d/eg3d_ffhq/io.npz"))
    axes = data["plane_axes"].astype(np.float64)  # [3, 3, 3]
    probe = data["projection_probe_coords"].astype(np.float64)  # [1, 4, 3]
    probe_uv = data["projection_probe_uv"].astype(np.float64)  # [3, 4, 2]
    # Fixture self-consistency: the recorded uv is the EG3D projection of the probe coordinates.
    for p in range(3):
        np.testing.assert_allclose(probe[0] @ np.linalg.inv(axes[p])[:, :2], probe_uv[p], atol=1e-6)
    box_warp = 1.6
    world = torch.from_numpy(probe * box_warp / 2)  # so that 2 / box_warp * world = the probe coordinates
    planes = ramp_triplanes(12, 16)
    uv = decoded_triplane_uv(planes, world, box_warp, "compat")
    np.testing.assert_allclose(uv.numpy(), probe_uv, rtol=0, atol=1e-6)
    # ... and the 'consistent' projection differs from it (plane 1 reads (y, z) instead of (x, z)).
    uv_consistent = decoded_triplane_uv(planes, world, box_warp, "consistent")
    assert not np.allclose(uv_consistent[1].numpy(), probe_uv[1], atol=1e-3)


def test_triplanes_invalid_projection():
    with pytest.raises(ValueError):
        sample_triplanes(torch.zeros(1, 3, 2, 4, 4), torch.zeros(1, 2, 3), 1.0, "orthoplanes")


# ----------------------------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------------------------


def fc_layers(decoder):
    return [m for m in decoder.modules() if isinstance(m, FullyConnectedLayer)]


def ref_decoder(decoder, features):
    """Hand-written forward: mean over groups, equalized FCs (w * lr / sqrt(fan_in), b * lr), softplus between,
    sigma = raw channel 0, rgb = sigmoid(rest) * 1.002 - 0.001."""
    x = features.double().mean(1)
    layers = fc_layers(decoder)
    for i, fc in enumerate(layers):
        lr = fc.bias_gain
        weight = fc.weight.detach().double() * lr / math.sqrt(fc.in_features)
        x = x @ weight.t() + fc.bias.detach().double() * lr
        if i < len(layers) - 1:
            x = torch.log1p(torch.exp(x))
    return x[..., :1], torch.sigmoid(x[..., 1:]) * 1.002 - 0.001


@pytest.mark.parametrize("n_hidden_layers,lr_mul", [(1, 1.0), (3, 0.5)])
def test_decoder_matches_hand_written_forward(n_hidden_layers, lr_mul):
    torch.manual_seed(0)
    decoder = OSGDecoder(n_features=8, hidden_dim=16, decoder_output_dim=5, decoder_lr_mul=lr_mul,
                         n_hidden_layers=n_hidden_layers)
    with torch.no_grad():
        for fc in fc_layers(decoder):
            fc.bias.normal_()
    features = torch.randn(2, 3, 7, 8)
    out = decoder(features, torch.randn(2, 7, 3))
    assert out["sigma"].shape == (2, 7, 1)
    assert out["rgb"].shape == (2, 7, 5)
    sigma, rgb = ref_decoder(decoder, features)
    torch.testing.assert_close(out["sigma"].double(), sigma, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["rgb"].double(), rgb, rtol=1e-5, atol=1e-5)


def test_decoder_default_shapes_and_layers():
    decoder = OSGDecoder()
    out = decoder(torch.randn(2, 3, 11, 32))
    assert out["sigma"].shape == (2, 11, 1)
    assert out["rgb"].shape == (2, 11, 32)
    assert [(fc.in_features, fc.out_features) for fc in fc_layers(decoder)] == [(32, 64), (64, 33)]
    deep = OSGDecoder(n_hidden_layers=3)
    assert [(fc.in_features, fc.out_features) for fc in fc_layers(deep)] == [(32, 64), (64, 64), (64, 64), (64, 33)]
    assert sum(isinstance(m, torch.nn.Softplus) for m in deep.modules()) == 3


def test_decoder_sigma_raw_and_rgb_range():
    decoder = OSGDecoder(n_features=4, hidden_dim=8, decoder_output_dim=3)
    last = fc_layers(decoder)[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-5.0, 1000.0, -1000.0, 0.0]))
    out = decoder(torch.randn(1, 3, 4, 4))
    torch.testing.assert_close(out["sigma"], torch.full((1, 4, 1), -5.0))  # no activation on sigma
    # Widened sigmoid: saturates at exactly 1.001 / -0.001, and is 0.5 at 0.
    torch.testing.assert_close(out["rgb"], torch.tensor([1.001, -0.001, 0.5]).expand(1, 4, 3))

    torch.manual_seed(1)
    decoder = OSGDecoder(n_features=4, hidden_dim=8, decoder_output_dim=3)
    out = decoder(torch.randn(1, 3, 200, 4) * 3)
    assert (out["sigma"] < 0).any() and (out["sigma"] > 0).any()
    assert (out["rgb"] > -0.001).all() and (out["rgb"] < 1.001).all()


def test_decoder_density_only_is_the_density_output():
    """OSGDecoder.sigma (shape extraction) is decode_mean's density, in chunks that do not divide the rows, with
    one or several hidden layers, and with large pre-activations (softplus' linear branch)."""
    torch.manual_seed(3)
    for hidden_layers in (1, 2):
        decoder = OSGDecoder(n_features=6, hidden_dim=12, decoder_output_dim=4, n_hidden_layers=hidden_layers)
        features = torch.randn(2, 37, 6) * 10
        expected = decoder.decode_mean(features)["sigma"]
        for chunk in (5, 37, 74, 1000, None):  # None: the device's default (CPU_CHUNK here)
            torch.testing.assert_close(decoder.sigma(features, chunk=chunk), expected, rtol=1e-6, atol=1e-6)


def test_decoder_density_only_takes_all_rows_at_once_off_the_cpu(monkeypatch):
    """The default chunk of OSGDecoder.sigma is CPU_CHUNK rows on the CPU only; on another device (meta here) all
    rows go through each layer at once (one matrix product per hidden layer)."""
    decoder = OSGDecoder(n_features=6, hidden_dim=12, decoder_output_dim=4, n_hidden_layers=2)
    calls = []
    addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *args, **kwargs: calls.append(1) or addmm(*args, **kwargs))
    rows = 3 * CPU_CHUNK + 1
    on_meta = copy.deepcopy(decoder).to("meta")
    assert on_meta.sigma(torch.zeros(1, rows, 6, device="meta")).shape == (1, rows, 1)
    assert len(calls) == 2
    decoder.sigma(torch.zeros(1, rows, 6))
    assert len(calls) == 2 + 2 * 4


def test_decoder_group_permutation_invariance():
    torch.manual_seed(2)
    decoder = OSGDecoder(n_features=6, hidden_dim=12, decoder_output_dim=4)
    features = torch.randn(2, 3, 9, 6)
    out = decoder(features)
    for perm in ([1, 2, 0], [2, 1, 0]):
        permuted = decoder(features[:, perm])
        torch.testing.assert_close(permuted["sigma"], out["sigma"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(permuted["rgb"], out["rgb"], rtol=1e-5, atol=1e-6)
    # ... but it is not invariant to changing one group's features (it really reads them).
    changed = features.clone()
    changed[:, 1] += 1.0
    assert not torch.allclose(decoder(changed)["sigma"], out["sigma"])
