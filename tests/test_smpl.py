"""Tests for op3d.smpl: the procedural SMPL-format body, SMPL model files (.npz and chumpy-era .pkl read without
chumpy), rotations, forward kinematics, the canonical frame of spec 4.2 and (inverse) linear blend skinning.

Reference values come from the conditional fixture's body.npz (see official/shhq_cond_k8/README.txt)."""

import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from op3d.safe_pickle import UnsafePickleError
from op3d.smpl import lbs
from op3d.smpl.body_model import SMPLModel, SMPLModelError, find_smpl_file, load_smpl_model, read_smpl_pickle
from op3d.smpl.procedural import (JOINT_NAMES, PARENTS, REST_JOINTS, _Ch, _importable_as_chumpy, procedural_pose,
                                  procedural_smpl_arrays, procedural_smpl_model, save_smpl_chumpy_pkl, save_smpl_npz)

BODY = "official/shhq_cond_k8/body.npz"
IO = "official/shhq_cond_k8/io.npz"


@pytest.fixture(scope="module")
def body(fixture_file):
    with np.load(fixture_file(BODY)) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def arrays():
    return procedural_smpl_arrays()


@pytest.fixture(scope="module")
def fixture_model():
    """The fixture's body: no shape blend shapes (betas only feed the networks there)."""
    return procedural_smpl_model(shape_blend_shapes=False)


@pytest.fixture(scope="module")
def model(arrays):
    return SMPLModel.from_arrays(arrays)


@pytest.fixture(scope="module")
def model_files(arrays, tmp_path_factory):
    folder = tmp_path_factory.mktemp("smpl")
    save_smpl_npz(arrays, folder / "SMPL_NEUTRAL.npz")
    save_smpl_chumpy_pkl(arrays, folder / "SMPL_NEUTRAL.pkl")
    return folder


def t64(array):
    return torch.from_numpy(np.asarray(array, dtype=np.float64))


def assert_models_equal(a, b):
    for name in ("v_template", "shapedirs", "J_regressor", "weights", "faces"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.parents == b.parents


# ----------------------------------------------------------------------------------------------------------------------
# Procedural body


def test_procedural_body_matches_fixture(body):
    arrays = procedural_smpl_arrays(shape_blend_shapes=False)
    # Not bitwise: the fixture ran numpy 1.26 (other sin/cos/exp rounding); one or two ulps.
    np.testing.assert_allclose(arrays["v_template"], body["template_vertices_f64"], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(arrays["f"], body["faces"])
    np.testing.assert_allclose(arrays["weights"], body["lbs_weights_f64"], rtol=0, atol=2e-15)
    np.testing.assert_array_equal(arrays["weights"].astype(np.float32), body["lbs_weights"])
    np.testing.assert_array_equal(REST_JOINTS, body["joints_f64"])
    np.testing.assert_allclose(arrays["J_regressor"] @ arrays["v_template"], body["joints_f64"], rtol=0, atol=2e-15)
    np.testing.assert_allclose(arrays["J_regressor"].sum(1), 1, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(PARENTS, body["parents"])
    assert JOINT_NAMES == tuple(body["joint_names"])
    assert not arrays["shapedirs"].any() and not arrays["posedirs"].any()


def test_procedural_body_is_closed_and_outward():
    arrays = procedural_smpl_arrays()
    v, f = arrays["v_template"], arrays["f"]
    assert v.shape == (6890, 3) and f.shape == (13776, 3)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert len(np.unique(edges, axis=0)) == len(edges)  # directed edges unique: consistent orientation
    undirected, counts = np.unique(np.sort(edges, 1), axis=0, return_counts=True)
    assert (counts == 2).all() and len(v) - len(undirected) + len(f) == 2  # closed, genus 0
    volume = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert volume == pytest.approx(0.03071296335859043, abs=1e-14)  # value in the fixture README


def test_procedural_pose_matches_fixture(body):
    for b, seed in enumerate(body["pose_seeds"]):
        axis_angle, rotmats, betas = procedural_pose(int(seed))
        np.testing.assert_array_equal(axis_angle, body["pose_axis_angle_f64"][b])
        np.testing.assert_array_equal(rotmats, body["pose_rotmats_f64"][b])
        np.testing.assert_array_equal(betas, body["betas_f64"][b])


def test_procedural_shape_directions_move_the_joints(model):
    betas = torch.zeros(10, dtype=torch.float64)
    torch.testing.assert_close(lbs.shape_blend(model, betas), model.v_template, rtol=0, atol=0)
    betas[0] = 1.0
    shaped = lbs.shape_blend(model, betas)
    offset = (shaped - model.v_template).abs().max()
    assert 0.002 < offset < 0.05
    joints = lbs.regress_joints(model, shaped)
    torch.testing.assert_close(joints, model.J_regressor @ shaped)
    assert (joints - t64(REST_JOINTS)).abs().max() > 1e-4


# ----------------------------------------------------------------------------------------------------------------------
# Rotations


def test_axis_angle_to_matrix_matches_scipy():
    rng = np.random.RandomState(0)
    aa = np.concatenate([rng.randn(64, 3) * 1.5, rng.randn(8, 3) * 1e-5, np.zeros((1, 3)), [[np.pi, 0, 0]]])
    got = lbs.axis_angle_to_matrix(t64(aa)).numpy()
    np.testing.assert_allclose(got, Rotation.from_rotvec(aa).as_matrix(), rtol=0, atol=1e-15)
    got32 = lbs.axis_angle_to_matrix(t64(aa).float()).double().numpy()
    np.testing.assert_allclose(got32, Rotation.from_rotvec(aa).as_matrix(), rtol=0, atol=1e-6)


def test_axis_angle_to_matrix_gradient_is_finite_at_zero():
    for value in ([0.0, 0.0, 0.0], [1e-5, -2e-5, 3e-6], [0.3, -0.2, 0.5]):
        aa = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lbs.axis_angle_to_matrix, (aa,))


def test_matrix_to_axis_angle_round_trip():
    rng = np.random.RandomState(1)
    axes = rng.randn(40, 3)
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 30), [0, 1e-9, 1e-4, np.pi - 1e-7, np.pi, np.pi, 2.0, 3.0, 0.5,
                                                          3.14]])
    aa = axes * angles[:, None]
    rotmats = Rotation.from_rotvec(aa).as_matrix()
    back = lbs.matrix_to_axis_angle(t64(rotmats)).numpy()
    assert (np.linalg.norm(back, axis=1) <= np.pi + 1e-12).all()
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), rotmats, rtol=0, atol=1e-12)
    small = angles < np.pi - 1e-3
    np.testing.assert_allclose(back[small], aa[small], rtol=0, atol=1e-12)
    rot = t64(rotmats).requires_grad_()  # includes exact half turns
    lbs.matrix_to_axis_angle(rot).sum().backward()
    assert torch.isfinite(rot.grad).all()


# ----------------------------------------------------------------------------------------------------------------------
# Forward kinematics, canonical frame, pose conditions


def test_rigid_transforms_match_fixture(body):
    rel, posed_joints = lbs.rigid_transforms(t64(body["pose_rotmats_f64"]), t64(body["joints_f64"]), PARENTS)
    np.testing.assert_allclose(rel.numpy(), body["rel_transforms_f64"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(posed_joints.numpy(), body["posed_joints_f64"], rtol=0, atol=1e-15)


def test_canonical_frame_matches_fixture(body):
    cano = lbs.canonical_frame(t64(body["pose_rotmats_f64"][:, 0]))
    # The fixture's R_x(pi) came from scipy (off-diagonal +-1.2e-16); op3d uses diag(1, -1, -1) exactly.
    np.testing.assert_allclose(cano.numpy(), body["cano_matrix_f64"], rtol=0, atol=5e-16)


@pytest.mark.parametrize("pose_kind", ["rotmats", "axis_angle"])
def test_pose_condition_matches_fixture(body, fixture_model, pose_kind):
    rotmats = t64(body["pose_rotmats_f64"])
    if pose_kind == "axis_angle":  # joints 1..23 from axis-angle; the root R_0 = R_x(pi) R_small as given
        rotmats = torch.cat([rotmats[:, :1], lbs.axis_angle_to_matrix(t64(body["pose_axis_angle_f64"][:, 1:]))], 1)
    cond = lbs.pose_condition(fixture_model, t64(body["betas_f64"]), rotmats)
    assert set(cond) == {"vertices", "fk_matrices", "lbs_weights", "full_pose", "body_shape"}
    np.testing.assert_allclose(cond["fk_matrices"].numpy(), body["fk_matrices_f64"], rtol=0, atol=2e-15)
    np.testing.assert_allclose(cond["vertices"].numpy(), body["posed_vertices_f64"], rtol=0, atol=2e-15)
    np.testing.assert_allclose(cond["full_pose"].numpy(), body["pose_rotmats_f64"], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(cond["body_shape"].numpy(), body["betas_f64"])
    np.testing.assert_allclose(cond["lbs_weights"].numpy(), body["lbs_weights_f64"][None].repeat(2, 0), atol=2e-15)


def test_pose_condition_float32_matches_fixture_inputs(fixture_file, body, fixture_model):
    """The float32 casts are the cond_* arrays fed to the official generator in io.npz."""
    cond = lbs.pose_condition(fixture_model, t64(body["betas_f64"]), t64(body["pose_rotmats_f64"]))
    with np.load(fixture_file(IO)) as io:
        for key, value in cond.items():
            ref = io[f"cond_{key}"]
            assert ref.dtype == np.float32 and ref.shape == tuple(value.shape), key
            np.testing.assert_allclose(value.float().numpy(), ref, rtol=0, atol=1e-7, err_msg=key)


def test_pose_condition_accepts_axis_angle_layouts(model):
    axis_angle, rotmats, betas = procedural_pose(3)
    axis_angle[0] = Rotation.from_matrix(rotmats[0]).as_rotvec()
    ref = lbs.pose_condition(model, t64(betas), t64(rotmats))
    for pose in (t64(axis_angle), t64(axis_angle).reshape(72)):
        got = lbs.pose_condition(model, t64(betas), pose)
        for key in ref:
            torch.testing.assert_close(got[key], ref[key], rtol=0, atol=1e-14)
    got = lbs.pose_condition(model, t64(betas).float(), t64(rotmats).float())
    assert all(value.dtype == torch.float32 for value in got.values())
    with pytest.raises(ValueError, match=r"pose: shape \[23, 3\]"):
        lbs.pose_condition(model, t64(betas), t64(axis_angle[1:]))
    with pytest.raises(ValueError, match="batch shape"):
        lbs.pose_condition(model, t64(betas)[None].repeat(2, 1), t64(rotmats))
    with pytest.raises(ValueError, match="11 values"):
        lbs.pose_condition(model, torch.zeros(11, dtype=torch.float64), t64(rotmats))


def test_pose_condition_is_differentiable(model):
    axis_angle, _, betas = procedural_pose(5)
    aa, shape = t64(axis_angle).requires_grad_(), t64(betas).requires_grad_()
    cond = lbs.pose_condition(model, shape, aa)
    (cond["vertices"].square().sum() + cond["fk_matrices"].sum()).backward()
    assert torch.isfinite(aa.grad).all() and aa.grad.abs().sum() > 0 and shape.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_inverse_skinning_round_trip(model, dtype, tol):
    poses = [procedural_pose(seed) for seed in (11, 12, 13)]
    betas = t64(np.stack([p[2] for p in poses])).to(dtype)
    cond = lbs.pose_condition(model.to(dtype=dtype), betas, t64(np.stack([p[1] for p in poses])).to(dtype))
    rest = lbs.inverse_skin(cond["vertices"], cond["lbs_weights"], cond["fk_matrices"])
    assert (rest - lbs.shape_blend(model.to(dtype=dtype), betas)).abs().max() <= tol
    # The rest mesh really moved: the round trip is not trivially the identity.
    assert (cond["vertices"] - rest).abs().max() > 0.1


def test_blended_inverse_transforms(model, body):
    fk = t64(body["fk_matrices_f64"])
    rigid = torch.nn.functional.one_hot(torch.arange(6890) % 24, 24).double()
    posed = lbs.skin(model.v_template, rigid, fk)
    m = lbs.blended_inverse_transforms(rigid, fk)
    back = (m[..., :3, :3] @ posed[..., None])[..., 0] + m[..., :3, 3]
    torch.testing.assert_close(back, model.v_template.expand_as(back), rtol=0, atol=1e-14)
    m = lbs.blended_inverse_transforms(model.weights, fk)  # smooth weights: close to, not equal to, the inverse
    posed = lbs.skin(model.v_template, model.weights, fk)
    back = (m[..., :3, :3] @ posed[..., None])[..., 0] + m[..., :3, 3]
    assert 1e-4 < (back - model.v_template).abs().max() < 0.05


# ----------------------------------------------------------------------------------------------------------------------
# Model files


def test_npz_and_chumpy_pickle_load_identically(arrays, model_files, model, monkeypatch, tmp_path):
    assert "chumpy" not in sys.modules
    from_npz = load_smpl_model(model_files / "SMPL_NEUTRAL.npz")
    from_pkl = load_smpl_model(model_files / "SMPL_NEUTRAL.pkl")
    assert "chumpy" not in sys.modules
    assert_models_equal(from_npz, model)
    assert_models_equal(from_pkl, model)
    assert from_pkl.source.endswith("SMPL_NEUTRAL.pkl")
    raw = read_smpl_pickle(model_files / "SMPL_NEUTRAL.pkl")
    assert isinstance(raw["J_regressor"], np.ndarray) and raw["bs_style"] == "lbs"
    # The writer's J, read back exactly. (Recomputing it from the arrays as read is not bitwise the same on every
    # host: BLAS may sum the 6890 terms in another order for other memory layouts, e.g. with AVX-512 kernels.)
    np.testing.assert_array_equal(raw["J"], arrays["J_regressor"] @ arrays["v_template"])
    np.testing.assert_allclose(raw["J"], raw["J_regressor"] @ raw["v_template"], rtol=0, atol=1e-15)
    # A folder (or $OP3D_SMPL_DIR) finds SMPL_NEUTRAL.npz first, also in an smplx-style smpl/ subfolder.
    assert find_smpl_file(model_files) == model_files / "SMPL_NEUTRAL.npz"
    monkeypatch.setenv("OP3D_SMPL_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="SMPL_NEUTRAL.pkl"):
        find_smpl_file()
    (tmp_path / "smpl").symlink_to(model_files)
    assert find_smpl_file() == tmp_path / "smpl" / "SMPL_NEUTRAL.npz"
    monkeypatch.delenv("OP3D_SMPL_DIR")
    with pytest.raises(FileNotFoundError, match=r"\$OP3D_SMPL_DIR is not set"):
        find_smpl_file()


def test_python3_protocol_pickles_load(arrays, model, tmp_path):
    """A model re-pickled by Python 3 (bytes via _codecs.encode; protocol 1 objects via copy_reg._reconstructor)."""
    content = {**arrays, "J_regressor": scipy.sparse.csr_matrix(arrays["J_regressor"])}
    del content["posedirs"]  # not read; leaving it out keeps the files small
    for protocol in (1, 2):
        path = tmp_path / f"p{protocol}.pkl"
        with _importable_as_chumpy():
            path.write_bytes(pickle.dumps({**content, "v_template": _Ch(arrays["v_template"])}, protocol=protocol))
        assert_models_equal(load_smpl_model(path), model)


def test_chumpy_reordering_objects_resolve(arrays, model, tmp_path, monkeypatch):
    module = types.ModuleType("chumpy.reordering")

    class Record:
        def __init__(self, **state):
            self.__dict__.update(state)

    for name in ("Select", "Reshape", "Transpose"):
        setattr(module, name, type(name, (Record,), {"__module__": "chumpy.reordering", "__qualname__": name}))
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.reordering", module)
    weights, shapedirs, v = arrays["weights"], arrays["shapedirs"], arrays["v_template"]
    content = {**{key: value for key, value in arrays.items() if key != "posedirs"},
               "weights": module.Select(a=weights.ravel()[::-1].copy(), idxs=np.arange(weights.size)[::-1].copy(),
                                        preferred_shape=weights.shape),
               "shapedirs": module.Reshape(a=shapedirs.ravel(), newshape=shapedirs.shape),
               "v_template": module.Transpose(a=v.T.copy(), axes=(1, 0))}
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(content, protocol=2))
    monkeypatch.delitem(sys.modules, "chumpy.reordering")
    assert_models_equal(load_smpl_model(tmp_path), model)


def _saved_npz(tmp_path, arrays, **changes):
    path = tmp_path / "bad.npz"
    content = {key: value for key, value in {**arrays, "posedirs": None, **changes}.items() if value is not None}
    save_smpl_npz(content, path)
    return path


def test_bad_model_files_give_clear_errors(arrays, tmp_path):
    cases = [({"weights": None}, r"bad\.npz: missing weights"),
             ({"weights": arrays["weights"][:, :23]}, r"weights has shape \[6890, 23\], expected \[6890, 24\]"),
             ({"J_regressor": np.zeros((55, 6890))}, "55 joints, expected 24"),
             ({"shapedirs": arrays["shapedirs"][:, :, 0]},
              r"shapedirs has shape \[6890, 3\], expected \[6890, 3, \*\]"),
             ({"f": arrays["f"] + 1}, r"f must hold triangles of vertex indices in \[0, 6890\), found int64 values "
                                      r"in \[1, 6890\]"),
             ({"kintree_table": arrays["kintree_table"][:, ::-1]}, "kintree_table row 1"),
             ({"v_template": np.full((6890, 3), np.nan)}, "v_template must hold finite numbers")]
    for changes, message in cases:
        with pytest.raises(SMPLModelError, match=message):
            load_smpl_model(_saved_npz(tmp_path, arrays, **changes))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(SMPLModelError, match=r"broken\.npz: cannot read as \.npz"):
        load_smpl_model(tmp_path / "broken.npz")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(SMPLModelError, match=r"list\.pkl: expected a pickled dict of arrays, found list"):
        load_smpl_model(tmp_path / "list.pkl")
    (tmp_path / "cut.pkl").write_bytes((tmp_path / "list.pkl").read_bytes()[:-3])
    with pytest.raises(SMPLModelError, match=r"cut\.pkl: cannot read SMPL pickle"):
        load_smpl_model(tmp_path / "cut.pkl")
    with pytest.raises(FileNotFoundError, match="does not ship SMPL data"):
        find_smpl_file(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"looked in \S+/missing\.pkl\)"):
        find_smpl_file(tmp_path / "missing.pkl")


def test_chumpy_pickle_executes_nothing(tmp_path):
    sentinel = tmp_path / "executed"
    payload = b"cos\nsystem\n(V" + f"touch {sentinel}".encode() + b"\ntR."
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: global 'os\.system' is not allowed"):
        load_smpl_model(tmp_path / "evil.pkl")
    # A chumpy operation other than Ch and the three reorderings is refused, not evaluated.
    (tmp_path / "op.pkl").write_bytes(b"\x80\x02cchumpy.ch_ops\nadd\n)\x81.")
    with pytest.raises(UnsafePickleError, match="chumpy.ch_ops.add"):
        load_smpl_model(tmp_path / "op.pkl")
    assert not sentinel.exists()
