"""Numerical parity of the SMPL-conditional generator and its discriminator with the official code (fixture set
official/shhq_cond_k8: the official conditional model run on a procedural SMPL-format body, see its README.txt).

Tolerances are the core issue's (`assert_matches` of test_official_parity.py), never widened. Every stage of the point
pipeline is checked on the fixture's probe points, most of them from the fixture's own inputs to that stage, so that a
failure names the stage. The renderer is checked on the first rays of each image and the output assembly on the
recorded feature image; the full synthesis (1M sample points through the exact mesh distances) is checked last.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import op3d
from op3d.checkpoints import flatten_record_state
from op3d.networks.conditional import ConditionalOrthoPlanesGenerator, ConditionalRenderer
from op3d.networks.deformation import pose_euler_code
from op3d.networks.discriminator import DualDiscriminatorWithWarping
from op3d.rendering.depth_sampling import importance_depths, stratified_depths
from op3d.rendering.renderer import RendererDraws, merge_samples
from op3d.rendering.sdf_marcher import march_sdf_rays
from op3d.rendering.sdf_renderer import DEPTH_RANGE
from op3d.representation.body_warp import body_frame, check_pose_conditions, inverse_skinning, warp_to_canonical
from op3d.representation.clamped_orthoplanes import sample_orthoplanes_clamped
from op3d.representation.orthoplanes import GROUP_AXES
from op3d.safe_pickle import GlobalRecord, PersistentRecord, load_pickle
from op3d.smpl.lbs import blended_inverse_transforms
from test_official_parity import assert_matches
from test_safe_pickle import _dumps_as, _Reduces

FIXTURE = "official/shhq_cond_k8"
CONDITION_KEYS = ("vertices", "fk_matrices", "lbs_weights", "full_pose", "body_shape")


class ConditionalFixture:
    """The fixture set, loaded once per module: snapshot, reference arrays, body, pose conditions."""

    def __init__(self, path):
        self.path = path
        self.io = np.load(path / "io.npz")
        self.body = np.load(path / "body.npz")
        self.config = json.loads((path / "config.json").read_text())
        self.snapshot = op3d.load_network_pkl(path / "G.pkl")
        self.G = self.snapshot["G_ema"]
        self.D = self.snapshot["D"]
        self.cond = {k: self.t(f"cond_{k}") for k in CONDITION_KEYS}
        self._cache = {}

    def t(self, key):
        return torch.from_numpy(self.io[key])

    def cached(self, name, make):
        if name not in self._cache:
            with torch.no_grad():
                self._cache[name] = make()
        return self._cache[name]

    @property
    def planes(self):
        """The backbone output of the synthesis call (the probes were evaluated on it)."""
        return self.cached("planes", lambda: self.G.compute_planes(self.t("ws"), noise_mode="const"))

    @property
    def synthesis(self):
        """G_ema.synthesis with the two recorded renderer draws."""
        return self.cached("synthesis", lambda: self.G.synthesis(
            self.t("ws"), self.t("c"), self.cond, noise_mode="const",
            renderer_draws=RendererDraws(self.t("rng_stratified"), self.t("rng_importance_u"))))


@pytest.fixture(scope="module")
def fx(fixture_file):
    path = fixture_file(f"{FIXTURE}/G.pkl").parent
    torch.set_num_threads(min(torch.get_num_threads(), 2) or 1)
    return ConditionalFixture(path)


# --- loading -----------------------------------------------------------------------------------------------------

def test_snapshot_contents(fx):
    attrs = fx.config["G_ema"]["attributes"]
    for key in ("G", "G_ema"):
        G = fx.snapshot[key]
        assert type(G) is ConditionalOrthoPlanesGenerator
        assert not G.training and not any(p.requires_grad for p in G.parameters())
    G = fx.G
    assert (G.n_planes_per_axis, G.L, G.neural_rendering_resolution) == \
        (attrs["n_planes_per_axis"], attrs["L"], attrs["neural_rendering_resolution"])
    for key, value in attrs["rendering_kwargs"].items():
        assert G.rendering_kwargs[key] == value, key
    assert torch.equal(G.renderer.face_idx, torch.from_numpy(fx.body["faces"]))
    assert np.float32(G.density_func.beta_min) == np.float32(9.9999997e-05)
    assert_matches("mr_beta_effective", G.density_func.get_beta(), fx.io["mr_beta_effective"])
    assert len(G.decoder.net) == 7 and G.decoder.net[0].weight.shape == (64, 32)
    assert type(fx.D) is DualDiscriminatorWithWarping
    assert fx.D.c_dim == 104 and fx.D.mapping.embed.weight.shape == (32, 104)
    assert fx.D.init_kwargs["c_dim"] == fx.config["D"]["init_kwargs"]["c_dim"] == 25


def test_fresh_modules_take_official_tensors(fx):
    """Modules built from config.json's constructor arguments (plus the faces) accept the pickle's tensors under
    their official names: no missing or unexpected key."""
    raw = load_pickle(fx.path / "G.pkl")
    G = ConditionalOrthoPlanesGenerator(**fx.config["G_ema"]["init_kwargs"], faces=fx.body["faces"])
    result = G.load_state_dict(flatten_record_state(raw["G_ema"]), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    D = DualDiscriminatorWithWarping(**fx.config["D"]["init_kwargs"])
    D.load_state_dict(flatten_record_state(raw["D"]), strict=True)


def _official_layout(record, module: str, stubs: dict):
    """Turn a loaded record tree back into objects that pickle in the official layout: persistent objects through
    torch_utils.persistence._reconstruct_persistent_obj(meta) with a module_src, plain modules as `module.Class`
    (NEWOBJ + BUILD). `stubs` collects the stand-in classes to register under their official names."""
    if isinstance(record, PersistentRecord):
        state = dict(record.state)
        state["_modules"] = {k: _official_layout(v, module, stubs) for k, v in state.get("_modules", {}).items()}
        meta = {"type": "class", "version": 6, "class_name": record.class_name, "state": state,
                "module_src": stubs["__source__"]}
        return _Reduces(stubs["torch_utils.persistence._reconstruct_persistent_obj"], (meta,))
    if isinstance(record, GlobalRecord):
        state = dict(record.state)
        state["_modules"] = {k: _official_layout(v, module, stubs) for k, v in state.get("_modules", {}).items()}
        if record.qualname.startswith("torch."):
            cls = getattr(torch.nn, record.qualname.rsplit(".")[-1])
        else:
            name = record.qualname.replace("training.kaolin_version.", f"{module}.")
            cls = stubs.setdefault(name, type(name.rsplit(".")[-1], (), {}))
        obj = cls.__new__(cls)  # pickles as NEWOBJ(cls) + BUILD(state), as plain torch modules do
        obj.__dict__.update(state)
        return obj
    return record


def test_official_layout_pickle_loads_without_executing_code(fx, tmp_path):
    """A snapshot in the official conditional layout, with the pre-2024 module name training.orthoplanes_smpl_cond
    and an embedded module source that would leave a file behind if it ran, loads into the same networks."""
    sentinel = tmp_path / "executed"
    stubs = {"__source__": f"open({str(sentinel)!r}, 'w').close()\n",
             "torch_utils.persistence._reconstruct_persistent_obj": lambda meta: None}
    raw = load_pickle(fx.path / "G.pkl")
    snapshot = {"training_set_kwargs": raw["training_set_kwargs"], "augment_pipe": None,
                **{k: _official_layout(raw[k], "training.orthoplanes_smpl_cond", stubs) for k in ("G_ema", "D")}}
    names = {k: v for k, v in stubs.items() if k != "__source__"}
    path = tmp_path / "cond.pkl"
    path.write_bytes(_dumps_as(snapshot, names))
    data = path.read_bytes()
    assert b"orthoplanes_smpl_cond" in data and b"kaolin_version" not in data and b"_reconstruct_persistent_obj" in data
    loaded = op3d.load_network_pkl(path)
    assert not sentinel.exists()
    assert type(loaded["G_ema"]) is ConditionalOrthoPlanesGenerator
    assert type(loaded["D"]) is DualDiscriminatorWithWarping
    for key in ("G_ema", "D"):
        ours, ref = loaded[key].state_dict(), fx.snapshot[key].state_dict()
        assert ours.keys() == ref.keys()
        assert all(torch.equal(ours[k], ref[k]) for k in ours), key
    assert torch.equal(loaded["G_ema"].renderer.face_idx, fx.G.renderer.face_idx)


def test_op3d_snapshot_round_trip(fx, tmp_path):
    op3d.save_network_pkl(tmp_path / "snap.pkl", {"G_ema": fx.G, "D": fx.D})
    loaded = op3d.load_network_pkl(tmp_path / "snap.pkl")
    assert torch.equal(loaded["G_ema"].renderer.face_idx, fx.G.renderer.face_idx)
    assert loaded["G_ema"].density_func.beta_min == fx.G.density_func.beta_min
    for key in ("G_ema", "D"):
        ours, ref = loaded[key].state_dict(), fx.snapshot[key].state_dict()
        assert all(torch.equal(ours[k], ref[k]) for k in ref), key


def test_pose_conditions_are_checked(fx):
    cond = dict(fx.cond)
    del cond["full_pose"]
    with pytest.raises(KeyError, match="full_pose"):
        check_pose_conditions(cond)
    with pytest.raises(ValueError, match="lbs_weights"):
        check_pose_conditions({**fx.cond, "lbs_weights": fx.cond["lbs_weights"][:, :10]})
    with pytest.raises(ValueError, match=r"\[1, "):
        check_pose_conditions(fx.cond, batch_size=1)
    with pytest.raises(RuntimeError, match="faces"):
        ConditionalRenderer().faces()


# --- mapping, planes, discriminator ------------------------------------------------------------------------------

def test_mapping(fx):
    with torch.no_grad():
        ws = fx.G.mapping(fx.t("z"), fx.t("c"), truncation_psi=float(fx.io["truncation_psi"]),
                          truncation_cutoff=int(fx.io["truncation_cutoff"]))
        ws_psi1 = fx.G.mapping(fx.t("z"), fx.t("c"))
    assert_matches("ws", ws, fx.io["ws"])
    assert_matches("ws_psi1", ws_psi1, fx.io["ws_psi1"])


def test_planes(fx):
    planes = fx.planes
    assert list(planes.shape) == fx.io["planes_shape"].tolist()
    assert_matches("planes_sub16", planes[..., ::16, ::16], fx.io["planes_sub16"])
    assert_matches("planes_probe", planes.reshape(-1)[fx.t("planes_probe_flat_idx")], fx.io["planes_probe_values"])
    assert_matches("planes_chan_mean", planes.double().mean(dim=(-2, -1)), fx.io["planes_chan_mean_f64"])


def test_discriminator(fx):
    with torch.no_grad():
        logits = fx.D({"image": fx.t("image"), "image_raw": fx.t("image_raw")}, fx.t("c"), fx.cond)
    assert_matches("d_logits", logits, fx.io["d_logits"])


# --- point pipeline, stage by stage ------------------------------------------------------------------------------

def test_body_frame_and_inverse_skinning(fx):
    """Body frame, then the blended inverse transform of the recorded nearest vertex (root only when far)."""
    p = body_frame(fx.t("probe_coords"), fx.G.rendering_kwargs["box_warp"])
    assert_matches("probe_tpose_input", p, fx.io["probe_tpose_input"])
    fk = fx.cond["fk_matrices"]
    canonical = inverse_skinning(p, blended_inverse_transforms(fx.cond["lbs_weights"], fk), torch.inverse(fk[:, 0]),
                                 fx.t("probe_knn_idx")[..., 0], fx.t("probe_knn_d2")[..., 0])
    assert_matches("probe_cano_coords", canonical, fx.io["probe_cano_coords"])


def test_warp_to_canonical(fx):
    """Nearest posed vertex (only its index where the blended transform is used), canonical coordinates and the
    signed squared body distance of the probe points."""
    warped = warp_to_canonical(fx.t("probe_coords"), fx.cond, fx.G.renderer.face_idx, 1.0)
    assert_matches("probe_knn_d2", warped.nearest_sqdist, fx.io["probe_knn_d2"][..., 0])
    near = fx.io["probe_knn_d2"][..., 0] < 0.1
    assert np.array_equal(warped.nearest_index.numpy()[near], fx.io["probe_knn_idx"][..., 0][near])
    assert_matches("probe_cano_coords", warped.canonical, fx.io["probe_cano_coords"])
    assert_matches("probe_sdf_zero", warped.sdf_zero, fx.io["probe_sdf_zero"])


def test_deformation(fx):
    with torch.no_grad():
        delta = fx.G.renderer.deformation_decoder(fx.t("probe_cano_coords"), fx.t("ws")[:, -1],
                                                  fx.cond["body_shape"], fx.cond["full_pose"])
    assert_matches("probe_delta_x", delta, fx.io["probe_delta_x"])
    assert_matches("probe_cano_deformed", fx.t("probe_cano_coords") + delta, fx.io["probe_cano_deformed"])


@pytest.mark.parametrize("twice_differentiable", [True, False])
def test_plane_lookup(fx, twice_differentiable):
    with torch.no_grad():
        features = sample_orthoplanes_clamped(fx.planes, fx.t("probe_cano_deformed"), twice_differentiable)
    assert_matches("probe_features", features, fx.io["probe_features"])


def test_decoder_and_eikonal_gradient(fx):
    with torch.no_grad():
        out = fx.G.decoder(fx.t("probe_features"))
    assert_matches("probe_decoder_sigma", out["sigma"], fx.io["probe_decoder_sigma"])
    assert_matches("probe_decoder_rgb", out["rgb"], fx.io["probe_decoder_rgb"])
    q = fx.t("probe_cano_deformed").clone().requires_grad_(True)
    sigma = fx.G.decoder(sample_orthoplanes_clamped(fx.planes, q))["sigma"]
    grad, = torch.autograd.grad(sigma, q, torch.ones_like(sigma))
    assert_matches("probe_eik_grad_train_mode", grad, fx.io["probe_eik_grad_train_mode"])


def test_run_model_on_probes_in_training_mode(fx):
    """The whole point pipeline on the probe points, in training mode (where the official renderer also returns
    the eikonal gradient d sigma / d deformed canonical point; the other outputs equal eval mode's)."""
    G = fx.G
    try:
        G.train()
        out = G.field(fx.planes, fx.t("ws"), fx.cond)(fx.t("probe_coords"))
    finally:
        G.eval()
    assert out["eik_grad"].requires_grad  # create_graph: the eikonal loss can be differentiated
    for key, ref in (("canonical", "probe_cano_deformed"), ("delta_x", "probe_delta_x"),
                     ("sdf_zero", "probe_sdf_zero"), ("sigma", "probe_decoder_sigma"), ("rgb", "probe_decoder_rgb"),
                     ("eik_grad", "probe_eik_grad_train_mode")):
        assert_matches(ref, out[key], fx.io[ref])
    assert_matches("sdf", out["sdf"], fx.io["probe_decoder_sigma"] + fx.io["probe_sdf_zero"])


def test_sample_and_sample_mixed(fx):
    coords, dirs, ws = fx.t("probe_coords"), fx.t("probe_dirs"), fx.t("ws")
    with torch.no_grad():
        out = fx.G.sample(coords, dirs, ws, fx.t("c"), fx.cond, noise_mode="const")
        mixed = fx.G.sample_mixed(coords, dirs, ws, fx.cond, noise_mode="const")
    assert_matches("sample_sigma", out["sigma"], fx.io["sample_sigma"])
    assert_matches("sample_rgb", out["rgb"], fx.io["sample_rgb"])
    assert_matches("sample_mixed_sigma", mixed["sigma"], fx.io["sample_mixed_sigma"])
    assert_matches("sample_mixed_rgb", mixed["rgb"], fx.io["sample_mixed_rgb"])


# --- ray marcher and importance sampler on synthetic rays ---------------------------------------------------------

def test_sdf_ray_marcher_cases(fx):
    density = fx.G.density_func
    depths = stratified_depths(2, 256, *DEPTH_RANGE, 64, "cpu", jitter=fx.t("mr_rng_stratified"))
    assert_matches("mr_depths_coarse", depths, fx.io["mr_depths_coarse"])
    with torch.no_grad():
        rgb, depth, weights = march_sdf_rays(fx.t("mr_colors_coarse"), fx.t("mr_sdf_coarse"), depths, density)
    assert_matches("mr_rgb_coarse", rgb, fx.io["mr_rgb_coarse"])
    assert_matches("mr_depth_coarse", depth, fx.io["mr_depth_coarse"])
    assert_matches("mr_weights_coarse", weights, fx.io["mr_weights_coarse"])
    fine = importance_depths(depths, weights, 64, u=fx.t("mr_rng_importance_u"))
    assert_matches("mr_depths_fine", fine, fx.io["mr_depths_fine"])
    all_depths, colors, sdf = merge_samples(depths, fx.t("mr_colors_coarse"), fx.t("mr_sdf_coarse"),
                                            fine, fx.t("mr_colors_fine"), fx.t("mr_sdf_fine"))
    assert_matches("mr_all_depths", all_depths, fx.io["mr_all_depths"])
    assert_matches("mr_all_sdf", sdf, fx.io["mr_all_sdf"])
    with torch.no_grad():
        rgb, depth, weights = march_sdf_rays(colors, sdf, all_depths, density)
    assert_matches("mr_rgb", rgb, fx.io["mr_rgb"])
    assert_matches("mr_depth", depth, fx.io["mr_depth"])
    assert_matches("mr_weights", weights, fx.io["mr_weights"])


def test_renderer_draws_follow_the_official_rng_stream(fx):
    """After torch.manual_seed(s), op3d's stratified and importance draws are the official ones."""
    torch.manual_seed(int(fx.io["mr_rng_seed"]))
    depths = stratified_depths(2, 256, *DEPTH_RANGE, 64, "cpu")
    fine = importance_depths(depths, fx.t("mr_weights_coarse"), 64)
    assert_matches("mr_depths_coarse", depths, fx.io["mr_depths_coarse"])
    assert_matches("mr_depths_fine", fine, fx.io["mr_depths_fine"])


# --- rendering ----------------------------------------------------------------------------------------------------

def test_render_first_rays(fx):
    """The renderer on the first 64 rays of each image (row-major), with their slices of the recorded draws: the
    sorted sdf / sdf_zero samples (coarse samples carry the body prior twice, as officially), the coarse
    deformations, and those pixels of the feature and depth images."""
    n, s = 64, fx.G.rendering_kwargs["depth_resolution"]
    origins, directions = fx.G.camera_rays(fx.t("c"), fx.G.neural_rendering_resolution)
    u = fx.t("rng_importance_u").view(2, -1, fx.io["rng_importance_u"].shape[-1])[:, :n].reshape(2 * n, -1)
    with torch.no_grad():
        features, depth, sdf = fx.G.render(fx.planes, fx.t("ws"), origins[:, :n], directions[:, :n], fx.cond,
                                           RendererDraws(fx.t("rng_stratified")[:, :n], u))
    assert_matches("sdf", sdf["sdf"], fx.io["sdf_first256rays"][:, :n])
    assert_matches("sdf_zero", sdf["sdf_zero"], fx.io["sdf_zero_first256rays"][:, :n])
    assert_matches("delta_x", sdf["delta_x"][:, :n * s], fx.io["delta_x_head"][:, :n * s])
    assert_matches("feature_image", features, fx.io["feature_image"].reshape(2, 32, -1)[:, :, :n].transpose(0, 2, 1))
    assert_matches("image_depth", depth, fx.io["image_depth"].reshape(2, 1, -1)[:, :, :n].transpose(0, 2, 1))


def test_superresolution_of_the_recorded_feature_image(fx):
    """The synthesis output assembly: image_raw = first 3 feature channels; image = superresolution of the
    recorded 32-channel feature image with the last w (noise mode from the rendering settings)."""
    features = fx.t("feature_image")
    with torch.no_grad():
        image = fx.G.superresolution(features[:, :3], features, fx.t("ws"),
                                     noise_mode=fx.G.rendering_kwargs["superresolution_noise_mode"])
    assert_matches("image", image, fx.io["image"], image=True)
    assert_matches("image_raw", features[:, :3], fx.io["image_raw"])


# --- full synthesis (1M sample points through the exact mesh geometry: about 45 s on the 2-core CPU) ----------------

def test_synthesis_images(fx):
    out = fx.synthesis
    assert "ff" not in out and out["sdf"]["eik_grad"] is None
    for key in ("image", "image_raw", "image_depth"):
        assert_matches(key, out[key], fx.io[key], image=True)


def test_synthesis_sdf_outputs(fx):
    sdf = fx.synthesis["sdf"]
    assert sdf["sdf"].shape == (2, 4096, 128, 1) and sdf["delta_x"].shape == (2, 524288, 3)
    n_rays, n_points = fx.io["sdf_first256rays"].shape[1], fx.io["delta_x_head"].shape[1]
    assert_matches("sdf", sdf["sdf"][:, :n_rays], fx.io["sdf_first256rays"])
    assert_matches("sdf_zero", sdf["sdf_zero"][:, :n_rays], fx.io["sdf_zero_first256rays"])
    assert_matches("delta_x", sdf["delta_x"][:, :n_points], fx.io["delta_x_head"])


# --- op3d-only checks ---------------------------------------------------------------------------------------------

def test_lookup_equals_grid_sample_and_differentiates_twice():
    """The hand-written lookup equals grid_sample(border, align_corners=True) per axis group, inside and beyond the
    border, and its gradient can be differentiated again."""
    torch.manual_seed(0)
    planes = torch.randn(2, 3, 12, 5, 7, requires_grad=True)
    points = (torch.rand(2, 300, 3) * 2.6 - 1.3).requires_grad_(True)  # includes points beyond the border
    features = sample_orthoplanes_clamped(planes, points)
    with torch.no_grad():
        fast = sample_orthoplanes_clamped(planes, points, twice_differentiable=False)
    volumes = planes.view(2, 3, 3, 4, 5, 7).permute(0, 2, 3, 1, 4, 5)  # [B, group, C, K, H, W]
    for g, axes in enumerate(GROUP_AXES):
        ref = F.grid_sample(volumes[:, g], points[..., list(axes)].reshape(2, 1, 1, 300, 3), mode="bilinear",
                            padding_mode="border", align_corners=True).reshape(2, 4, 300).transpose(1, 2)
        assert torch.allclose(features[:, g], ref, atol=1e-5), g
        assert torch.allclose(fast[:, g], ref, atol=1e-5), g
    grad, = torch.autograd.grad(features.square().sum(), points, create_graph=True)
    grad.square().sum().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0


def test_pose_euler_code_matches_the_rotation():
    from scipy.spatial.transform import Rotation

    rng = np.random.RandomState(0)
    angles = rng.uniform(-1, 1, size=(2, 24, 3))
    mats = Rotation.from_euler("xyz", angles.reshape(-1, 3)).as_matrix().reshape(2, 24, 3, 3)
    code = pose_euler_code(torch.from_numpy(mats))
    assert code.shape == (2, 69)
    assert np.allclose(code.numpy(), angles[:, 1:].reshape(2, 69), atol=1e-10)


def test_training_step_small(fx):
    """A small conditional generator in training mode: forward with the eikonal gradient, the intended prior and
    eikonal losses (spec 4.7) and the image all backpropagate to the backbone, the deformation network, the decoder
    and the density's beta."""
    torch.manual_seed(0)
    G = ConditionalOrthoPlanesGenerator(
        z_dim=8, c_dim=25, w_dim=512, img_resolution=32, img_channels=3, channel_base=256, channel_max=8,
        mapping_kwargs={"num_layers": 2}, planes=4, sr_num_fp16_res=0, faces=fx.body["faces"], plane_resolution=32,
        rendering_kwargs={"superresolution_module": "op3d.networks.superresolution.SuperresolutionSmall2X",
                          "depth_resolution": 6, "depth_resolution_importance": 6, "c_gen_conditioning_zero": True,
                          "box_warp": 1.0}).train()
    cond = {k: v[:1] for k, v in fx.cond.items()}
    out = G(torch.randn(1, 8), fx.t("c")[:1], cond, neural_rendering_resolution=16)
    sdf = out["sdf"]
    assert out["image"].shape == (1, 3, 32, 32) and sdf["eik_grad"].shape == (1, 16 * 16 * 12, 3)
    loss = (out["image"].square().mean() + (sdf["sdf"] - sdf["sdf_zero"]).square().mean()
            + 1e-3 * (sdf["eik_grad"].square() - 1).square().mean())
    loss.backward()
    for name in ("backbone.synthesis.b4.const", "renderer.deformation_decoder.net_W.0.0.weight",
                 "decoder.net.0.weight", "density_func.beta", "superresolution.block1.torgb.weight"):
        grad = G.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
