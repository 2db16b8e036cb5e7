"""Tests for op3d.metrics.consistency on analytic renders (op3d.data.synthetic), where the truth is known:
exact renders of one scene must agree across views, perturbed ones must not.

Measured at resolution 64 (float32), cameras 23.4 degrees apart: depth_error 3.7e-4, photometric_error 1.5e-3,
visible_fraction 0.57. What remains is bilinear resampling, mostly where shading and depth change fast on the
sphere (grazing pixels, the shadow terminator); at 128^2 they are 1.8e-4 and 5.3e-4. Perturbing only view B's depth:
x1.05 -> 0.121, +0.05 -> 0.049, -0.05 -> 0.050 world units.
"""

import math

import pytest
import torch

from op3d.cameras import orbit_camera, pack_label
from op3d.data.synthetic import Box, Scene, Sphere, render_scene
from op3d.metrics.consistency import aggregate, project_points, reprojection_errors, unproject_depth

RES = 64
FRONTAL = math.pi / 2


def scene(sphere_rgb=(0.9, 0.3, 0.2)):
    """A sphere in front of an off-centre box: each view sees parts of the box the other's sphere hides.

    Both cameras are up and to the right (+x, +y), so they see the box's +x, +y and +z faces, which the light from
    (1, 1, 1) shades equally: colour has no edges where depth is continuous (resampling could not match those)."""
    return Scene(spheres=[Sphere((0.08, 0.0, 0.26), 0.12, sphere_rgb)],
                 boxes=[Box((-0.04, -0.03, -0.03), (0.13, 0.12, 0.12), (0.2, 0.6, 0.9))])


def camera_a():
    return orbit_camera(FRONTAL + 0.05, FRONTAL - 0.1)


def camera_b():
    return orbit_camera(FRONTAL + 0.45, FRONTAL - 0.25)


def views(scene_b=None):
    """Renders (A, B) of the test scene; B optionally of another scene."""
    return render_scene(scene(), camera_a(), RES), render_scene(scene_b or scene(), camera_b(), RES)


def errors(a, b, depth_b=None, image_b=None):
    return reprojection_errors(a["depth"], a["image"], camera_a(), b["depth"] if depth_b is None else depth_b,
                               b["image"] if image_b is None else image_b, camera_b(), a["mask"], b["mask"])


def test_cameras_are_20_to_30_degrees_apart():
    pa, pb = camera_a()[0, [3, 7, 11]], camera_b()[0, [3, 7, 11]]
    angle = math.degrees(math.acos(float(pa @ pb / (pa.norm() * pb.norm()))))
    assert 20 < angle < 30


def test_unproject_then_project_returns_pixel_centres_and_depths():
    gen = torch.Generator().manual_seed(0)
    c = torch.cat([camera_a(), orbit_camera(FRONTAL - 0.6, FRONTAL + 0.3, radius=3.1, fov_degrees=30.0)])
    depth = 2.0 + 1.5 * torch.rand(2, 1, RES, RES, generator=gen)
    pixel_xy, distance, in_front = project_points(unproject_depth(depth, c), c, RES)
    centres = torch.arange(RES, dtype=torch.float32) + 0.5
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    expected_xy = torch.stack((cols.reshape(-1), rows.reshape(-1)), dim=-1).expand(2, -1, -1)
    assert pixel_xy.shape == (2, RES * RES, 2) and distance.shape == in_front.shape == (2, RES * RES)
    assert in_front.all()
    assert (pixel_xy - expected_xy).abs().max() < 1e-4
    assert (distance - depth.reshape(2, -1)).abs().max() < 1e-4


def test_project_points_pinhole_by_hand():
    # Identity camera (at the origin looking down +z), f = 2, principal point centred, 10 x 10 pixels:
    # x = (f X / Z + 0.5) * 10, y = (f Y / Z + 0.5) * 10.
    c = pack_label(torch.eye(4).unsqueeze(0), torch.tensor([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]]))
    points = torch.tensor([[[0.1, -0.2, 2.0], [0.0, 0.0, -1.0]]])
    pixel_xy, distance, in_front = project_points(points, c, 10)
    assert (pixel_xy[0, 0] - torch.tensor([6.0, 3.0])).abs().max() < 1e-6
    assert (distance[0] - torch.tensor([math.sqrt(0.01 + 0.04 + 4.0), 1.0])).abs().max() < 1e-6
    assert in_front.tolist() == [[True, False]]


def test_exact_renders_are_consistent():
    a, b = views()
    result = errors(a, b)
    assert all(value.shape == (1,) for value in result.values())
    assert result["depth_error"].item() < 1e-3
    assert result["relative_depth_error"].item() < 1e-3
    assert result["photometric_error"].item() < 2e-3
    assert result["visible_fraction"].item() > 0.3


def test_same_view_is_exactly_consistent():
    a, _ = views()
    result = reprojection_errors(a["depth"], a["image"], camera_a(), a["depth"], a["image"], camera_a(),
                                 a["mask"], a["mask"])
    assert result["depth_error"].item() < 1e-5 and result["photometric_error"].item() < 1e-5


@pytest.mark.parametrize("name, perturb", [("scaled", lambda d: d * 1.05),
                                           ("farther", lambda d: d + 0.05),
                                           ("nearer", lambda d: d - 0.05)])
def test_perturbed_depth_of_one_view_is_caught_symmetrically(name, perturb):
    a, b = views()
    depth_b = perturb(b["depth"])
    forward = errors(a, b, depth_b=depth_b)
    assert forward["depth_error"].item() > 0.02, name
    assert forward["relative_depth_error"].item() > 0.005, name
    backward = reprojection_errors(depth_b, b["image"], camera_b(), a["depth"], a["image"], camera_a(),
                                   b["mask"], a["mask"])
    assert all(torch.equal(forward[k], backward[k]) for k in forward), name


def test_colour_change_in_one_view_raises_photometric_error():
    a, b = views(scene_b=scene(sphere_rgb=(0.3, 0.8, 0.2)))
    exact = errors(*views())
    changed = errors(a, b)
    assert changed["photometric_error"].item() > 0.05 > 10 * exact["photometric_error"].item()
    assert abs(changed["depth_error"].item() - exact["depth_error"].item()) < 1e-7


def test_views_without_overlap_give_nan_and_aggregate_ignores_them():
    away = orbit_camera(FRONTAL + 0.45, FRONTAL - 0.25, lookat=(5.0, 5.0, 5.0))  # B's position, looking away
    c_a, c_b = torch.cat([camera_a(), camera_a()]), torch.cat([camera_b(), away])
    a, b = render_scene(scene(), c_a, RES), render_scene(scene(), c_b, RES)
    assert not b["mask"][1].any()
    result = reprojection_errors(a["depth"], a["image"], c_a, b["depth"], b["image"], c_b, a["mask"], b["mask"])
    for name in ("depth_error", "relative_depth_error", "photometric_error"):
        assert torch.isfinite(result[name][0]) and torch.isnan(result[name][1]), name
    assert result["visible_fraction"][1].item() == 0
    summary = aggregate(result)
    assert summary["num_samples"] == 2
    assert summary["depth_error"] == pytest.approx(result["depth_error"][0].item())
    assert summary["visible_fraction"] == pytest.approx(result["visible_fraction"].mean().item())


def test_shape_errors_name_the_argument():
    a, b = views()
    with pytest.raises(ValueError, match="depth_b"):
        reprojection_errors(a["depth"], a["image"], camera_a(), b["depth"][:, 0], b["image"], camera_b())
    with pytest.raises(ValueError, match="mask_a"):
        reprojection_errors(a["depth"], a["image"], camera_a(), b["depth"], b["image"], camera_b(),
                            mask_a=a["mask"].float())
