"""op3d.training.dataset: folder and zip datasets read alike; labels, one-hot, max_size, xflip with mirrored cameras;
every DatasetError names the file; DataLoader workers over a zip; write_image_dataset round trips."""

import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from op3d.training.dataset import DatasetError, ImageFolderDataset, mirror_camera_label, write_image_dataset


def random_cameras(n, rng):
    """[n, 25] float32 camera labels: random rotations and positions, normalized intrinsics with skew."""
    labels = []
    for _ in range(n):
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        cam2world = np.eye(4)
        cam2world[:3, :3] = rotation * np.sign(np.linalg.det(rotation))
        cam2world[:3, 3] = rng.normal(size=3) * 2
        intrinsics = np.array([[rng.uniform(2, 5), rng.uniform(-0.1, 0.1), rng.uniform(0.3, 0.7)],
                               [0, rng.uniform(2, 5), rng.uniform(0.3, 0.7)], [0, 0, 1]])
        labels.append(np.concatenate([cam2world.reshape(16), intrinsics.reshape(9)]))
    return np.array(labels, np.float32)


def project(c, point):
    """Normalized pixel (u, v) of world point [3] seen by camera label c [25] (OpenCV axes, cam = R^T (X - t))."""
    c = np.asarray(c, np.float64)
    cam2world, k = c[:16].reshape(4, 4), c[16:].reshape(3, 3)
    x, y, z = cam2world[:3, :3].T @ (np.asarray(point, np.float64) - cam2world[:3, 3])
    return np.array([k[0, 0] * x / z + k[0, 1] * y / z + k[0, 2], k[1, 1] * y / z + k[1, 2]])


def point_in_front(c, rng):
    """A world point [3] in front of camera c [25] (camera z between 1 and 3)."""
    cam2world = np.asarray(c, np.float64)[:16].reshape(4, 4)
    local = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(1, 3)])
    return cam2world[:3, :3] @ local + cam2world[:3, 3]


def random_images(n, size=8, channels=3, seed=0):
    shape = (size, size) if channels == 1 else (size, size, channels)
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.fixture
def labelled(tmp_path):
    """(folder path, zip path, images [5, 8, 8, 3], labels [5, 25]) of one dataset written both ways."""
    images, labels = random_images(5), random_cameras(5, np.random.default_rng(1))
    write_image_dataset(tmp_path / "data", images, labels)
    write_image_dataset(tmp_path / "data.zip", images, labels)
    return tmp_path / "data", tmp_path / "data.zip", images, labels


def write_folder(folder, files, labels="absent"):
    """Write {relative_name: HW/HWC uint8 array or PIL image} and, unless 'absent', dataset.json = labels."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(folder / name)
    if labels != "absent":
        (folder / "dataset.json").write_text(labels if isinstance(labels, str) else json.dumps(labels))
    return folder


def expect_error(*parts, **kwargs):
    """Build ImageFolderDataset(**kwargs) and check it raises a DatasetError whose message has all `parts`."""
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(**kwargs)
    for part in parts:
        assert str(part) in str(info.value)
    return str(info.value)


def test_zip_and_folder_give_identical_items(labelled):
    folder, archive, images, labels = labelled
    for path in (folder, archive):
        data = ImageFolderDataset(path, label_dim=25)
        assert (data.name, len(data), data.image_shape, data.resolution, data.num_channels) == (
            path.stem, 5, [3, 8, 8], 8, 3)
        assert (data.label_shape, data.label_dim, data.has_labels) == ([25], 25, True)
        for i in range(5):
            image, label = data[i]
            assert image.dtype == np.uint8 and label.dtype == np.float32 and image.flags.c_contiguous
            np.testing.assert_array_equal(image, images[i].transpose(2, 0, 1))
            np.testing.assert_array_equal(label, labels[i])
            assert data.image_name(i) == f"img{i:08d}.png"
        data.close()


def test_nested_names_sorted_with_forward_slashes_and_backslash_labels(tmp_path):
    img = random_images(1)[0]
    write_folder(tmp_path / "d", {"b/x.png": img, "a/y.png": img, "c.PNG": img},
                 {"labels": [["b\\x.png", [1.0]], ["a/y.png", [2.0]], ["c.PNG", [3.0]]]})
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    data = ImageFolderDataset(tmp_path / "d")
    assert [data.image_name(i) for i in range(3)] == ["a/y.png", "b/x.png", "c.PNG"]
    assert [data.get_label(i)[0] for i in range(3)] == [2.0, 1.0, 3.0]


def test_integer_labels_become_one_hot_and_are_not_mirrored(tmp_path):
    img = random_images(1)[0]
    write_folder(tmp_path / "d", {"a.png": img, "b.png": img}, {"labels": [["a.png", 24], ["b.png", 2]]})
    data = ImageFolderDataset(tmp_path / "d", xflip=True)
    assert data.label_dim == 25 and len(data) == 4
    np.testing.assert_array_equal(data.get_label(0), np.eye(25, dtype=np.float32)[24])
    np.testing.assert_array_equal(data.get_label(3), np.eye(25, dtype=np.float32)[2])


def test_without_labels(tmp_path, labelled):
    data = ImageFolderDataset(labelled[0], use_labels=False)
    assert data.label_shape == [0] and not data.has_labels
    assert data[0][1].shape == (0,) and data[0][1].dtype == np.float32
    write_folder(tmp_path / "null", {"a.png": random_images(1)[0]}, {"labels": None})
    assert ImageFolderDataset(tmp_path / "null").label_dim == 0
    expect_error("expected 25-float camera labels", "found 0", path=tmp_path / "null", label_dim=25)


def test_grayscale_and_palette_images(tmp_path):
    gray = random_images(1, channels=1)[0]
    write_folder(tmp_path / "gray", {"a.png": gray}, {"labels": None})
    data = ImageFolderDataset(tmp_path / "gray")
    assert data.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(data[0][0][0], gray)
    palette = Image.fromarray(random_images(1)[0]).convert("P")
    write_folder(tmp_path / "pal", {"a.png": palette}, {"labels": None})
    image = ImageFolderDataset(tmp_path / "pal")[0][0]
    np.testing.assert_array_equal(image, np.asarray(palette.convert("RGB")).transpose(2, 0, 1))


def test_path_errors(tmp_path):
    expect_error(tmp_path / "missing", "not found", path=tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    expect_error(tmp_path / "file.txt", "expected a folder or a .zip", path=tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "dataset.json").write_text('{"labels": null}')
    expect_error(tmp_path / "empty", "expected image files", "found none", path=tmp_path / "empty")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    expect_error(tmp_path / "broken.zip", "readable .zip", path=tmp_path / "broken.zip")


def test_label_errors(tmp_path):
    img = random_images(1)[0]
    cases = [  # (dataset.json content, label_dim, message parts)
        ("absent", None, ["camera labels are required", "use_labels=False"]),
        ("{not json", None, ["dataset.json", "expected valid JSON"]),
        ({"labels": 3}, None, ["dataset.json", '"labels": 3']),
        ({"labels": [["a.png"]]}, None, ["dataset.json", "['a.png']"]),
        ({"labels": [["a.png", [1.0]]]}, None, ["dataset.json", "found none for 'b.png'"]),
        ({"labels": [["a.png", [1.0] * 12], ["b.png", [1.0] * 12]]}, 25,
         ["expected 25-float camera labels (16 cam2world + 9 intrinsics), found 12", "'a.png'"]),
        ({"labels": [["a.png", [1.0]], ["b.png", [float("nan")]]]}, None, ["expected finite", "'b.png'"]),
        ({"labels": [["a.png", [1.0]], ["b.png", [1e39]]]}, None, ["expected finite", "'b.png'"]),
        ({"labels": [["a.png", [1.0]], ["b.png", ["x"]]]}, None, ["flat list of numbers", "'b.png'"]),
        ({"labels": [["a.png", [1.0]], ["b.png", [[1.0]]]]}, None, ["flat list of numbers", "'b.png'"]),
        ({"labels": [["a.png", [1.0]], ["b.png", [1.0, 2.0]]]}, None, ["one length", "'a.png'", "'b.png'"]),
        ({"labels": [["a.png", 1], ["b.png", [1.0]]]}, None, ["flat list of numbers", "'a.png'"]),
        ({"labels": [["a.png", 1], ["b.png", -1]]}, None, ["class indices >= 0", "'b.png'"]),
        ({"labels": [["a.png", [1.0]], ["a.png", [2.0]], ["b.png", [1.0]]]}, None, ["'a.png' twice"]),
    ]
    for i, (labels, label_dim, parts) in enumerate(cases):
        folder = write_folder(tmp_path / f"case{i}", {"a.png": img, "b.png": img}, labels)
        expect_error(folder, *parts, path=folder, label_dim=label_dim)


def test_image_errors_name_the_file(tmp_path):
    img = random_images(2)
    expect_error("a.png", "expected square images, found 8x6",
                 path=write_folder(tmp_path / "rect", {"a.png": img[0][:6]}, {"labels": None}))
    expect_error("a.png", "found 4 channel(s)", "RGBA",
                 path=write_folder(tmp_path / "rgba", {"a.png": random_images(1, channels=4)[0]}, {"labels": None}))
    expect_error("a.png", "expected 16x16 images", "found 8x8", resolution=16,
                 path=write_folder(tmp_path / "res", {"a.png": img[0]}, {"labels": None}))
    broken = write_folder(tmp_path / "broken", {}, {"labels": None})
    (broken / "a.png").write_bytes(b"not a png")
    expect_error("a.png", "expected a readable image", path=broken)


def test_mixed_sizes_fail_when_read_and_in_validate(tmp_path):
    folder = write_folder(tmp_path / "mixed", {"a.png": random_images(1)[0], "b.png": random_images(1, 4)[0]},
                          {"labels": None})
    data = ImageFolderDataset(folder)
    data[0]
    for read in (lambda: data[1], data.validate):
        with pytest.raises(DatasetError, match=r"b\.png: expected shape \[3, 8, 8\].*found \[3, 4, 4\]"):
            read()
    (folder / "b.png").unlink()
    ImageFolderDataset(folder).validate(progress=True)


def test_max_size_keeps_a_seeded_sorted_subset(tmp_path):
    write_image_dataset(tmp_path / "d.zip", random_images(20), random_cameras(20, np.random.default_rng(0)))
    names = [f"img{i:08d}.png" for i in range(20)]

    def kept(**kwargs):
        data = ImageFolderDataset(tmp_path / "d.zip", **kwargs)
        return [data.image_name(i) for i in range(len(data))]

    idx = np.arange(20)
    np.random.RandomState(7).shuffle(idx)
    assert kept(max_size=6, random_seed=7) == [names[i] for i in np.sort(idx[:6])]
    assert kept(max_size=6, random_seed=7) == sorted(kept(max_size=6, random_seed=7))
    assert kept(max_size=6, random_seed=8) != kept(max_size=6, random_seed=7)
    assert kept(max_size=20) == kept(max_size=None) == names
    assert kept(max_size=6, random_seed=7, xflip=True) == kept(max_size=6, random_seed=7) * 2
    with pytest.raises(ValueError, match="max_size"):
        ImageFolderDataset(tmp_path / "d.zip", max_size=0)


def test_xflip_mirrors_image_and_camera(labelled):
    data = ImageFolderDataset(labelled[1], xflip=True)
    assert len(data) == 10
    for i in range(5):
        image, label = data[i]
        flipped, mirrored = data[i + 5]
        assert flipped.flags.c_contiguous
        np.testing.assert_array_equal(flipped, image[:, :, ::-1])
        np.testing.assert_array_equal(mirrored, mirror_camera_label(label))
        np.testing.assert_array_equal(mirror_camera_label(mirrored), label)
        assert data.image_name(i + 5) == data.image_name(i)


def test_mirrored_camera_sees_the_mirrored_scene_flipped():
    rng = np.random.default_rng(3)
    flip = np.diag([-1.0, 1.0, 1.0])
    for c in random_cameras(20, rng).astype(np.float64):
        point = point_in_front(c, rng)
        u, v = project(c, point)
        np.testing.assert_allclose(project(mirror_camera_label(c), flip @ point), [1 - u, v], atol=1e-9)
        cam2world = mirror_camera_label(c)[:16].reshape(4, 4)
        np.testing.assert_allclose(cam2world[:3, :3] @ cam2world[:3, :3].T, np.eye(3), atol=1e-6)
        assert np.linalg.det(cam2world[:3, :3]) == pytest.approx(1, abs=1e-6)
    batch = torch.from_numpy(random_cameras(6, rng)).reshape(2, 3, 25)
    mirrored = mirror_camera_label(batch)
    assert isinstance(mirrored, torch.Tensor) and mirrored.shape == batch.shape and mirrored.dtype == torch.float32
    np.testing.assert_allclose(mirrored.numpy(), mirror_camera_label(batch.numpy()), atol=1e-7)
    torch.testing.assert_close(mirror_camera_label(mirrored), batch)
    with pytest.raises(ValueError, match="25"):
        mirror_camera_label(np.zeros(16))


def test_dataloader_workers_over_zip(labelled):
    data = ImageFolderDataset(labelled[1], xflip=True)
    data[0]  # the parent process now holds an open zip handle; it must not be pickled nor shared
    assert pickle.loads(pickle.dumps(data))._files._zipfile is None
    loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=2)
    images, labels = map(torch.cat, zip(*loader))
    assert images.shape == (10, 3, 8, 8) and labels.shape == (10, 25)
    for i in range(10):
        np.testing.assert_array_equal(images[i].numpy(), data[i][0])
        np.testing.assert_array_equal(labels[i].numpy(), data[i][1])
    data.close()


def test_label_std_over_kept_images(labelled):
    labels = labelled[3]
    data = ImageFolderDataset(labelled[1], xflip=True)
    std = data.get_label_std()
    assert std.dtype == np.float32 and std.shape == (25,)
    np.testing.assert_allclose(std, labels.std(axis=0), rtol=1e-5)
    subset = ImageFolderDataset(labelled[1], max_size=3, random_seed=1)
    kept = [int(subset.image_name(i)[3:11]) for i in range(3)]
    np.testing.assert_allclose(subset.get_label_std(), labels[kept].std(axis=0), rtol=1e-5)


def test_write_image_dataset_options_and_errors(tmp_path):
    gray = random_images(2, channels=1)
    count = write_image_dataset(tmp_path / "g", (image for image in gray), np.array([0, 2]), names=["x/a.png", "b.png"])
    data = ImageFolderDataset(tmp_path / "g")
    assert count == 2 and data.image_shape == [1, 8, 8] and data.label_dim == 3
    assert [data.image_name(i) for i in range(2)] == ["b.png", "x/a.png"]
    write_image_dataset(tmp_path / "n.zip", gray)
    with zipfile.ZipFile(tmp_path / "n.zip") as archive:
        assert json.loads(archive.read("dataset.json")) == {"labels": None}
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        write_image_dataset(tmp_path / "g", gray)
    bad_calls = [dict(images=gray, names=["a.jpg", "b.png"]), dict(images=gray, names=["a.png", "a.png"]),
                 dict(images=gray, names=["a.png"]), dict(images=gray, labels=np.zeros([3, 25])),
                 dict(images=gray.astype(np.float32)), dict(images=random_images(2, channels=4))]
    for i, kwargs in enumerate(bad_calls):
        with pytest.raises(ValueError):
            write_image_dataset(tmp_path / f"bad{i}.zip", **kwargs)
        assert not list(tmp_path.glob(f"bad{i}*"))
