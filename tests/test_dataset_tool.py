"""train_scripts/dataset_tool.py: non-square photos + camera labels -> a dataset ImageFolderDataset reads, with the
intrinsics of the center crop adjusted (checked by projecting 3D points); bad inputs give one-line errors and write
nothing; --help imports no torch."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from op3d.training.dataset import ImageFolderDataset, write_image_dataset
from test_dataset import point_in_front, project, random_cameras, random_images

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "train_scripts" / "dataset_tool.py"
spec = importlib.util.spec_from_file_location("dataset_tool_script", SCRIPT)
dataset_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dataset_tool)

SIZES = {"a.png": (48, 32), "sub/b.jpg": (30, 40), "c.png": (20, 20)}  # name: (width, height)


def run(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def photos(tmp_path):
    """(source folder of non-square images, {name: HWC uint8 pixels}, labels JSON path {name: 25 floats})."""
    source, pixels = tmp_path / "photos", {}
    rng = np.random.default_rng(0)
    for name, (width, height) in SIZES.items():
        pixels[name] = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[name]).save(source / name, quality=100)
        pixels[name] = np.asarray(Image.open(source / name).convert("RGB"))  # what the decoder sees (jpeg is lossy)
    labels = dict(zip(SIZES, random_cameras(len(SIZES), rng).tolist()))
    labels_path = tmp_path / "cameras.json"
    labels_path.write_text(json.dumps(labels))
    return source, pixels, labels_path


def test_center_crop_resize_to_zip_adjusts_intrinsics(photos, tmp_path):
    source, pixels, labels_path = photos
    result = run("--source", source, "--labels", labels_path, "--dest", tmp_path / "out.zip",
                 "--transform=center-crop", "--resolution=16")
    assert result.exit_code == 0, result.output
    assert "3 images, 16x16, 3 channel(s), camera labels: yes" in result.output
    data = ImageFolderDataset(tmp_path / "out.zip", label_dim=25, resolution=16)
    data.validate()
    labels = json.loads(labels_path.read_text())
    rng = np.random.default_rng(1)
    for i, name in enumerate(sorted(SIZES)):  # output images follow the source's name order
        width, height = SIZES[name]
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        original, cropped = np.array(labels[name]), data.get_label(i)
        np.testing.assert_array_equal(cropped[:16], np.float32(original[:16]))
        for _ in range(5):
            point = point_in_front(original, rng)
            pixel = project(original, point) * [width, height] - [left, top]
            np.testing.assert_allclose(project(cropped, point) * side, pixel, rtol=1e-5, atol=1e-5)


def test_center_crop_keeps_the_centre_pixels(photos, tmp_path):
    source, pixels, labels_path = photos
    (tmp_path / "out").mkdir()  # an empty folder may be replaced
    assert run("--source", source, "--labels", labels_path, "--dest", tmp_path / "out", "--transform=center-crop",
               "--max-images=1").exit_code == 0
    data = ImageFolderDataset(tmp_path / "out", label_dim=25)
    assert len(data) == 1 and data.resolution == 32
    image = data[0][0].transpose(1, 2, 0)
    np.testing.assert_array_equal(image, pixels["a.png"][:, 8:40])


def test_square_source_with_dataset_json_and_no_labels(tmp_path):
    images, labels = random_images(3, size=8), random_cameras(3, np.random.default_rng(2))
    write_image_dataset(tmp_path / "src.zip", images, labels)
    assert run("--source", tmp_path / "src.zip", "--dest", tmp_path / "copy.zip").exit_code == 0
    copy = ImageFolderDataset(tmp_path / "copy.zip", label_dim=25)
    for i in range(3):
        np.testing.assert_array_equal(copy[i][0], images[i].transpose(2, 0, 1))
        np.testing.assert_array_equal(copy[i][1], labels[i])
    result = run("--source", tmp_path / "src.zip", "--dest", tmp_path / "plain", "--no-labels")
    assert result.exit_code == 0 and "camera labels: no" in result.output
    assert ImageFolderDataset(tmp_path / "plain").label_dim == 0


def test_errors_are_one_line_and_write_nothing(photos, tmp_path):
    source, _, labels_path = photos
    (tmp_path / "taken.zip").write_bytes(b"x")
    (tmp_path / "short.json").write_text(json.dumps({name: [1.0] * 12 for name in SIZES}))
    cases = [
        (["--source", tmp_path / "nope", "--labels", labels_path], "not found"),
        (["--source", source, "--labels", labels_path, "--dest", tmp_path / "taken.zip"], "refusing to overwrite"),
        (["--source", source, "--transform=center-crop"], "camera labels are required"),
        (["--source", source, "--labels", tmp_path / "none.json"], "labels file not found"),
        (["--source", source, "--labels", tmp_path / "short.json"], "expected 25-float camera labels"),
        (["--source", source, "--labels", labels_path], "a.png: expected a square image, found 48x32"),
        (["--source", source, "--labels", labels_path, "--transform=center-crop"], "pass a resolution"),
        (["--source", source, "--labels", labels_path, "--no-labels"], "at most one"),
    ]
    for args, message in cases:
        dest = [] if "--dest" in args else ["--dest", tmp_path / "new.zip"]
        result = run(*args, *dest)
        assert result.exit_code != 0 and message in result.output, result.output
        assert result.output.strip().startswith("Error:") and result.output.strip().count("\n") == 0
        assert not list(tmp_path.glob("new*"))


def test_undecodable_image_while_writing_leaves_no_output(photos, tmp_path):
    source, _, labels_path = photos
    data = (source / "c.png").read_bytes()
    (source / "c.png").write_bytes(data[:100])  # header readable, pixels truncated
    result = run("--source", source, "--labels", labels_path, "--dest", tmp_path / "new", "--transform=center-crop",
                 "--resolution=8")
    assert result.exit_code != 0 and "c.png: expected a readable image" in result.output
    assert not list(tmp_path.glob("new*"))


def test_help_is_fast_and_imports_no_torch():
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('tool', {str(SCRIPT)!r}); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    result = run("--help")
    assert result.exit_code == 0 and "--transform" in result.output
