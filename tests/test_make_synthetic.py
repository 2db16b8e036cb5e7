"""The synthetic dataset with ground truth (op3d.data.synthetic.make_synthetic_dataset and
train_scripts/make_synthetic.py): repeatable from the seed; readable by ImageFolderDataset; its depth and mask are
render_scene of the stored objects from the stored cameras; objects inside the unit box and whole in the frame; white
background; one-line CLI errors."""

import colorsys
import importlib.util
import math
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from op3d.data import synthetic
from op3d.data.synthetic import (BOX, SCENE_RADIUS, SPHERE, Box, Scene, Sphere, groundtruth_path,
                                 make_synthetic_dataset, object_parameters, random_camera, random_scene, render_objects,
                                 render_scene)
from op3d.training.dataset import ImageFolderDataset

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "train_scripts" / "make_synthetic.py"
spec = importlib.util.spec_from_file_location("make_synthetic_script", SCRIPT)
make_synthetic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_synthetic)

COUNT, RES = 8, 16
GROUNDTRUTH_KEYS = {"depth", "mask", "labels", "kind", "center", "size", "rgb"}


def run(*args):
    return CliRunner().invoke(make_synthetic.main, [str(a) for a in args], catch_exceptions=False)


def zip_members(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def groundtruth(path):
    with np.load(groundtruth_path(path)) as arrays:
        return {key: arrays[key] for key in arrays.files}


def scene_of(truth, i):
    """The one-object Scene that ground-truth item i describes, built by hand from its arrays."""
    center, size, rgb = (tuple(truth[key][i].tolist()) for key in ("center", "size", "rgb"))
    if truth["kind"][i] == SPHERE:
        assert size[0] == size[1] == size[2]
        return Scene(spheres=[Sphere(center, size[0], rgb)])
    return Scene(boxes=[Box(center, size, rgb)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(path of a COUNT-image RES-px zip made with seed 0, its ground truth)."""
    path = tmp_path_factory.mktemp("synthetic") / "synth.zip"
    summary = make_synthetic_dataset(path, COUNT, resolution=RES, seed=0)
    assert summary == {"path": str(path), "groundtruth": str(path.parent / "synth-groundtruth.npz"),
                       "count": COUNT, "resolution": RES}
    return path, groundtruth(path)


def test_same_seed_same_files_other_seed_differs(dataset, tmp_path):
    path, truth = dataset
    make_synthetic_dataset(tmp_path / "again.zip", COUNT, resolution=RES, seed=0)
    make_synthetic_dataset(tmp_path / "other.zip", COUNT, resolution=RES, seed=1)
    assert zip_members(tmp_path / "again.zip") == zip_members(path)
    again, other = groundtruth(tmp_path / "again.zip"), groundtruth(tmp_path / "other.zip")
    assert set(truth) == GROUNDTRUTH_KEYS
    for key in GROUNDTRUTH_KEYS:
        np.testing.assert_array_equal(again[key], truth[key], err_msg=key)
    assert zip_members(tmp_path / "other.zip") != zip_members(path)
    assert not np.array_equal(other["labels"], truth["labels"]) and not np.array_equal(other["depth"], truth["depth"])


def test_dataset_reads_back_with_labels_and_white_background(dataset):
    path, truth = dataset
    data = ImageFolderDataset(path, label_dim=25, resolution=RES)
    assert len(data) == COUNT and data.image_shape == [3, RES, RES]
    assert truth["depth"].shape == (COUNT, RES, RES) and truth["depth"].dtype == np.float32
    assert truth["mask"].dtype == bool and truth["labels"].shape == (COUNT, 25)
    for i in range(COUNT):
        image, label = data[i]
        np.testing.assert_array_equal(label, truth["labels"][i])
        background = ~truth["mask"][i]
        assert (image[:, background] == 255).all() and (truth["depth"][i][background] == 4.0).all()
        assert (image[:, ~background] < 255).any(axis=0).all()  # saturated colours: no foreground pixel is white
    # Whole objects in every frame (SCENE_RADIUS leaves 0.1 of the width free on each side), and both kinds drawn.
    border = np.ones((RES, RES), bool)
    border[1:-1, 1:-1] = False
    assert not truth["mask"][:, border].any() and truth["mask"].any(axis=(1, 2)).all()
    assert set(truth["kind"].tolist()) == {SPHERE, BOX}


def test_groundtruth_is_render_scene_of_stored_objects(dataset):
    path, truth = dataset
    data = ImageFolderDataset(path, label_dim=25)
    for i in (0, int(np.argmax(truth["kind"] == SPHERE)), int(np.argmax(truth["kind"] == BOX)), COUNT - 1):
        out = render_scene(scene_of(truth, i), torch.from_numpy(truth["labels"][i:i + 1]), RES)
        np.testing.assert_array_equal(out["mask"][0, 0].numpy(), truth["mask"][i])
        np.testing.assert_allclose(out["depth"][0, 0].numpy(), truth["depth"][i], rtol=0, atol=1e-6)
        expected = (out["image"][0].numpy() + 1) * 127.5
        assert np.abs(data[i][0] - expected).max() <= 0.5 + 1e-3


def test_render_objects_agrees_with_render_scene_per_item():
    rng = np.random.RandomState(5)
    scenes = [Scene(spheres=[Sphere((0.1, -0.05, 0.0), 0.3, (0.9, 0.2, 0.1))]),
              Scene(boxes=[Box((0.0, 0.1, -0.1), (0.3, 0.1, 0.2), (0.1, 0.8, 0.3))])]
    scenes += [random_scene(rng) for _ in range(2)]
    c = torch.cat([random_camera(rng, yaw_range=1.5, pitch_range=0.8, focal=2.0) for _ in scenes])
    kind, center, size, rgb = zip(*(object_parameters(scene) for scene in scenes))
    out = render_objects(kind, center, size, rgb, c, 24)
    for i, scene in enumerate(scenes):
        single = render_scene(scene, c[i:i + 1], 24)
        assert torch.equal(out["mask"][i:i + 1], single["mask"]) and single["mask"].any()
        assert (out["depth"][i:i + 1] - single["depth"]).abs().max() <= 1e-6
        assert (out["image"][i:i + 1] - single["image"]).abs().max() <= 1e-6
    with pytest.raises(ValueError, match=r"kind: expected 0 \(sphere\) or 1 \(box\), found \[2\]"):
        render_objects([0, 2, 1, 0], center, size, rgb, c, 8)
    with pytest.raises(ValueError, match=r"center: expected shape \[4, 3\]"):
        render_objects(kind, center[:3], size, rgb, c, 8)


def test_random_scene_inside_unit_box_with_saturated_colours():
    rng = np.random.RandomState(0)
    kinds = []
    for _ in range(300):
        scene = random_scene(rng)
        kind, center, size, rgb = object_parameters(scene)
        kinds.append(kind)
        extent = np.abs(center) + (size if kind == BOX else size[0])
        assert (extent <= 0.5).all()  # the unit box the generator's planes span
        assert math.hypot(*center) + (math.hypot(*size) if kind == BOX else size[0]) <= SCENE_RADIUS
        assert all(abs(v) <= 0.02 for v in center)
        assert (0.12 <= size[0] <= 0.2) if kind == SPHERE else all(0.07 <= h <= 0.12 for h in size)
        _, saturation, value = colorsys.rgb_to_hsv(*rgb)
        assert saturation >= 0.7 - 1e-9 and value >= 0.7 - 1e-9
    assert 100 < sum(kinds) < 200


def test_random_camera_depends_on_rng_only():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = [random_camera(np.random.RandomState(seed)) for seed in range(200)]
    assert torch.equal(torch.get_rng_state(), state)  # torch's global RNG is untouched
    torch.manual_seed(123)
    assert torch.equal(random_camera(np.random.RandomState(7)), first[7])
    c = torch.cat(first)
    assert c.shape == (200, 25) and c.dtype == torch.float32
    position, forward = c[:, [3, 7, 11]], c[:, [2, 6, 10]]
    assert torch.allclose(position.norm(dim=1), torch.tensor(2.7), atol=1e-5)
    assert torch.allclose(forward, -position / 2.7, atol=1e-5)  # looks at the origin
    assert (c[:, [16, 20]] == 4.2647).all() and (c[:, [18, 21]] == 0.5).all()
    # The orbit of op3d.cameras: yaw offset u from frontal gives atan2(x, z) = u; pitch offset w gives y = -2 r w / pi.
    yaw = torch.atan2(position[:, 0], position[:, 2])
    pitch = -math.pi * position[:, 1] / (2 * 2.7)
    assert yaw.abs().max() <= 0.6 + 1e-5 and yaw.abs().max() > 0.5 and yaw.min() < 0 < yaw.max()
    assert pitch.abs().max() <= 0.3 + 1e-5 and pitch.abs().max() > 0.25 and pitch.min() < 0 < pitch.max()


def test_failed_groundtruth_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synthetic.np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        make_synthetic_dataset(tmp_path / "synth", 2, resolution=RES)
    assert os.listdir(tmp_path) == []


def test_cli_writes_folder_dataset_and_summary(tmp_path):
    dest = tmp_path / "folder"
    result = run("--outdir", dest, "--count=3", "--resolution=16", "--seed=4")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [
        f"{dest}: 3 images, 16x16, ground truth in {tmp_path / 'folder-groundtruth.npz'}"]
    assert len(ImageFolderDataset(dest, label_dim=25, resolution=16)) == 3
    assert groundtruth(dest)["depth"].shape == (3, 16, 16)


@pytest.mark.parametrize("case", ["resolution", "dest", "groundtruth"])
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, case):
    dest = tmp_path / "synth.zip"
    args = ["--dest", dest, "--count=2"]
    if case == "resolution":
        args.append("--resolution=24")
        message = "Error: --resolution: expected a power of two from 16 to 256, found 24"
    elif case == "dest":
        dest.write_bytes(b"taken")
        message = f"Error: {dest}: expected a new destination"
    else:
        (tmp_path / "synth-groundtruth.npz").write_bytes(b"taken")
        message = f"Error: {tmp_path / 'synth-groundtruth.npz'}: expected a new destination for the ground truth"
    before = sorted(os.listdir(tmp_path))
    result = run(*args)
    assert result.exit_code == 1
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
    assert sorted(os.listdir(tmp_path)) == before


def test_help_is_fast_and_imports_no_torch():
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('tool', {str(SCRIPT)!r}); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    result = run("--help")
    assert result.exit_code == 0 and "--resolution" in result.output and "--outdir" in result.output
