"""Tests for op3d.data.synthetic: exact renders of spheres and boxes.

Expected depths come from hand-written geometry (distances along the optical axis, the pinhole ray through a pixel
centre) and from properties of the hits (they lie on the surface), never from running the intersection code twice.
"""

import math

import pytest
import torch

from op3d.cameras import pack_label
from op3d.data.synthetic import AMBIENT, LIGHT_DIRECTION, Box, Scene, Sphere, render_scene

FOCAL = 2.0


def frontal_label(distance=3.0, focal=FOCAL, dtype=torch.float32):
    """Camera on +z at ``distance`` looking down -z, axes exactly world-aligned (x right, y down = world -y)."""
    cam2world = torch.tensor([[1.0, 0.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0, 0.0],
                              [0.0, 0.0, -1.0, distance],
                              [0.0, 0.0, 0.0, 1.0]], dtype=dtype)
    intrinsics = torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], dtype=dtype)
    return pack_label(cam2world.unsqueeze(0), intrinsics)


def shaded(rgb, normal):
    """Expected [-1, 1] colour of albedo ``rgb`` under the module's light for a unit ``normal``."""
    lambert = max(0.0, sum(n * l for n, l in zip(normal, LIGHT_DIRECTION)))
    return torch.tensor([v * (AMBIENT + (1 - AMBIENT) * lambert) * 2 - 1 for v in rgb])


def test_sphere_depth_at_centre_pixel_is_distance_minus_radius():
    res = 65  # odd: the middle pixel's ray is the optical axis
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        out = render_scene(Scene(spheres=[Sphere((0.0, 0.0, 0.1), 0.3, (0.5, 0.5, 0.5))]),
                           frontal_label(2.7, dtype=dtype), res, dtype=dtype)
        assert out["depth"].dtype == dtype and out["image"].dtype == dtype
        assert abs(out["depth"][0, 0, 32, 32].item() - (2.7 - 0.1 - 0.3)) < tol


def test_sphere_hits_lie_on_the_sphere_and_mask_is_its_disc():
    res, center, radius = 64, torch.tensor([0.1, -0.05, 0.2], dtype=torch.float64), 0.25
    out = render_scene(Scene(spheres=[Sphere(tuple(center.tolist()), radius, (1.0, 1.0, 1.0))]),
                       frontal_label(dtype=torch.float64), res, dtype=torch.float64)
    # Pinhole rays through pixel centres, written out: camera axes are (x, -y, -z) in the world.
    idx = (torch.arange(res, dtype=torch.float64) + 0.5) / res
    y_img, x_img = torch.meshgrid((idx - 0.5) / FOCAL, (idx - 0.5) / FOCAL, indexing="ij")
    dirs = torch.stack((x_img, -y_img, -torch.ones_like(x_img)), dim=-1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origin = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    to_center = center - origin
    miss_distance = (to_center - (dirs @ to_center).unsqueeze(-1) * dirs).norm(dim=-1)  # ray line to centre
    mask = out["mask"][0, 0]
    assert torch.equal(mask[miss_distance < radius - 1e-9], torch.ones_like(mask[miss_distance < radius - 1e-9]))
    assert not mask[miss_distance > radius + 1e-9].any()
    hits = origin + out["depth"][0, 0].unsqueeze(-1) * dirs
    assert ((hits[mask] - center).norm(dim=-1) - radius).abs().max() < 1e-12


def test_box_depth_for_an_axis_aligned_camera():
    res, distance, half = 64, 3.0, (0.2, 0.3, 0.25)
    out = render_scene(Scene(boxes=[Box((0.0, 0.0, 0.0), half, (0.4, 0.6, 0.8))]), frontal_label(distance), res)
    # The camera sees only the front face z = 0.25: a pixel with image-plane offsets (u, v) (camera z = 1) hits it
    # at camera depth 2.75, i.e. at distance 2.75 * sqrt(1 + u^2 + v^2) along the unit ray, at world x, y =
    # (2.75 u, -2.75 v).
    offsets = ((torch.arange(res, dtype=torch.float64) + 0.5) / res - 0.5) / FOCAL
    v, u = torch.meshgrid(offsets, offsets, indexing="ij")
    z_dist = distance - half[2]
    expected = z_dist * torch.sqrt(1 + u ** 2 + v ** 2)
    on_face = ((z_dist * u).abs() < half[0]) & ((z_dist * v).abs() < half[1])
    assert torch.equal(out["mask"][0, 0], on_face)
    assert (out["depth"][0, 0][on_face] - expected[on_face]).abs().max() < 2e-6
    face_colour = shaded((0.4, 0.6, 0.8), (0.0, 0.0, 1.0))
    assert (out["image"][0].permute(1, 2, 0)[on_face] - face_colour).abs().max() < 1e-6


def test_background_mask_and_far_value():
    out = render_scene(Scene(spheres=[Sphere((0.0, 0.0, 0.0), 0.2, (0.2, 0.3, 0.4))]), frontal_label(), 32, far=6.5)
    mask = out["mask"]
    assert mask.dtype == torch.bool and mask.shape == (1, 1, 32, 32)
    assert 0 < mask.sum() < mask.numel()
    assert torch.all(out["depth"][~mask] == 6.5)
    assert torch.all(out["image"][~mask.expand(-1, 3, -1, -1)] == 1.0)
    foreground = out["image"][mask.expand(-1, 3, -1, -1)]
    assert foreground.min() >= -1 and foreground.max() < 1
    assert torch.all(out["depth"][mask] < 3.0)
    empty = render_scene(Scene(), frontal_label(), 8)
    assert not empty["mask"].any() and torch.all(empty["depth"] == 4.0) and torch.all(empty["image"] == 1.0)


def test_nearest_hit_wins():
    res = 65
    box = Box((0.0, 0.0, 0.0), (0.2, 0.2, 0.2), (0.1, 0.9, 0.1))
    front = Sphere((0.0, 0.0, 0.5), 0.1, (0.9, 0.1, 0.1))
    behind = Sphere((0.0, 0.0, -0.5), 0.1, (0.9, 0.1, 0.1))
    out = render_scene(Scene(spheres=[front], boxes=[box]), frontal_label(3.0), res)
    assert abs(out["depth"][0, 0, 32, 32].item() - 2.4) < 1e-6
    assert (out["image"][0, :, 32, 32] - shaded(front.rgb, (0.0, 0.0, 1.0))).abs().max() < 1e-6
    # 7 pixels right of the axis (image-plane offset u = 7 / 65 / 2 ~ 0.054): the ray passes 0.13 from the sphere's
    # centre (radius 0.1) and meets the box's front face at x = 2.8 u ~ 0.15 (half size 0.2).
    row, col = 32, 32 + 7
    assert abs(out["depth"][0, 0, row, col].item() - 2.8 * math.sqrt(1 + (7 / res / FOCAL) ** 2)) < 1e-6
    assert (out["image"][0, :, row, col] - shaded(box.rgb, (0.0, 0.0, 1.0))).abs().max() < 1e-6
    hidden = render_scene(Scene(spheres=[behind], boxes=[box]), frontal_label(3.0), res)
    assert abs(hidden["depth"][0, 0, 32, 32].item() - 2.8) < 1e-6
    assert (hidden["image"][0, :, 32, 32] - shaded(box.rgb, (0.0, 0.0, 1.0))).abs().max() < 1e-6
    reordered = render_scene(Scene(spheres=[behind, front], boxes=[box]), frontal_label(3.0), res)
    forward = render_scene(Scene(spheres=[front, behind], boxes=[box]), frontal_label(3.0), res)
    assert all(torch.equal(reordered[k], forward[k]) for k in forward)


def test_render_is_deterministic_and_batched():
    scene = Scene(spheres=[Sphere((0.1, 0.0, 0.1), 0.2, (0.7, 0.2, 0.3))],
                  boxes=[Box((-0.1, 0.0, -0.1), (0.2, 0.1, 0.2), (0.2, 0.4, 0.9))])
    c = torch.cat([frontal_label(2.7), frontal_label(3.2)])
    first, second = render_scene(scene, c, 32), render_scene(scene, c, 32)
    assert all(torch.equal(first[k], second[k]) for k in first)
    single = render_scene(scene, c[1:], 32)
    assert all(torch.equal(first[k][1:], single[k]) for k in first)
    float64 = render_scene(scene, c, 32, dtype=torch.float64)
    assert (float64["depth"] - first["depth"]).abs().max() < 1e-5


def test_invalid_primitives_are_rejected():
    with pytest.raises(ValueError, match="Sphere.radius"):
        Sphere((0.0, 0.0, 0.0), -1.0, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="Box.half_size"):
        Box((0.0, 0.0, 0.0), (0.1, 0.0, 0.1), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="Box.rgb"):
        Box((0.0, 0.0, 0.0), (0.1, 0.1, 0.1), (1.0, 2.0, 1.0))
    with pytest.raises(ValueError, match="Sphere.center"):
        Sphere((0.0, 0.0), 1.0, (1.0, 1.0, 1.0))
