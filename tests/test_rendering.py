"""Tests for op3d.rendering: camera rays, depth sampling, ray marching, the renderer and its settings.

Expectations come from hand-written formulas (pinhole model, slab geometry, explicit compositing loops,
brute-force inverse-CDF sampling) and from analytic scenes, never from running the code under test.
"""

import math

import numpy as np
import pytest
import torch

from op3d.rendering.depth_sampling import (
    auto_ray_limits,
    importance_depths,
    ray_box_limits,
    sample_pdf,
    stratified_depths,
)
from op3d.rendering.ray_marcher import march_rays
from op3d.rendering.rays import sample_rays
from op3d.rendering.renderer import RendererDraws, evaluate_field, merge_samples, render_rays
from op3d.rendering.settings import RenderingKwargsView, RenderingSettings


def intrinsics_matrix(fx, fy, cx, cy, sk=0.0):
    return torch.tensor([[fx, sk, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def random_rotation(seed):
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


# ----------------------------------------------------------------------------------------------------------------
# Rays
# ----------------------------------------------------------------------------------------------------------------


def expected_camera_dirs(res, fx, fy, cx, cy):
    dirs = []
    for i in range(res):  # row
        for j in range(res):  # column
            d = np.array([((j + 0.5) / res - cx) / fx, ((i + 0.5) / res - cy) / fy, 1.0])
            dirs.append(d / np.linalg.norm(d))
    return torch.tensor(np.array(dirs), dtype=torch.float32)


def test_sample_rays_identity_camera():
    res, fx, fy, cx, cy = 4, 1.2, 0.9, 0.5, 0.45
    origins, dirs = sample_rays(torch.eye(4).unsqueeze(0), intrinsics_matrix(fx, fy, cx, cy).unsqueeze(0), res)
    assert origins.shape == (1, res * res, 3) and dirs.shape == (1, res * res, 3)
    torch.testing.assert_close(origins, torch.zeros(1, res * res, 3))
    torch.testing.assert_close(dirs[0], expected_camera_dirs(res, fx, fy, cx, cy), rtol=0, atol=1e-6)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(1, res * res))
    # OpenCV: first row looks up (-y), first column looks left (-x), all rays forward (+z).
    grid = dirs[0].reshape(res, res, 3)
    assert (grid[0, :, 1] < 0).all() and (grid[-1, :, 1] > 0).all()
    assert (grid[:, 0, 0] < 0).all() and (grid[:, -1, 0] > 0).all()
    assert (grid[..., 2] > 0).all()


def test_sample_rays_translation_and_rotation():
    res, fx, fy, cx, cy = 3, 1.0, 1.1, 0.55, 0.5
    rot = random_rotation(7)
    translation = torch.tensor([0.3, -1.2, 2.5])
    cam2world = torch.eye(4).repeat(3, 1, 1)
    cam2world[1, :3, 3] = translation
    cam2world[2, :3, :3] = rot
    cam2world[2, :3, 3] = translation
    intr = intrinsics_matrix(fx, fy, cx, cy).repeat(3, 1, 1)
    origins, dirs = sample_rays(cam2world, intr, res)
    cam_dirs = expected_camera_dirs(res, fx, fy, cx, cy)
    torch.testing.assert_close(origins[0], torch.zeros(res * res, 3))
    torch.testing.assert_close(origins[1], translation.expand(res * res, 3))
    torch.testing.assert_close(origins[2], translation.expand(res * res, 3))
    torch.testing.assert_close(dirs[1], cam_dirs, rtol=0, atol=1e-6)  # translation does not turn rays
    torch.testing.assert_close(dirs[2], cam_dirs @ rot.t(), rtol=0, atol=1e-5)  # rotation turns them by R


def test_sample_rays_skew_inverts_intrinsics():
    res = 3
    K = intrinsics_matrix(1.1, 0.8, 0.4, 0.6, sk=0.15)
    _, dirs = sample_rays(torch.eye(4).unsqueeze(0), K.unsqueeze(0), res)
    for i in range(res):
        for j in range(res):
            pixel = torch.tensor([(j + 0.5) / res, (i + 0.5) / res, 1.0], dtype=torch.float64)
            d = torch.linalg.solve(K.double(), pixel)  # the camera-space point at depth 1 projecting to the pixel
            torch.testing.assert_close(dirs[0, i * res + j].double(), d / d.norm(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Ray / box limits
# ----------------------------------------------------------------------------------------------------------------

S3 = math.sqrt(3.0)
S2 = math.sqrt(2.0)
BOX_CASES = [
    # origin, direction (normalized in the test), box side, expected near, expected far
    ((0, 0, -2), (0, 0, 1), 1.0, 1.5, 2.5),  # axis-aligned, head-on
    ((0, 0, 2), (0, 0, -1), 1.0, 1.5, 2.5),
    ((0.2, -0.1, 3), (0, 0, -1), 1.0, 2.5, 3.5),  # off-centre, parallel to z
    ((-2, 0.3, 0.1), (1, 0, 0), 1.0, 1.5, 2.5),
    ((0, -4, 0), (0, 1, 0), 2.0, 3.0, 5.0),  # box side 2
    ((-1, -1, -1), (1, 1, 1), 1.0, 0.5 * S3, 1.5 * S3),  # diagonal through corners
    ((-1, 0, -1), (1, 0, 1), 1.0, 0.5 * S2, 1.5 * S2),  # diagonal in the xz plane
    ((0, 0, 0), (0, 0, 1), 1.0, -0.5, 0.5),  # starting inside: entry behind the origin
    ((0.1, 0.2, 0.3), (1, 0, 0), 1.0, -0.6, 0.4),
    ((0, 0, 2), (0, 0, 1), 1.0, -2.5, -1.5),  # box behind the origin: the slab test intersects the whole line
    ((1, 0, -2), (0, 0, 1), 1.0, -1.0, -2.0),  # miss, parallel to z beside the box
    ((0, 0, -2), (1, 0, 1), 1.0, -1.0, -2.0),  # miss, diagonal (x slab and z slab intervals disjoint)
    ((0, 2, 0), (1, 0, 0), 1.0, -1.0, -2.0),  # miss, parallel to x above the box
]


def test_ray_box_limits_analytic():
    origins = torch.tensor([c[0] for c in BOX_CASES], dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.tensor([c[1] for c in BOX_CASES], dtype=torch.float64), dim=-1)
    for i, (_, _, side, near_exp, far_exp) in enumerate(BOX_CASES):
        near, far = ray_box_limits(origins[i:i + 1], dirs[i:i + 1], side)
        assert near.shape == (1, 1) and far.shape == (1, 1)
        assert near.item() == pytest.approx(near_exp, abs=1e-9), BOX_CASES[i]
        assert far.item() == pytest.approx(far_exp, abs=1e-9), BOX_CASES[i]


def test_ray_box_limits_shapes_batched():
    origins = torch.tensor([[c[0] for c in BOX_CASES[:4]]] * 2, dtype=torch.float64)  # [2, 4, 3]
    dirs = torch.tensor([[c[1] for c in BOX_CASES[:4]]] * 2, dtype=torch.float64)
    near, far = ray_box_limits(origins, dirs, 1.0)
    assert near.shape == (2, 4, 1) and far.shape == (2, 4, 1)
    torch.testing.assert_close(near[..., 0], torch.tensor([[1.5, 1.5, 2.5, 1.5]] * 2, dtype=torch.float64))


def test_ray_box_limits_brute_force():
    """Random rays: compare with a dense scan of the line for points inside the cube."""
    gen = torch.Generator().manual_seed(11)
    n, side = 64, 1.2
    origins = (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 2 - 1) * 2.0
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64), dim=-1)
    near, far = ray_box_limits(origins, dirs, side)
    t = torch.linspace(-6, 6, 24001, dtype=torch.float64)
    step = (t[1] - t[0]).item()
    points = origins[:, None] + t[None, :, None] * dirs[:, None]
    inside = (points.abs() <= side / 2).all(-1)  # [n, T]
    n_hits = 0
    for i in range(n):
        ts = t[inside[i]]
        if len(ts) == 0:
            is_miss = near[i].item() == -1 and far[i].item() == -2
            assert is_miss or far[i].item() - near[i].item() < 2 * step  # grazing chord shorter than the scan step
        else:
            n_hits += 1
            assert abs(ts.min().item() - near[i].item()) <= step
            assert abs(ts.max().item() - far[i].item()) <= step
    assert 0 < n_hits < n


def test_auto_ray_limits_rule():
    origins = torch.tensor([[[0, 0, -2], [1, 0, -2], [0.2, 0.1, -3], [0, 2, 0], [0, 0, 0]]], dtype=torch.float64)
    dirs = torch.tensor([[[0, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 1]]], dtype=torch.float64)
    near, far = auto_ray_limits(origins, dirs, 1.0)
    # Hits keep their limits; misses (rays 1 and 3) get near = min(valid nears), far = max(valid *nears*).
    valid_nears = [1.5, 2.5, -0.5]
    expected_near = [1.5, min(valid_nears), 2.5, min(valid_nears), -0.5]
    expected_far = [2.5, max(valid_nears), 3.5, max(valid_nears), 0.5]
    torch.testing.assert_close(near[0, :, 0], torch.tensor(expected_near, dtype=torch.float64))
    torch.testing.assert_close(far[0, :, 0], torch.tensor(expected_far, dtype=torch.float64))


def test_auto_ray_limits_all_miss():
    origins = torch.tensor([[[3.0, 0, 0], [0, 3.0, 0]]], dtype=torch.float64)
    dirs = torch.tensor([[[0, 0, 1.0], [0, 0, 1.0]]], dtype=torch.float64)
    near, far = auto_ray_limits(origins, dirs, 1.0)
    torch.testing.assert_close(near, torch.full((1, 2, 1), -1.0, dtype=torch.float64))
    torch.testing.assert_close(far, torch.full((1, 2, 1), -2.0, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------------
# Stratified depths
# ----------------------------------------------------------------------------------------------------------------


def test_stratified_depths_linspace_without_jitter():
    b, m, s, start, end = 2, 3, 5, 2.25, 3.3
    depths = stratified_depths(b, m, start, end, s, "cpu", jitter=torch.zeros(b, m, s, 1))
    assert depths.shape == (b, m, s, 1)
    expected = torch.tensor([start + i * (end - start) / (s - 1) for i in range(s)])
    torch.testing.assert_close(depths, expected.view(1, 1, s, 1).expand(b, m, s, 1))


def test_stratified_depths_jitter_bounds():
    b, m, s, start, end = 2, 4, 6, 1.0, 2.0
    spacing = (end - start) / (s - 1)
    gen = torch.Generator().manual_seed(3)
    jitter = torch.rand(b, m, s, 1, generator=gen)
    jitter[0, 0] = 0.0
    jitter[0, 1] = 0.9999
    depths = stratified_depths(b, m, start, end, s, "cpu", jitter=jitter)
    base = torch.tensor([start + i * spacing for i in range(s)]).view(1, 1, s, 1)
    torch.testing.assert_close(depths, base + jitter * spacing)
    assert (depths >= start - 1e-6).all() and (depths < end + spacing).all()
    # Sample i stays in its own stratum [start + i*spacing, start + (i+1)*spacing).
    assert (depths >= base - 1e-6).all() and (depths < base + spacing + 1e-6).all()


def test_stratified_depths_per_ray_limits():
    b, m, s = 2, 3, 4
    gen = torch.Generator().manual_seed(4)
    start = 1 + torch.rand(b, m, 1, generator=gen)
    end = start + 0.5 + torch.rand(b, m, 1, generator=gen)
    depths = stratified_depths(b, m, start, end, s, "cpu", jitter=torch.zeros(b, m, s, 1))
    assert depths.shape == (b, m, s, 1)
    for bi in range(b):
        for mi in range(m):
            a, e = start[bi, mi, 0].item(), end[bi, mi, 0].item()
            expected = torch.tensor([a + i * (e - a) / (s - 1) for i in range(s)])
            torch.testing.assert_close(depths[bi, mi, :, 0], expected)
    half = stratified_depths(b, m, start, end, s, "cpu", jitter=torch.full((b, m, s, 1), 0.5))
    torch.testing.assert_close(half - depths, ((end - start) / (s - 1) / 2).unsqueeze(2).expand(b, m, s, 1))


@pytest.mark.parametrize("limits", ["float", "tensor"])
def test_stratified_depths_rng_single_draw(limits):
    b, m, s = 2, 3, 5
    if limits == "float":
        start, end = 2.0, 3.0
    else:
        start, end = torch.full((b, m, 1), 2.0), torch.full((b, m, 1), 3.0)
    torch.manual_seed(123)
    drawn = stratified_depths(b, m, start, end, s, "cpu")
    after = torch.rand(4)
    torch.manual_seed(123)
    if limits == "float":
        jitter = torch.rand(b, m, s, 1)
    else:
        # Officially the per-ray linspace is built sample-major ([S, B, M, 1]) and permuted to [B, M, S, 1];
        # rand_like fills that tensor in memory order, i.e. the draw is [S, B, M, 1] seen through the permute.
        jitter = torch.rand(s, b, m, 1).permute(1, 2, 0, 3)
    after_expected = torch.rand(4)
    torch.testing.assert_close(drawn, stratified_depths(b, m, start, end, s, "cpu", jitter=jitter))
    torch.testing.assert_close(after, after_expected)  # exactly one draw of that shape was consumed


def test_stratified_depths_disparity_space():
    b, m, s, start, end = 1, 2, 5, 1.0, 4.0
    depths = stratified_depths(b, m, start, end, s, "cpu", disparity_space=True, jitter=torch.zeros(b, m, s, 1))
    inv = [1 / start + i / (s - 1) * (1 / end - 1 / start) for i in range(s)]
    expected = torch.tensor([1 / v for v in inv]).view(1, 1, s, 1).expand(b, m, s, 1)
    torch.testing.assert_close(depths, expected)
    torch.manual_seed(5)
    drawn = stratified_depths(b, m, start, end, s, "cpu", disparity_space=True)
    torch.manual_seed(5)
    jitter = torch.rand(b, m, s, 1)
    torch.testing.assert_close(drawn, stratified_depths(b, m, start, end, s, "cpu", True, jitter=jitter))


# ----------------------------------------------------------------------------------------------------------------
# Inverse-CDF sampling
# ----------------------------------------------------------------------------------------------------------------


def ref_inverse_cdf(edges, weights, u, eps=1e-5):
    """Piecewise-linear inverse CDF: weights[i] (+eps) is the mass of [edges[i], edges[i+1]]."""
    w = np.asarray(weights, dtype=np.float64) + eps
    cdf = np.concatenate([[0.0], np.cumsum(w / w.sum())])
    out = []
    for x in u:
        i = 0
        while i < len(w) - 1 and x >= cdf[i + 1]:
            i += 1
        width = cdf[i + 1] - cdf[i]
        frac = (x - cdf[i]) / width if width >= eps else 0.0
        out.append(edges[i] + frac * (edges[i + 1] - edges[i]))
    return np.array(out)


def test_sample_pdf_matches_reference():
    gen = torch.Generator().manual_seed(8)
    r, n_bins, n = 3, 6, 40
    bins = torch.cumsum(torch.rand(r, n_bins + 1, generator=gen, dtype=torch.float64) + 0.1, -1)
    weights = torch.rand(r, n_bins, generator=gen, dtype=torch.float64)
    weights[1, 2] = 0.0  # an empty bin
    u = torch.rand(r, n, generator=gen, dtype=torch.float64)
    samples = sample_pdf(bins, weights, n, u)
    assert samples.shape == (r, n)
    for i in range(r):
        expected = ref_inverse_cdf(bins[i].numpy(), weights[i].numpy(), u[i].numpy())
        np.testing.assert_allclose(samples[i].numpy(), expected, rtol=0, atol=1e-9)


def test_sample_pdf_uniform_is_linear():
    r, n_bins, n = 2, 5, 9
    bins = torch.linspace(1.0, 2.0, n_bins + 1).expand(r, -1).contiguous()
    u = torch.linspace(0, 0.999, n).expand(r, -1).contiguous()
    samples = sample_pdf(bins, torch.ones(r, n_bins), n, u)
    torch.testing.assert_close(samples, 1.0 + u, rtol=0, atol=1e-5)


def test_sample_pdf_monotone_range_and_rng():
    gen = torch.Generator().manual_seed(9)
    r, n_bins, n = 4, 7, 50
    bins = torch.cumsum(torch.rand(r, n_bins + 1, generator=gen) + 0.05, -1)
    weights = torch.rand(r, n_bins, generator=gen) ** 4
    u = torch.linspace(0, 0.9999, n).expand(r, -1).contiguous()
    samples = sample_pdf(bins, weights, n, u)
    assert (samples[:, 1:] >= samples[:, :-1] - 1e-6).all()
    assert (samples >= bins[:, :1] - 1e-6).all() and (samples <= bins[:, -1:] + 1e-6).all()
    torch.manual_seed(77)
    drawn = sample_pdf(bins, weights, n)
    after = torch.rand(3)
    torch.manual_seed(77)
    u = torch.rand(r, n)
    after_expected = torch.rand(3)
    torch.testing.assert_close(drawn, sample_pdf(bins, weights, n, u))
    torch.testing.assert_close(after, after_expected)


def ref_importance(depths, weights, u):
    """The spec's importance step for one ray: max-pool (k2, s1, pad 1) -> avg-pool (k2, s1) -> + 0.01, inverse CDF
    over the coarse midpoints with the pooled weights[1:-1] (the midpoints beyond the pdf's last edge are unused)."""
    w = list(weights)
    padded = [-np.inf] + w + [-np.inf]
    maxed = [max(padded[i], padded[i + 1]) for i in range(len(padded) - 1)]  # len(w) + 1
    smoothed = [(maxed[i] + maxed[i + 1]) / 2 + 0.01 for i in range(len(maxed) - 1)]  # len(w)
    pdf_weights = smoothed[1:-1]
    mids = [(depths[i] + depths[i + 1]) / 2 for i in range(len(depths) - 1)]
    return ref_inverse_cdf(mids[:len(pdf_weights) + 1], pdf_weights, u)


def test_importance_depths_matches_reference():
    gen = torch.Generator().manual_seed(10)
    b, m, s, n = 2, 3, 12, 16
    depths = torch.sort(1 + 2 * torch.rand(b, m, s, 1, generator=gen, dtype=torch.float64), dim=2).values
    weights = torch.rand(b, m, s - 1, 1, generator=gen, dtype=torch.float64) ** 3
    u = torch.rand(b * m, n, generator=gen, dtype=torch.float64)
    fine = importance_depths(depths, weights, n, u=u)
    assert fine.shape == (b, m, n, 1)
    for bi in range(b):
        for mi in range(m):
            expected = ref_importance(depths[bi, mi, :, 0].numpy(), weights[bi, mi, :, 0].numpy(), u[bi * m + mi])
            np.testing.assert_allclose(fine[bi, mi, :, 0].numpy(), expected, rtol=0, atol=1e-6)
    assert (fine >= depths.amin(2, keepdim=True)).all() and (fine <= depths.amax(2, keepdim=True)).all()


def test_importance_depths_spike_and_rng():
    b, m, s, n, j = 1, 2, 32, 64, 14
    depths = torch.linspace(2.0, 3.0, s).view(1, 1, s, 1).expand(b, m, s, 1).contiguous()
    weights = torch.zeros(b, m, s - 1, 1)
    weights[:, :, j] = 1.0
    u = torch.linspace(0, 0.999, n).expand(b * m, n).contiguous()
    fine = importance_depths(depths, weights, n, u=u)[..., 0]
    mids = (depths[0, 0, 1:, 0] + depths[0, 0, :-1, 0]) / 2
    # Pooled pdf = 0.5, 1, 0.5 on [mids[j-2], mids[j+1]] (+0.01 everywhere): most samples land there.
    in_spike = (fine >= mids[j - 2]) & (fine <= mids[j + 1])
    assert in_spike.float().mean() > 0.8
    spacing = 1.0 / (s - 1)
    assert ((fine.median(-1).values - depths[0, 0, j, 0]).abs() <= spacing).all()
    # u is one torch.rand draw of shape [B * M, N] when not given.
    torch.manual_seed(31)
    drawn = importance_depths(depths, weights, n)
    after = torch.rand(2)
    torch.manual_seed(31)
    u = torch.rand(b * m, n)
    after_expected = torch.rand(2)
    torch.testing.assert_close(drawn, importance_depths(depths, weights, n, u=u))
    torch.testing.assert_close(after, after_expected)


# ----------------------------------------------------------------------------------------------------------------
# Ray marcher
# ----------------------------------------------------------------------------------------------------------------


def ref_march(colors, densities, depths, white_back):
    colors, densities, depths = (x.double().numpy() for x in (colors, densities, depths))
    b, m, s, c = colors.shape
    rgb = np.zeros((b, m, c))
    depth = np.zeros((b, m, 1))
    weights = np.zeros((b, m, s - 1, 1))
    lo, hi = depths.min(), depths.max()  # clamp range over the whole tensor
    for bi in range(b):
        for mi in range(m):
            transmittance = 1.0
            acc_w, acc_t = 0.0, 0.0
            for i in range(s - 1):
                t_mid = (depths[bi, mi, i, 0] + depths[bi, mi, i + 1, 0]) / 2
                c_mid = (colors[bi, mi, i] + colors[bi, mi, i + 1]) / 2
                s_mid = (densities[bi, mi, i, 0] + densities[bi, mi, i + 1, 0]) / 2
                sigma = math.log1p(math.exp(s_mid - 1))
                alpha = 1 - math.exp(-sigma * (depths[bi, mi, i + 1, 0] - depths[bi, mi, i, 0]))
                w = alpha * transmittance
                transmittance *= 1 - alpha + 1e-10
                weights[bi, mi, i, 0] = w
                rgb[bi, mi] += w * c_mid
                acc_w += w
                acc_t += w * t_mid
            d = acc_t / acc_w if acc_w > 0 else math.inf
            depth[bi, mi, 0] = min(max(d, lo), hi)
            if white_back:
                rgb[bi, mi] += 1 - acc_w
    return rgb * 2 - 1, depth, weights


@pytest.mark.parametrize("white_back", [False, True])
def test_march_rays_matches_reference(white_back):
    gen = torch.Generator().manual_seed(12)
    b, m, s, c = 2, 3, 9, 4
    depths = torch.sort(2 + torch.rand(b, m, s, 1, generator=gen, dtype=torch.float64), dim=2).values
    densities = torch.rand(b, m, s, 1, generator=gen, dtype=torch.float64) * 12 - 4
    colors = torch.rand(b, m, s, c, generator=gen, dtype=torch.float64)
    rgb, depth, weights = march_rays(colors, densities, depths, white_back)
    assert rgb.shape == (b, m, c) and depth.shape == (b, m, 1) and weights.shape == (b, m, s - 1, 1)
    exp_rgb, exp_depth, exp_weights = ref_march(colors, densities, depths, white_back)
    np.testing.assert_allclose(weights.numpy(), exp_weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rgb.numpy(), exp_rgb, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(depth.numpy(), exp_depth, rtol=1e-9, atol=1e-12)


def test_march_rays_dense_first_sample():
    s = 6
    depths = torch.linspace(2.0, 3.0, s).view(1, 1, s, 1)
    densities = torch.full((1, 1, s, 1), -20.0)
    densities[0, 0, 0] = 1e4
    colors = torch.zeros(1, 1, s, 3)
    colors[0, 0, :2] = torch.tensor([1.0, 0.0, 0.0])
    rgb, depth, weights = march_rays(colors, densities, depths, white_back=True)
    first_mid = (depths[0, 0, 0, 0] + depths[0, 0, 1, 0]) / 2
    assert depth.item() == pytest.approx(first_mid.item(), abs=1e-4)
    assert weights[0, 0, 0, 0].item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(rgb[0, 0], torch.tensor([1.0, -1.0, -1.0]), rtol=0, atol=1e-4)  # opaque red


def test_march_rays_empty_ray():
    """No density: depth = the largest depth in the whole batch (NaN -> inf, clamped), white background -> +1,
    black background -> -1."""
    s = 5
    depths = torch.stack([torch.linspace(2.0, 3.0, s), torch.linspace(2.5, 4.0, s)]).view(1, 2, s, 1)
    densities = torch.full((1, 2, s, 1), -1e4)
    colors = torch.rand(1, 2, s, 3)
    rgb, depth, weights = march_rays(colors, densities, depths, white_back=True)
    assert (weights == 0).all()
    torch.testing.assert_close(depth, torch.full((1, 2, 1), 4.0))
    torch.testing.assert_close(rgb, torch.ones(1, 2, 3))
    rgb_black, _, _ = march_rays(colors, densities, depths, white_back=False)
    torch.testing.assert_close(rgb_black, -torch.ones(1, 2, 3))


# ----------------------------------------------------------------------------------------------------------------
# Renderer
# ----------------------------------------------------------------------------------------------------------------

SPHERE_RADIUS = 0.4
CAMERA_DISTANCE = 2.7


def sphere_field(coordinates, directions):
    """A dark opaque ball of radius 0.4 at the origin in empty space (raw sigma 1000 inside, -1e4 outside)."""
    inside = coordinates.norm(dim=-1, keepdim=True) <= SPHERE_RADIUS
    sigma = torch.where(inside, torch.full_like(inside, 1000.0, dtype=coordinates.dtype),
                        torch.full_like(inside, -1e4, dtype=coordinates.dtype))
    rgb = torch.zeros(*coordinates.shape[:-1], 3, dtype=coordinates.dtype)
    rgb[..., 1] = 0.5
    return {"rgb": rgb, "sigma": sigma}


def camera_on_z_rays(res=5):
    """Camera at (0, 0, 2.7) looking at the origin (OpenCV axes: x right, y down, z forward -> world -z)."""
    cam2world = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, CAMERA_DISTANCE], [0, 0, 0, 1]])
    return sample_rays(cam2world.unsqueeze(0), intrinsics_matrix(1.0, 1.0, 0.5, 0.5).unsqueeze(0), res)


@pytest.mark.parametrize("auto", [False, True])
def test_render_sphere(auto):
    res = 5
    origins, dirs = camera_on_z_rays(res)
    centre = (res // 2) * res + res // 2
    torch.testing.assert_close(dirs[0, centre], torch.tensor([0.0, 0.0, -1.0]))
    limits = dict(ray_start="auto", ray_end="auto", box_warp=1.0) if auto else dict(ray_start=2.0, ray_end=3.4)
    settings = RenderingSettings(depth_resolution=48, depth_resolution_importance=48, white_back=True, **limits)
    torch.manual_seed(0)
    features, depth, weight_sum = render_rays(sphere_field, origins, dirs, settings)
    assert features.shape == (1, res * res, 3) and depth.shape == (1, res * res, 1)
    assert weight_sum.shape == (1, res * res, 1)
    spacing = 1.4 / 47
    assert depth[0, centre, 0].item() == pytest.approx(CAMERA_DISTANCE - SPHERE_RADIUS, abs=spacing)
    assert weight_sum[0, centre, 0].item() == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(features[0, centre], torch.tensor([-1.0, 0.0, -1.0]), rtol=0, atol=1e-3)
    corner = 0  # ~29 degrees off axis: misses the ball
    assert weight_sum[0, corner, 0].item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(features[0, corner], torch.ones(3), rtol=0, atol=1e-5)  # white background


@pytest.mark.parametrize("auto", [False, True])
def test_render_draws_are_replayable(auto):
    origins, dirs = camera_on_z_rays(3)
    b, m = origins.shape[:2]
    limits = dict(ray_start="auto", ray_end="auto") if auto else dict(ray_start=2.0, ray_end=3.4)
    settings = RenderingSettings(depth_resolution=8, depth_resolution_importance=6, **limits)

    def field(coordinates, directions):  # smooth, position-dependent
        return {"rgb": torch.sigmoid(coordinates * 3), "sigma": 3 - 10 * coordinates.norm(dim=-1, keepdim=True)}

    gen = torch.Generator().manual_seed(5)
    draws = RendererDraws(torch.rand(b, m, 8, 1, generator=gen), torch.rand(b * m, 6, generator=gen))
    other = RendererDraws(torch.rand(b, m, 8, 1, generator=gen), torch.rand(b * m, 6, generator=gen))
    first = render_rays(field, origins, dirs, settings, draws)
    second = render_rays(field, origins, dirs, settings, draws)
    for x, y in zip(first, second):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    third = render_rays(field, origins, dirs, settings, other)
    assert not torch.allclose(first[0], third[0]) and not torch.allclose(first[1], third[1])
    # Without draws: the stratified jitter then the importance u are drawn with torch.rand, in that order.
    torch.manual_seed(99)
    drawn = render_rays(field, origins, dirs, settings)
    torch.manual_seed(99)
    stratified = torch.rand(8, b, m, 1).permute(1, 2, 0, 3) if auto else torch.rand(b, m, 8, 1)  # see above
    replay = RendererDraws(stratified, torch.rand(b * m, 6))
    for x, y in zip(drawn, render_rays(field, origins, dirs, settings, replay)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_render_rays_matches_reference_pipeline():
    """Coarse pass, importance pass, union of coarse + fine samples sorted by depth, final composite — rebuilt from
    the hand-written references of this file (ref_march, ref_importance) with the same injected draws."""
    origins, dirs = camera_on_z_rays(3)
    b, m = origins.shape[:2]
    s, n, start, end = 10, 7, 2.0, 3.4

    def field(coordinates, directions):  # dense core, soft falloff: every ray carries some weight
        return {"rgb": torch.sigmoid(coordinates * 2 + 0.3), "sigma": 8 - 10 * coordinates.norm(dim=-1, keepdim=True)}

    gen = torch.Generator().manual_seed(21)
    draws = RendererDraws(torch.rand(b, m, s, 1, generator=gen), torch.rand(b * m, n, generator=gen))
    settings = RenderingSettings(depth_resolution=s, depth_resolution_importance=n, ray_start=start, ray_end=end,
                                 white_back=True)
    features, depth, weight_sum = render_rays(field, origins, dirs, settings, draws)

    o, d = origins.double(), dirs.double()
    spacing = (end - start) / (s - 1)

    def shade(t):  # t [B, M, T, 1] -> colors, densities by evaluating the field point by point
        pts = o.unsqueeze(2) + t * d.unsqueeze(2)
        out = field(pts.reshape(b, -1, 3), None)
        return out["rgb"].reshape(b, m, t.shape[2], -1), out["sigma"].reshape(b, m, t.shape[2], 1)

    base = (start + torch.arange(s, dtype=torch.float64) * spacing).view(1, 1, s, 1)
    coarse = base + draws.stratified.double() * spacing
    colors, sigmas = shade(coarse)
    _, _, coarse_w = ref_march(colors, sigmas, coarse, True)
    fine = torch.zeros(b, m, n, 1, dtype=torch.float64)
    for bi in range(b):
        for mi in range(m):
            fine[bi, mi, :, 0] = torch.from_numpy(ref_importance(coarse[bi, mi, :, 0].numpy(), coarse_w[bi, mi, :, 0],
                                                                 draws.importance[bi * m + mi].double().numpy()))
    all_t = torch.sort(torch.cat([coarse, fine], 2), dim=2).values
    colors, sigmas = shade(all_t)
    exp_rgb, exp_depth, exp_w = ref_march(colors, sigmas, all_t, True)
    assert 0.3 < exp_w.sum(2).max() < 0.999  # the importance pass matters: not empty, not opaque
    np.testing.assert_allclose(features.numpy(), exp_rgb, rtol=0, atol=2e-4)
    np.testing.assert_allclose(depth.numpy(), exp_depth, rtol=0, atol=2e-4)
    np.testing.assert_allclose(weight_sum.numpy(), exp_w.sum(2), rtol=0, atol=2e-4)


def test_render_without_importance_evaluates_once():
    origins, dirs = camera_on_z_rays(2)
    calls = []

    def field(coordinates, directions):
        calls.append(coordinates.shape)
        return sphere_field(coordinates, directions)

    settings = RenderingSettings(depth_resolution=7, depth_resolution_importance=0, ray_start=2.0, ray_end=3.0)
    render_rays(field, origins, dirs, settings)
    assert calls == [torch.Size([1, 4 * 7, 3])]
    calls.clear()
    render_rays(field, origins, dirs, RenderingSettings(depth_resolution=7, depth_resolution_importance=5,
                                                        ray_start=2.0, ray_end=3.0))
    assert calls == [torch.Size([1, 4 * 7, 3]), torch.Size([1, 4 * 5, 3])]


def test_evaluate_field_points_and_merge_order():
    origins = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]]])
    dirs = torch.tensor([[[0.0, 0.0, -1.0], [0.6, 0.8, 0.0]]])
    depths = torch.tensor([0.5, 1.0, 2.0]).view(1, 1, 3, 1).expand(1, 2, 3, 1)
    seen = {}

    def field(coordinates, directions):
        seen["coords"], seen["dirs"] = coordinates, directions
        return {"rgb": coordinates.clone(), "sigma": coordinates[..., :1] * 0 + 7}

    colors, densities = evaluate_field(field, origins, dirs, depths)
    expected = torch.stack([origins[0, r] + t * dirs[0, r] for r in range(2) for t in (0.5, 1.0, 2.0)])
    torch.testing.assert_close(seen["coords"][0], expected)
    torch.testing.assert_close(seen["dirs"][0], dirs[0].repeat_interleave(3, 0))
    torch.testing.assert_close(colors, expected.view(1, 2, 3, 3))
    assert densities.shape == (1, 2, 3, 1)

    d1 = torch.tensor([1.0, 3.0, 5.0]).view(1, 1, 3, 1)
    d2 = torch.tensor([4.0, 2.0]).view(1, 1, 2, 1)
    c1, c2 = d1.expand(1, 1, 3, 2) * 10, d2.expand(1, 1, 2, 2) * 10  # colours tag their depth
    depths, colors, densities = merge_samples(d1, c1, -d1, d2, c2, -d2)
    torch.testing.assert_close(depths[0, 0, :, 0], torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    torch.testing.assert_close(colors[0, 0], depths[0, 0].expand(5, 2) * 10)
    torch.testing.assert_close(densities, -depths)


# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------


def test_settings_from_kwargs_round_trip():
    kwargs = RenderingSettings().to_kwargs()
    kwargs.update(depth_resolution=64, ray_start="auto", ray_end="auto", avg_camera_pivot=(0.0, 0.05, 0.2))
    settings = RenderingSettings.from_kwargs(kwargs)
    assert settings.depth_resolution == 64 and settings.auto_ray_limits
    assert settings.avg_camera_pivot == [0.0, 0.05, 0.2]
    assert RenderingSettings.from_kwargs(settings.to_kwargs()) == settings
    assert not RenderingSettings(ray_start=2.0, ray_end=3.0).auto_ray_limits


def test_settings_from_kwargs_rejects_unknown_keys():
    with pytest.raises(ValueError) as err:
        RenderingSettings.from_kwargs({"depth_resolution": 48, "ray_strat": 2.0, "zzz_extra": 1})
    assert "ray_strat" in str(err.value) and "zzz_extra" in str(err.value)


@pytest.mark.parametrize("bad", [
    {"ray_start": "auto", "ray_end": 3.3},
    {"ray_start": 2.25, "ray_end": "auto"},
    {"plane_projection": "orthogonal"},
    {"clamp_mode": "relu"},
    {"depth_resolution": 1},
])
def test_settings_rejects_invalid_values(bad):
    with pytest.raises(ValueError):
        RenderingSettings.from_kwargs(bad)


def test_kwargs_view_set_and_validate():
    settings = RenderingSettings()
    view = RenderingKwargsView(settings)
    view["depth_resolution"] = 96
    assert settings.depth_resolution == 96 and view["depth_resolution"] == 96
    with pytest.raises(ValueError):
        view["plane_projection"] = "nope"
    assert settings.plane_projection == "compat"
    with pytest.raises(ValueError):
        view["ray_start"] = "auto"  # ray_end is still a number
    assert settings.ray_start == 2.25
    with pytest.raises(ValueError):
        view["depth_resolution"] = 1
    assert settings.depth_resolution == 96
    with pytest.raises(KeyError):
        view["depth_resolutoin"] = 96
    with pytest.raises(KeyError):
        view["no_such_key"]
    assert set(view) == set(settings.to_kwargs()) and len(view) == len(settings.to_kwargs())
    assert dict(view)["depth_resolution"] == 96
    with pytest.raises(TypeError):
        del view["depth_resolution"]


def test_kwargs_view_restores_after_wrong_type():
    settings = RenderingSettings()
    view = RenderingKwargsView(settings)
    with pytest.raises((ValueError, TypeError)):
        view["depth_resolution"] = None
    assert settings.depth_resolution == 48


def test_kwargs_view_only_exposes_settings():
    view = RenderingKwargsView(RenderingSettings())
    assert "validate" not in view and "auto_ray_limits" not in view


def test_kwargs_view_update_switches_to_auto_limits_together():
    settings = RenderingSettings(ray_start=2.25, ray_end=3.3)
    view = RenderingKwargsView(settings)
    with pytest.raises(ValueError):
        view["ray_start"] = "auto"  # alone it would mix 'auto' and a number
    assert settings.ray_start == 2.25
    view.update(ray_start="auto", ray_end="auto")
    assert settings.auto_ray_limits and settings.ray_end == "auto"
