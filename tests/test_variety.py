"""Variety metrics (op3d.metrics.variety) on exact renders of op3d's synthetic data: the box/sphere classifier against
the ground-truth kinds, and a collapsed set (one colour, one kind, one size) scored against the data."""

import colorsys

import numpy as np
import pytest
import torch

from op3d.data import synthetic
from op3d.metrics import variety


def _renders(count: int, seed: int, depth_resolution: int = 32, collapsed: bool = False):
    """(image [N, 3, 32, 32], depth [N, 1, r, r], c [N, 25], true kinds [N]) of the synthetic data's random objects
    (or, with collapsed, of one blue sphere of radius 0.16 for all), from the data's random cameras."""
    rng = np.random.RandomState(seed)
    objects, cameras = [], []
    for _ in range(count):
        objects.append(synthetic.object_parameters(synthetic.random_scene(rng)))
        cameras.append(synthetic.random_camera(rng))
    kind, center, size, rgb = (np.array(v) for v in zip(*objects))
    if collapsed:
        kind, center = np.zeros_like(kind), np.zeros_like(center)
        size, rgb = np.full_like(size, 0.16), np.tile([0.1, 0.2, 0.9], (count, 1))
    c = torch.cat(cameras)
    image = synthetic.render_objects(kind, center, size, rgb, c, 32)["image"]
    depth = synthetic.render_objects(kind, center, size, rgb, c, depth_resolution)["depth"]
    return image, depth, c, kind


@pytest.mark.parametrize("depth_resolution", [32, 16])
def test_box_sphere_classifier_on_ground_truth(depth_resolution):
    # 16 px is the tiny generator's depth resolution (neural rendering at half the 32 px image).
    image, depth, c, kind = _renders(48, seed=1, depth_resolution=depth_resolution)
    stats = variety.image_statistics(image, depth, c)
    assert 0.25 < kind.mean() < 0.75
    assert (stats["box"] == kind).mean() >= 0.95  # 400 images of the demo data: 100% at 32 and at 16 px
    assert np.median(stats["box_residual"][kind == 1]) < 0.5 * np.median(stats["sphere_residual"][kind == 1])
    assert np.median(stats["sphere_residual"][kind == 0]) < 0.5 * np.median(stats["box_residual"][kind == 0])


def test_hue_and_size_follow_the_ground_truth():
    image, depth, c, _ = _renders(24, seed=2)
    stats = variety.image_statistics(image, depth, c)
    rng = np.random.RandomState(2)
    hues, sizes = [], []
    for _ in range(24):
        scene = synthetic.random_scene(rng)
        synthetic.random_camera(rng)
        kind, _, size, rgb = synthetic.object_parameters(scene)
        hues.append(colorsys.rgb_to_hsv(*rgb)[0])
        sizes.append(size[0] if kind == synthetic.SPHERE else np.prod(size) ** (1 / 3))
    error = np.abs(stats["hue"] - np.array(hues))
    assert np.minimum(error, 1 - error).max() < 1e-3  # shading scales the albedo, which keeps its hue
    assert np.corrcoef(stats["size"], sizes)[0, 1] > 0.8


def test_collapsed_set_scores_far_from_the_data():
    real = variety.image_statistics(*_renders(64, seed=3)[:3])
    other = variety.image_statistics(*_renders(64, seed=4, depth_resolution=16)[:3])
    collapsed = variety.image_statistics(*_renders(64, seed=4, depth_resolution=16, collapsed=True)[:3])
    same = variety.compare(other, real)
    far = variety.compare(collapsed, real)
    assert abs(same["box_fraction_fake"] - same["box_fraction_real"]) < 0.2
    assert same["hue_distance"] < 0.35 and same["hue_coverage"] >= 0.8 and same["size_distance"] < 0.4
    assert far["box_fraction_fake"] == 0
    assert far["hue_distance"] > 0.8 and far["hue_coverage"] <= 0.2 and far["size_distance"] > 0.6
    assert far["size_std_fake"] < 0.1 * far["size_std_real"]
    # exact renders are explained by their primitive; depth that is no box and no sphere is not, whatever its kind
    image, depth, c, _ = _renders(64, seed=4, depth_resolution=16)
    ragged = depth + 0.05 * torch.randn(depth.shape, generator=torch.Generator().manual_seed(0))
    junk = variety.compare(variety.image_statistics(image, ragged, c), real)
    assert same["fit_residual_fake"] < 0.003 and same["fit_residual_real"] < 0.003  # measured 0.0009 and 0.0009
    assert junk["fit_residual_fake"] > 5 * same["fit_residual_fake"]  # measured 0.013: 14x


def test_bad_shapes_are_named():
    image, depth, c, _ = _renders(2, seed=5)
    with pytest.raises(ValueError, match="depth"):
        variety.image_statistics(image, depth[:1], c)
    with pytest.raises(ValueError, match="divisor"):
        variety.foreground_mask(image, 12)


def test_generator_statistics_on_a_random_generator():
    from op3d.generation import random_tiny_generator

    G = random_tiny_generator(0)
    _, _, c, _ = _renders(3, seed=6)
    stats = variety.generator_statistics(G, c, seed=0, batch=2)
    assert set(stats) == {"box", "box_residual", "sphere_residual", "hue", "size"}
    assert all(len(v) == 3 for v in stats.values())
    again = variety.generator_statistics(G, c, seed=0, batch=3)
    np.testing.assert_allclose(again["size"], stats["size"])


def _measure(*args):
    from click.testing import CliRunner

    from script_loading import load_script

    script = load_script("test_scripts/measure_variety.py", "measure_variety_script")
    return CliRunner().invoke(script.main, [str(a) for a in args], catch_exceptions=False)


def test_measure_variety_cli_table_and_one_line_errors(tmp_path):
    from op3d.data.synthetic import make_synthetic_dataset

    data = tmp_path / "synth.zip"
    make_synthetic_dataset(data, 8, resolution=16, seed=0)
    result = _measure("--network=random-tiny", f"--data={data}", "--num=8")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ")]
    assert rows[0].split(" | ")[1:4] == ["box_fraction", "fit_residual", "hue_distance"]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| data", "| random-tiny"]
    data_values = [float(v) for v in rows[1].strip(" |").split(" | ")[1:]]
    assert data_values[2] == 0 and data_values[3] == 1  # the data against itself: no hue distance, full coverage
    bad = tmp_path / "not-a-network.pkl"
    bad.write_bytes(b"not a pickle")
    for network, expected in ((tmp_path / "missing.pkl", "does not exist"), (bad, "--network:")):
        result = _measure(f"--network=random-tiny,{network}", f"--data={data}", "--num=8")
        assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1, result.output
        assert expected in result.output and "Traceback" not in result.output
    result = _measure("--network=random-tiny", f"--data={tmp_path / 'nothing.zip'}", "--num=8")
    assert result.exit_code != 0 and "ground truth" in result.output
