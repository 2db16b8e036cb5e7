"""Per-vertex mesh colours (op3d.mesh_colors): what a camera looking along the normal sees, on an analytic field
with a known answer, and on the demo generator against its own raw image; gen_samples --mesh-colors end to end."""

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from op3d import generation, mesh_colors, shapes
from script_loading import load_script

RED, BLUE, GREEN = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)


def two_tone_ball(points):
    """A ball of radius 0.25 (raw density 400 inside: opaque within a few samples, -20 outside) whose outer shell is red where x > 0 and blue
    where x < 0, with a green core of radius 0.2: colours in [0, 1] like the decoder's RGB."""
    r = points.norm(dim=-1, keepdim=True)
    rgb = torch.where(points[..., :1] > 0, torch.tensor(RED), torch.tensor(BLUE))
    rgb = torch.where(r < 0.2, torch.tensor(GREEN), rgb)
    sigma = torch.where(r < 0.25, torch.tensor(400.0), torch.tensor(-20.0))
    return rgb, sigma


def test_colours_are_the_surface_seen_from_outside():
    """Vertices of the ball get its shell colour, not the core behind it (sampling from inside out, or a lookup
    displaced inwards, would show green; a wrong colour scale would not give 255)."""
    import trimesh

    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.25)
    vertices, faces = ball.vertices.astype(np.float32), ball.faces.astype(np.int64)
    colors = mesh_colors.vertex_colors(two_tone_ball, vertices, faces, box_warp=1.0)
    east, west = vertices[:, 0] > 0.05, vertices[:, 0] < -0.05
    assert east.sum() > 100 and west.sum() > 100
    np.testing.assert_array_less(np.abs(colors[east].astype(int) - (255, 0, 0)), 3)
    np.testing.assert_array_less(np.abs(colors[west].astype(int) - (0, 0, 255)), 3)


def test_vertex_normals_point_outwards():
    import trimesh

    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    normals = mesh_colors.vertex_normals(ball.vertices, ball.faces)
    radial = ball.vertices / np.linalg.norm(ball.vertices, axis=1, keepdims=True)
    assert (np.sum(normals * radial, axis=1) > 0.98).all()


def _project(label: torch.Tensor, points: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x right, y down) and depths of world points in the camera of a 25-float label (OpenCV
    cam2world, intrinsics normalised by the image size)."""
    cam2world = label[:16].reshape(4, 4).double().numpy()
    K = label[16:].reshape(3, 3).double().numpy()
    world2cam = np.linalg.inv(cam2world)
    cam = points @ world2cam[:3, :3].T + world2cam[:3, 3]
    uv = (cam @ K.T)[:, :2] / cam[:, 2:3]
    return uv * resolution - 0.5, cam[:, 2]


def test_demo_colours_match_its_raw_image_head_on():
    """The bundled model's vertices that face the frontal camera get the colour of the raw image pixel they project
    to (nearest pixel, visible vertices only): the colour field is read where the renderer reads it."""
    torch.manual_seed(0)
    G = generation.load_generator(generation.DEMO_NETWORK)
    ws = generation.seed_to_ws(G, 1)
    vertices, faces = shapes.density_mesh(shapes.extract_density(G, ws, 64), 10.0, G.settings.box_warp)
    colors = mesh_colors.generator_vertex_colors(G, ws, vertices, faces)
    label = generation.conditioning_label(G)  # [1, 25]
    with torch.no_grad():
        raw = G.synthesis(ws, label, neural_rendering_resolution=64, noise_mode="const")["image_raw"]
    label = label[0]
    raw = generation.to_uint8(raw)[0].astype(int)  # [R, R, 3]
    res = raw.shape[0]
    uv, depth = _project(label, vertices.astype(np.float64), res)
    origin = label[:16].reshape(4, 4)[:3, 3].numpy()
    to_camera = origin - vertices
    to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
    facing = np.sum(mesh_colors.vertex_normals(vertices, faces) * to_camera, axis=1) > math.cos(0.5)
    pixel = np.round(uv).astype(int)
    inside = (pixel >= 0).all(1) & (pixel < res).all(1)
    keep = facing & inside
    # visible: the nearest vertex within its pixel (a z-buffer over the vertices)
    nearest = {}
    for i in np.flatnonzero(keep):
        key = tuple(pixel[i])
        if key not in nearest or depth[i] < depth[nearest[key]]:
            nearest[key] = i
    chosen = np.array(list(nearest.values()))
    assert len(chosen) > 20
    seen = raw[pixel[chosen, 1], pixel[chosen, 0]]
    error = np.abs(colors[chosen].astype(int) - seen).mean()
    assert error < 12, error


def test_gen_samples_writes_the_coloured_mesh(tmp_path):
    import trimesh

    script = load_script("gen_samples/unconditional/gen_samples.py", "gen_samples_colors")
    result = CliRunner().invoke(script.main, ["--seeds=2", "--views=0", "--shapes=true", "--shape-res=32",
                                              "--shape-format=.ply", "--mesh-colors=true", f"--outdir={tmp_path}"])
    assert result.exit_code == 0, result.output
    mesh = trimesh.load(tmp_path / "seed0002_Geometry.ply", process=False)
    G = generation.load_generator(generation.DEMO_NETWORK)
    ws = generation.seed_to_ws(G, 2)
    vertices, faces = shapes.density_mesh(shapes.extract_density(G, ws, 32), 10.0)
    expected = mesh_colors.generator_vertex_colors(G, ws, vertices, faces)
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], expected)
    assert np.ptp(expected.astype(int), axis=0).max() > 10  # coloured, not one flat value
