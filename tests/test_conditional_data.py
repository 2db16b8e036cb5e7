"""Conditional (SMPL) data: synthetic stock-PARE output of the procedural body -> export_pose / export_data (click entry
points) -> ConditionalImageDataset; the released SHHQ-style SMPL-output pickles; joblib pickles read without joblib's
loader; the camera label from the root rotation; clear errors for bad inputs."""

import importlib.util
import pathlib
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from op3d.data.pare_export import camera_label_from_root
from op3d.safe_pickle import UnsafePickleError
from op3d.smpl import lbs
from op3d.smpl.body_model import SMPLModel
from op3d.smpl.pose_files import (POSE_CONDITION_KEYS, PoseFileError, load_pose_condition, pose_record,
                                  read_pose_file, save_pose_condition)
from op3d.smpl.procedural import procedural_pose, procedural_smpl_arrays, save_smpl_npz
from op3d.training.dataset import DatasetError, write_image_dataset
from op3d.training.dataset_cond import ConditionalImageDataset, collate_conditional

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "train_scripts"
STEMS = ("photo_a", "photo_b", "photo_c")
SEEDS = ((11, 5), (12,), (13,))  # pose seeds of the people in each PARE file
R_X_PI = np.diag([1.0, -1.0, -1.0])


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_pose_script, export_data_script = load_script("export_pose"), load_script("export_data")


def run(script, *args):
    return CliRunner().invoke(script.main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def no_smpl_dir(monkeypatch):
    monkeypatch.delenv("OP3D_SMPL_DIR", raising=False)


@pytest.fixture(scope="module")
def model():
    return SMPLModel.from_arrays(procedural_smpl_arrays(), "<procedural body>")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.npz"
    save_smpl_npz(procedural_smpl_arrays(), path)
    return path


def person_pose(seed):
    """(rotmats [24, 3, 3], betas [10]) float32, as PARE would give them."""
    _, rotmats, betas = procedural_pose(seed)
    return rotmats.astype(np.float32), betas.astype(np.float32)


def reference_condition(model, seed):
    """Independent composition of spec 4.2 in float64: posed vertices (camera frame, no pose blend shapes) mapped by
    cano = R_x(pi) R_root^T."""
    rotmats, betas = (torch.from_numpy(a.astype(np.float64)) for a in person_pose(seed))
    v_shaped = lbs.shape_blend(model, betas)
    rel, _ = lbs.rigid_transforms(rotmats, lbs.regress_joints(model, v_shaped), model.parents)
    posed = lbs.skin(v_shaped, model.weights, rel)
    cano = torch.from_numpy(R_X_PI) @ rotmats[0].T
    return {"vertices": posed @ cano.T, "fk_matrices": rel, "v_shaped": v_shaped, "rotmats": rotmats, "betas": betas,
            "cano": cano}


def stock_pare_output(seeds):
    """A stock PARE image-folder result for the people of `seeds` (arrays with a leading person axis)."""
    poses = [person_pose(seed) for seed in seeds]
    n = len(seeds)
    return {"pred_pose": np.stack([p[0] for p in poses]), "pred_shape": np.stack([p[1] for p in poses]),
            "pred_cam": np.tile(np.float32([0.9, 0.0, 0.1]), (n, 1)),
            "orig_cam": np.tile(np.float32([0.5, 0.5, 0.0, 0.1]), (n, 1)),
            "smpl_vertices": np.zeros((n, 6890, 3), np.float32), "smpl_joints3d": np.zeros((n, 49, 3), np.float32),
            "smpl_joints2d": np.zeros((n, 49, 2), np.float32), "bboxes": np.tile(np.float32([16, 16, 30, 30]), (n, 1)),
            "frame_ids": np.zeros(n, np.int64)}


def dump(obj, path, use_joblib):
    if use_joblib:
        joblib = pytest.importorskip("joblib")
        joblib.dump(obj, path)
    else:
        with open(path, "wb") as file:
            pickle.dump(obj, file)


@pytest.fixture(scope="module")
def pare_inputs(tmp_path_factory):
    """(image folder with 32x32 PNGs, PARE folder with one <stem>.pkl per image: joblib if installed, else pickle)."""
    root = tmp_path_factory.mktemp("pare")
    images, pare = root / "images", root / "pare"
    images.mkdir()
    pare.mkdir()
    has_joblib = importlib.util.find_spec("joblib") is not None
    rng = np.random.default_rng(0)
    for i, (stem, seeds) in enumerate(zip(STEMS, SEEDS)):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{stem}.png")
        dump(stock_pare_output(seeds), pare / f"{stem}.pkl", use_joblib=has_joblib and i != 1)
    return images, pare


def assert_condition(cond, ref, tensor=False):
    shapes = {"vertices": (6890, 3), "fk_matrices": (24, 4, 4), "lbs_weights": (6890, 24), "full_pose": (24, 3, 3),
              "body_shape": (10,)}
    assert sorted(cond) == sorted(POSE_CONDITION_KEYS)
    for key, shape in shapes.items():
        assert tuple(cond[key].shape) == shape, key
        assert cond[key].dtype == (torch.float32 if tensor else np.float32), key
    as64 = {key: np.asarray(value, np.float64) for key, value in cond.items()}
    assert np.abs(as64["vertices"] - ref["vertices"].numpy()).max() <= 1e-5
    cano_fk = (ref["cano"] @ ref["fk_matrices"][..., :3, :3]).numpy()
    np.testing.assert_allclose(as64["fk_matrices"][..., :3, :3], cano_fk, atol=1e-6)
    np.testing.assert_allclose(as64["fk_matrices"][0, :3, :3], R_X_PI, atol=1e-6)
    np.testing.assert_allclose(as64["full_pose"], ref["rotmats"].numpy(), atol=1e-7)
    np.testing.assert_allclose(as64["body_shape"], ref["betas"].numpy(), atol=1e-7)


def test_export_pose_stock_pare(pare_inputs, model, model_file, tmp_path):
    _, pare = pare_inputs
    result = run(export_pose_script, "--smpl_folder", pare, "--output_folder", tmp_path / "poses",
                 "--smpl-model", model_file)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "poses").iterdir()) == [f"{s}.pickle" for s in STEMS]
    for stem, seeds in zip(STEMS, SEEDS):
        with open(tmp_path / "poses" / f"{stem}.pickle", "rb") as file:  # the official loader's plain pickle.load
            raw = pickle.load(file)
        assert sorted(raw) == sorted(POSE_CONDITION_KEYS) and all(type(v) is np.ndarray for v in raw.values())
        assert_condition(raw, reference_condition(model, seeds[0]))

    # second person, first file only
    result = run(export_pose_script, "--smpl_folder", pare, "--output_folder", tmp_path / "second",
                 "--smpl-model", model_file, "--person", 1, "--n_poses", 1)
    assert result.exit_code == 0, result.output
    assert_condition(load_pose_condition(tmp_path / "second" / f"{STEMS[0]}.pickle"), reference_condition(model, 5))


def check_camera_label(label, root, radius=2.7, focal=4.2647):
    cam2world = np.asarray(label[:16], np.float64).reshape(4, 4)
    rotation, position = cam2world[:3, :3], cam2world[:3, 3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
    assert abs(np.linalg.det(rotation) - 1) < 1e-6
    np.testing.assert_allclose(cam2world[3], [0, 0, 0, 1])
    assert abs(np.linalg.norm(position) - radius) < 1e-5
    np.testing.assert_allclose(rotation[:, 2], -position / radius, atol=1e-6)  # looks at the origin
    world2cam = np.eye(4)
    world2cam[:3, :3] = root
    world2cam[2, 3] = radius  # T @ R
    np.testing.assert_allclose(cam2world, np.linalg.inv(world2cam), atol=1e-5)
    np.testing.assert_allclose(label[16:], [focal, 0, 0.5, 0, focal, 0.5, 0, 0, 1], atol=1e-6)


@pytest.mark.parametrize("dest", ["dataset", "dataset.zip"])
def test_export_data_makes_conditional_dataset(pare_inputs, model, model_file, tmp_path, dest):
    images, pare = pare_inputs
    result = run(export_data_script, "--image_folder", images, "--smpl_folder", pare, "--output_folder",
                 tmp_path / dest, "--smpl-model", model_file, "--tune", "--variant", "x")
    assert result.exit_code == 0, result.output
    data = ConditionalImageDataset(tmp_path / dest, label_dim=25)
    assert len(data) == 3 and data.resolution == 32
    assert [data.image_name(i) for i in range(3)] == ["000000.png", "000001.png", "000002.png"]
    for i, seeds in enumerate(SEEDS):
        image, label, cond = data[i]
        np.testing.assert_array_equal(image, np.asarray(Image.open(images / f"{STEMS[i]}.png")).transpose(2, 0, 1))
        ref = reference_condition(model, seeds[0])
        assert_condition(cond, ref, tensor=True)
        check_camera_label(label, ref["rotmats"][0].numpy())
        assert label[11] > 2.6  # an upright person (root R_x(pi) R_small): the camera sits near +z
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=collate_conditional)
    images_b, labels_b, cond_b = next(iter(loader))
    assert images_b.shape == (2, 3, 32, 32) and images_b.dtype == torch.uint8 and labels_b.shape == (2, 25)
    assert {key: tuple(value.shape) for key, value in cond_b.items()} == {
        "vertices": (2, 6890, 3), "fk_matrices": (2, 24, 4, 4), "lbs_weights": (2, 6890, 24),
        "full_pose": (2, 24, 3, 3), "body_shape": (2, 10)}


def test_camera_label_uses_the_rotation_not_euler_angles():
    axis_angle = torch.tensor([2.8, 0.4, -0.3], dtype=torch.float64)
    root = lbs.axis_angle_to_matrix(axis_angle).numpy()
    label = camera_label_from_root(root, 2.7, 4.2647)
    check_camera_label(label, root)
    # the official misreading (XYZ Euler angles) is a different rotation
    from scipy.spatial.transform import Rotation
    euler = Rotation.from_euler("XYZ", axis_angle.numpy()).as_matrix()
    assert np.abs(np.asarray(label[:16]).reshape(4, 4)[:3, :3] - euler.T).max() > 0.1


def smpl_output(model, seed):
    """What an SMPL forward with the intermediate LBS quantities returns (the released SHHQ-40K-SMPL pickles): batched
    arrays, raw relative transforms, posed vertices with translation, joints_shaped, unbatched lbs_weights, no pose."""
    ref = reference_condition(model, seed)
    rotmats, betas = ref["rotmats"].numpy(), ref["betas"].numpy()
    joints = lbs.regress_joints(model, ref["v_shaped"]).numpy()
    posed = (lbs.skin(ref["v_shaped"], model.weights, ref["fk_matrices"]).numpy() + [0.1, 0.2, 5.0])
    return ref, {
        "vertices": posed[None].astype(np.float32), "tpose_vertices": ref["v_shaped"].numpy()[None].astype(np.float32),
        "joints": np.zeros((1, 45, 3), np.float32), "joints_shaped": joints[None].astype(np.float32),
        "fk_matrices": ref["fk_matrices"].numpy()[None].astype(np.float32),
        "lbs_weights": model.weights.numpy().astype(np.float32),
        "global_orient": rotmats[None, :1].astype(np.float32), "body_pose": rotmats[None, 1:].astype(np.float32),
        "full_pose": rotmats[None].astype(np.float32), "betas": betas[None].astype(np.float32),
        "name": f"{seed:06d}"}


def conditional_folder(root, contents):
    """A 16x16 dataset with camera labels and processed_pose_cond/<stem>.pickle = each of `contents`."""
    labels = np.tile(camera_label_from_root(R_X_PI, 2.7, 4.2647), (len(contents), 1))
    write_image_dataset(root, np.zeros((len(contents), 16, 16, 3), np.uint8), labels)
    (root / "processed_pose_cond").mkdir()
    for i, content in enumerate(contents):
        with open(root / "processed_pose_cond" / f"img{i:08d}.pickle", "wb") as file:
            pickle.dump(content, file)
    return root


def test_shhq_style_smpl_output_pickles(model, tmp_path):
    ref, shhq = smpl_output(model, 12)
    assert "pose" not in shhq and "joints_shaped" in shhq
    variant = {key: shhq[key] for key in ("tpose_vertices", "fk_matrices", "lbs_weights", "betas")}
    variant["global_orient"] = lbs.matrix_to_axis_angle(ref["rotmats"][:1]).numpy()[None]  # axis-angle [1, 1, 3]
    variant["body_pose"] = lbs.matrix_to_axis_angle(ref["rotmats"][1:]).numpy().reshape(1, 69)
    data = conditional_folder(tmp_path / "shhq", [shhq, variant])
    dataset = ConditionalImageDataset(data)
    for i in range(2):
        assert_condition(dataset.get_conditions(i), ref, tensor=True)

    # the five keys already in the canonical frame (e.g. op3d's own files) are kept as they are
    canonical = {key: value.numpy() for key, value in dataset.get_conditions(0).items()}
    save_pose_condition(canonical, tmp_path / "c.npz")
    assert all(np.array_equal(v, canonical[k]) for k, v in load_pose_condition(tmp_path / "c.npz").items())


def test_pose_file_reader(tmp_path):
    content = {"a": np.arange(6.0).reshape(2, 3), "b": [1, 2.5], "c": "text", "d": torch.ones(2)}
    path = tmp_path / "x.pickle"
    with open(path, "wb") as file:
        pickle.dump(content, file, protocol=2)
    loaded = read_pose_file(path)
    np.testing.assert_array_equal(loaded["a"], content["a"])
    assert loaded["b"] == [1, 2.5] and loaded["c"] == "text" and torch.equal(loaded["d"], content["d"])

    joblib = pytest.importorskip("joblib")
    arrays = {"f": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "big_endian": np.arange(5, dtype=">i4"),
              "empty": np.zeros((0, 3), np.float32)}
    for compress in (0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3)):
        joblib.dump(arrays, tmp_path / "j.pkl", compress=compress)
        loaded = read_pose_file(tmp_path / "j.pkl")
        for key, value in arrays.items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype.isnative
    joblib.dump({"objects": np.array([1, "a"], dtype=object)}, tmp_path / "o.pkl")
    with pytest.raises(UnsafePickleError, match="o.pkl.*dtype object"):
        read_pose_file(tmp_path / "o.pkl")


class Exploit:
    """Pickles as a call that creates the file `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_bad_inputs(model, model_file, pare_inputs, tmp_path):
    images, pare = pare_inputs
    # stock PARE without a body model: a clear error, nothing written
    result = CliRunner().invoke(export_pose_script.main, ["--smpl_folder", str(pare), "--output_folder",
                                                          str(tmp_path / "out")])
    assert result.exit_code == 1 and "--smpl-model" in result.output and "photo_a.pkl" in result.output
    assert not (tmp_path / "out").exists()
    result = run(export_pose_script, "--smpl_folder", pare, "--output_folder", tmp_path / "out",
                 "--smpl-model", model_file, "--person", 2)
    assert result.exit_code == 1 and "person index 2" in result.output and not (tmp_path / "out").exists()

    # images and PARE files that do not pair up
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for stem in STEMS[:2]:
        (fewer / f"{stem}.png").write_bytes((images / f"{stem}.png").read_bytes())
    result = run(export_data_script, "--image_folder", fewer, "--smpl_folder", pare, "--output_folder",
                 tmp_path / "d", "--smpl-model", model_file)
    assert result.exit_code == 1 and "2 images" in result.output and "3 PARE files" in result.output
    assert "'photo_c'" in result.output and not (tmp_path / "d").exists()
    wide = tmp_path / "wide"
    wide.mkdir()
    for stem in STEMS:
        Image.new("RGB", (32, 16)).save(wide / f"{stem}.png")
    result = run(export_data_script, "--image_folder", wide, "--smpl_folder", pare, "--output_folder",
                 tmp_path / "d", "--smpl-model", model_file)
    assert result.exit_code == 1 and "square" in result.output and not (tmp_path / "d").exists()

    # pose files missing keys, of the wrong shape, unsafe, or absent
    _, shhq = smpl_output(model, 11)
    no_tpose = {k: v for k, v in shhq.items() if k != "tpose_vertices"}
    with pytest.raises(DatasetError, match=r"img00000000\.pickle.*missing tpose_vertices"):
        ConditionalImageDataset(conditional_folder(tmp_path / "a", [no_tpose]))
    no_betas = {k: v for k, v in shhq.items() if k != "betas"}
    with pytest.raises(DatasetError, match=r"img00000000\.pickle.*missing body_shape \(or betas"):
        ConditionalImageDataset(conditional_folder(tmp_path / "b", [no_betas]))
    with pytest.raises(DatasetError, match="stock PARE output needs train_scripts/export_pose.py"):
        ConditionalImageDataset(conditional_folder(tmp_path / "c", [stock_pare_output((11,))]))
    bad_shape = dict(shhq, fk_matrices=np.zeros((24, 3, 4)))
    with pytest.raises(DatasetError, match=r"'fk_matrices' has shape \[24, 3, 4\]"):
        ConditionalImageDataset(conditional_folder(tmp_path / "e", [bad_shape]))
    with pytest.raises(DatasetError, match="not allowed in a pose file"):
        ConditionalImageDataset(conditional_folder(tmp_path / "f", [{"x": Exploit(tmp_path / "marker")}]))
    assert not (tmp_path / "marker").exists()
    data = conditional_folder(tmp_path / "g", [shhq, shhq])
    (data / "processed_pose_cond" / "img00000001.pickle").unlink()
    with pytest.raises(DatasetError, match=r"pose file img00000001\.pickle .* 'img00000001\.png'"):
        ConditionalImageDataset(data)
    with pytest.raises(DatasetError, match="xflip"):
        ConditionalImageDataset(conditional_folder(tmp_path / "h", [shhq]), xflip=True)
    with pytest.raises(DatasetError, match="pose-condition folder not found"):
        ConditionalImageDataset(tmp_path / "h", pose_dir=tmp_path / "nowhere")
    with pytest.raises(PoseFileError, match="neither the canonical"):
        load_pose_condition_from(dict(shhq, full_pose=np.eye(3)[None].repeat(24, 0)), tmp_path / "z.pickle")


def load_pose_condition_from(content, path):
    with open(path, "wb") as file:
        pickle.dump(content, file)
    return load_pose_condition(path)


def test_pose_record_people_and_tracks():
    pare = stock_pare_output((11, 12))
    assert np.array_equal(pose_record(pare, "f", person=1)["pred_pose"], pare["pred_pose"][1])
    video = {7: {"pose": np.zeros((1, 72)), "betas": np.zeros((1, 10))}, 9: {"pose": np.ones((1, 72)),
                                                                            "betas": np.zeros((1, 10))}}
    assert pose_record(video, "v", person=1)["pose"].shape == (72,) and pose_record(video, "v", 1)["pose"][0] == 1
    with pytest.raises(PoseFileError, match=r"v: 2 tracks.*person index 2"):
        pose_record(video, "v", person=2)
    with pytest.raises(PoseFileError, match="expected a dict"):
        pose_record([1, 2], "l")
