"""Tests for op3d.cameras: EG3D-convention poses, intrinsics and labels."""

import json
import math

import numpy as np
import pytest
import torch

from op3d.cameras import (
    GaussianCameraPoseSampler,
    LookAtPoseSampler,
    UniformCameraPoseSampler,
    create_cam2world_matrix,
    focal_to_intrinsics,
    fov_to_intrinsics,
    orbit_camera,
    pack_label,
    unpack_label,
)

HALF_PI = math.pi / 2
UNCOND_SETS = ["ffhq_k8_l10", "shhq_k4_l6"]


def _load_set(fixture_file, name):
    io = dict(np.load(fixture_file(f"official/{name}/io.npz")))
    config = json.loads(fixture_file(f"official/{name}/config.json").read_text())
    return io, config


def _camera_rig(config):
    rk = config["G_ema"]["init_kwargs"]["rendering_kwargs"]
    return list(rk["avg_camera_pivot"]), float(rk["avg_camera_radius"])


# --- helpers ---

def _recover_angles(cam2world):
    """Sampler yaw/pitch (float64 [B]) and radius from camera positions (inverse of the orbit)."""
    pos = torch.as_tensor(cam2world, dtype=torch.float64)[:, :3, 3]
    radius = pos.norm(dim=-1)
    pitch = math.pi * (1 - pos[:, 1] / radius) / 2      # cos(phi) = 1 - 2 v / pi
    yaw = math.pi - torch.atan2(pos[:, 2], pos[:, 0])   # (x, z) ~ (cos(pi - h), sin(pi - h))
    return yaw, pitch, radius


def _check_rigid(cam2world, atol=1e-5):
    c2w = cam2world.double()
    rot = c2w[:, :3, :3]
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    assert torch.allclose(rot.transpose(1, 2) @ rot, eye, atol=atol)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(len(rot), dtype=torch.float64), atol=atol)
    bottom = torch.tensor([0, 0, 0, 1], dtype=torch.float64).expand(len(rot), 4)
    assert torch.equal(c2w[:, 3, :], bottom)


# --- official reference data ---

@pytest.mark.parametrize("name", UNCOND_SETS)
def test_intrinsics_match_fixture(fixture_file, name):
    io, _ = _load_set(fixture_file, name)
    k = fov_to_intrinsics(float(io["fov_deg"]))
    assert k.shape == (3, 3) and k.dtype == torch.float32
    np.testing.assert_allclose(k.numpy(), io["intrinsics"], rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", UNCOND_SETS)
def test_conditioning_label_matches_fixture(fixture_file, name):
    io, config = _load_set(fixture_file, name)
    pivot, radius = _camera_rig(config)
    batch = io["c_cond"].shape[0]
    c2w = LookAtPoseSampler.sample(HALF_PI, HALF_PI, pivot, radius=radius, batch_size=batch)
    c = pack_label(c2w, fov_to_intrinsics(float(io["fov_deg"])))
    assert c.shape == (batch, 25) and c.dtype == torch.float32
    np.testing.assert_allclose(c.numpy(), io["c_cond"], rtol=0, atol=1e-6)
    # The convenience wrapper gives the same label.
    one = orbit_camera(HALF_PI, HALF_PI, radius, pivot, float(io["fov_deg"]))
    np.testing.assert_allclose(one.numpy(), io["c_cond"][:1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", UNCOND_SETS)
def test_rendering_label_reproduced_from_recovered_angles(fixture_file, name):
    io, config = _load_set(fixture_file, name)
    pivot, radius = _camera_rig(config)
    ref = torch.from_numpy(io["c"])
    ref_c2w, ref_k = unpack_label(ref)
    yaw, pitch, r = _recover_angles(ref_c2w)
    np.testing.assert_allclose(r.numpy(), radius, atol=1e-5)
    for i in range(len(ref)):
        c2w = LookAtPoseSampler.sample(float(yaw[i]), float(pitch[i]), pivot, radius=radius)
        c = pack_label(c2w, fov_to_intrinsics(float(io["fov_deg"])))
        np.testing.assert_allclose(c.numpy(), io["c"][i:i + 1], rtol=0, atol=1e-5)
    # The reference cameras look at the pivot and are proper rotations.
    _check_rigid(ref_c2w)
    to_pivot = torch.tensor(pivot, dtype=torch.float64) - ref_c2w[:, :3, 3].double()
    to_pivot = to_pivot / to_pivot.norm(dim=-1, keepdim=True)
    assert torch.allclose(ref_c2w[:, :3, 2].double(), to_pivot, atol=1e-5)


def test_conditional_set_known_angles(fixture_file):
    """shhq_cond_k8 stores the yaw/pitch offsets and the focal used for its labels."""
    io, config = _load_set(fixture_file, "shhq_cond_k8")
    pivot, radius = _camera_rig(config)
    spec = config["fixture_spec"]
    k = focal_to_intrinsics(spec["focal"])
    np.testing.assert_allclose(k.numpy(), io["intrinsics"], rtol=0, atol=1e-7)
    for i, (dyaw, dpitch) in enumerate(spec["cam_angles"]):
        c2w = LookAtPoseSampler.sample(HALF_PI + dyaw, HALF_PI + dpitch, pivot, radius=radius)
        np.testing.assert_allclose(pack_label(c2w, k).numpy(), io["c"][i:i + 1], rtol=0, atol=1e-6)
        label = orbit_camera(HALF_PI + dyaw, HALF_PI + dpitch, radius, pivot, focal=spec["focal"])
        np.testing.assert_allclose(label.numpy(), io["c"][i:i + 1], rtol=0, atol=1e-6)


# --- conventions and geometry (no fixtures needed) ---

def test_frontal_camera_is_opencv():
    c2w = LookAtPoseSampler.sample(HALF_PI, HALF_PI, [0, 0, 0], radius=2.7)[0].double()
    expected = torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]],
                            dtype=torch.float64)
    assert torch.allclose(c2w, expected, atol=1e-6)


def test_fov_to_intrinsics_constants():
    k = fov_to_intrinsics(18)
    focal = 1 / (math.tan(18 * 3.14159 / 360) * 1.414)
    assert abs(float(k[0, 0]) - focal) < 1e-6 and abs(focal - 4.4651747) < 1e-6
    assert torch.equal(k[0, 0], k[1, 1])
    assert k[0, 2] == 0.5 and k[1, 2] == 0.5 and k[2, 2] == 1
    assert k[0, 1] == 0 and k[1, 0] == 0 and k[2, 0] == 0 and k[2, 1] == 0


def test_create_cam2world_matrix_columns():
    torch.manual_seed(0)
    origin = torch.randn(16, 3) * 3
    target = torch.randn(16, 3) * 0.2
    forward = target - origin  # not normalized on purpose
    c2w = create_cam2world_matrix(forward, origin)
    assert c2w.shape == (16, 4, 4)
    _check_rigid(c2w)
    unit = forward / forward.norm(dim=-1, keepdim=True)
    assert torch.allclose(c2w[:, :3, 2], unit, atol=1e-6)
    assert torch.equal(c2w[:, :3, 3], origin)
    assert torch.allclose(c2w[:, 1, 0], torch.zeros(16), atol=1e-6)  # right is horizontal
    assert (c2w[:, 1, 1] < 0).all()  # camera y (down) has a world -y component


def test_draw_order_and_rng_consumption():
    h_mean, v_mean, h_std, v_std, radius, batch = 0.9, 1.7, 0.3, 0.2, 2.5, 5
    torch.manual_seed(123)
    c2w = LookAtPoseSampler.sample(h_mean, v_mean, [0.1, 0.2, 0.3], h_std, v_std, radius, batch)
    after = torch.rand(3)
    torch.manual_seed(123)
    h = torch.randn(batch, 1) * h_std + h_mean
    v = torch.randn(batch, 1) * v_std + v_mean
    assert torch.equal(after, torch.rand(3))
    yaw, pitch, r = _recover_angles(c2w)
    assert torch.allclose(yaw, h[:, 0].double(), atol=1e-5)
    assert torch.allclose(pitch, v[:, 0].double(), atol=1e-5)
    assert torch.allclose(r, torch.full((batch,), radius, dtype=torch.float64), atol=1e-5)

    torch.manual_seed(7)
    c2w = UniformCameraPoseSampler.sample(h_mean, v_mean, h_std, v_std, radius, batch)
    after = torch.rand(3)
    torch.manual_seed(7)
    h = (torch.rand(batch, 1) * 2 - 1) * h_std + h_mean
    v = (torch.rand(batch, 1) * 2 - 1) * v_std + v_mean
    assert torch.equal(after, torch.rand(3))
    yaw, pitch, _ = _recover_angles(c2w)
    assert torch.allclose(yaw, h[:, 0].double(), atol=1e-5)
    assert torch.allclose(pitch, v[:, 0].double(), atol=1e-5)


@pytest.mark.parametrize("sampler", [GaussianCameraPoseSampler, UniformCameraPoseSampler])
def test_zero_stddev_equals_lookat_origin(sampler):
    for yaw, pitch in [(HALF_PI, HALF_PI), (HALF_PI + 0.5, HALF_PI - 0.3), (-2.0, 2.5)]:
        a = sampler.sample(yaw, pitch, radius=2.7, batch_size=3)
        b = LookAtPoseSampler.sample(yaw, pitch, [0, 0, 0], radius=2.7, batch_size=3)
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("sampler", [GaussianCameraPoseSampler, UniformCameraPoseSampler])
def test_random_samplers_reproducible(sampler):
    torch.manual_seed(42)
    a = sampler.sample(HALF_PI, HALF_PI, 0.3, 0.15, radius=2.7, batch_size=8)
    torch.manual_seed(42)
    b = sampler.sample(HALF_PI, HALF_PI, 0.3, 0.15, radius=2.7, batch_size=8)
    c = sampler.sample(HALF_PI, HALF_PI, 0.3, 0.15, radius=2.7, batch_size=8)
    assert torch.equal(a, b)
    assert not torch.equal(b, c)
    _check_rigid(a)


def test_uniform_sampler_range():
    torch.manual_seed(0)
    h_mean, v_mean, h_std, v_std = 1.2, HALF_PI, 0.3, 0.5
    c2w = UniformCameraPoseSampler.sample(h_mean, v_mean, h_std, v_std, radius=2.7, batch_size=4096)
    yaw, pitch, _ = _recover_angles(c2w)
    for ang, mean, std in [(yaw, h_mean, h_std), (pitch, v_mean, v_std)]:
        assert (ang >= mean - std - 1e-4).all() and (ang <= mean + std + 1e-4).all()
        assert ang.min() < mean - 0.95 * std and ang.max() > mean + 0.95 * std
        assert abs(float(ang.mean()) - mean) < 4 * std / math.sqrt(3 * len(ang))


def test_gaussian_sampler_statistics():
    torch.manual_seed(0)
    h_mean, v_mean, h_std, v_std = 1.4, 1.7, 0.3, 0.15
    c2w = GaussianCameraPoseSampler.sample(h_mean, v_mean, h_std, v_std, radius=2.7, batch_size=20000)
    yaw, pitch, _ = _recover_angles(c2w)
    for ang, mean, std in [(yaw, h_mean, h_std), (pitch, v_mean, v_std)]:
        assert abs(float(ang.mean()) - mean) < 4 * std / math.sqrt(len(ang))
        assert abs(float(ang.std()) / std - 1) < 0.05


@pytest.mark.parametrize("pitch", [0.0, -1.0, math.pi, 5.0])
def test_pitch_clamped_at_poles(pitch):
    c2w = LookAtPoseSampler.sample(HALF_PI, pitch, [0, 0, 0], radius=2.0)
    assert torch.isfinite(c2w).all()
    _check_rigid(c2w, atol=1e-4)
    y = float(c2w[0, 1, 3])
    assert abs(abs(y) - 2.0) < 1e-4
    assert (y > 0) == (pitch < HALF_PI)


def test_sampler_outputs_and_lookat_shapes():
    lookat = torch.tensor([[0, 0, 0.2], [0.1, 0, 0], [0, -0.1, 0]])
    c2w = LookAtPoseSampler.sample(HALF_PI, HALF_PI, lookat, 0.2, 0.1, 2.7, 3, device="cpu")
    assert c2w.shape == (3, 4, 4) and c2w.dtype == torch.float32 and c2w.device.type == "cpu"
    to_target = lookat - c2w[:, :3, 3]
    assert torch.allclose(c2w[:, :3, 2], to_target / to_target.norm(dim=-1, keepdim=True), atol=1e-6)
    for sampler in (GaussianCameraPoseSampler, UniformCameraPoseSampler):
        out = sampler.sample(HALF_PI, HALF_PI, 0.1, 0.1, 2.7, 2, device=torch.device("cpu"))
        assert out.shape == (2, 4, 4) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="expected .*found"):
        LookAtPoseSampler.sample(HALF_PI, HALF_PI, torch.zeros(2, 3), batch_size=3)


# --- labels ---

def test_pack_unpack_round_trip():
    torch.manual_seed(1)
    c2w = GaussianCameraPoseSampler.sample(HALF_PI, HALF_PI, 0.3, 0.2, 2.7, 4)
    k = fov_to_intrinsics(18)
    c = pack_label(c2w, k)
    assert c.shape == (4, 25) and c.dtype == torch.float32
    assert torch.equal(c[:, :16], c2w.reshape(4, 16)) and torch.equal(c[:, 16:], k.reshape(1, 9).expand(4, 9))
    c2w_back, k_back = unpack_label(c)
    assert torch.equal(c2w_back, c2w) and torch.equal(k_back, k.expand(4, 3, 3))
    ks = torch.stack([fov_to_intrinsics(f) for f in (12, 18, 24, 30)])
    c2 = pack_label(c2w, ks)
    assert torch.equal(unpack_label(c2)[1], ks)
    c64 = pack_label(c2w.double(), k)
    assert c64.dtype == torch.float64


@pytest.mark.parametrize("c2w_shape, k_shape, bad", [
    ((4, 4), (3, 3), "cam2world"),
    ((2, 3, 4), (3, 3), "cam2world"),
    ((2, 16), (3, 3), "cam2world"),
    ((2, 4, 4), (3, 3, 1), "intrinsics"),
    ((2, 4, 4), (3, 3, 3), "intrinsics"),
    ((2, 4, 4), (9,), "intrinsics"),
])
def test_pack_label_bad_shapes(c2w_shape, k_shape, bad):
    with pytest.raises(ValueError) as err:
        pack_label(torch.zeros(c2w_shape), torch.zeros(k_shape))
    msg = str(err.value)
    assert bad in msg and "expected" in msg and "found" in msg


@pytest.mark.parametrize("shape", [(25,), (2, 24), (2, 26), (2, 5, 5)])
def test_unpack_label_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"expected shape \[B, 25\], found"):
        unpack_label(torch.zeros(shape))


def test_rotate_label_about_y_is_a_yaw_step():
    from op3d.cameras import LookAtPoseSampler, fov_to_intrinsics, pack_label, rotate_label_about_y

    def label(yaw):
        return pack_label(LookAtPoseSampler.sample(yaw, 1.4, torch.zeros(3), radius=2.7), fov_to_intrinsics(18))

    # About the origin, turning by +angle about +y is the orbit step yaw -> yaw + angle.
    turned = rotate_label_about_y(label(1.7), 0.3)
    assert torch.allclose(turned, label(2.0), atol=1e-5)
    # About another pivot: the pivot keeps its camera-space position and the intrinsics are kept.
    pivot = torch.tensor([0.0, 0.0, 0.2])
    c = label(1.9)
    turned = rotate_label_about_y(c, torch.tensor([-0.5]), pivot)
    def in_camera(lbl):
        cam2world = lbl[0, :16].view(4, 4)
        return cam2world[:3, :3].T @ (pivot - cam2world[:3, 3])
    assert torch.allclose(in_camera(turned), in_camera(c), atol=1e-5)
    assert torch.equal(turned[:, 16:], c[:, 16:])
