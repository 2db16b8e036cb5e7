"""Per-vertex colours of a generator's mesh from its own colour field (no rasterizer).

The raw image of a generator is the volume-rendered composite of the decoder's first three features (its RGB),
on the [-1, 1] scale, shown as x * 127.5 + 128. A vertex gets the colour a camera looking straight at it would see:
a short ray starts `offset` outside the surface along the outward normal, runs through the vertex to `offset`
inside, and the field's RGB and density along it are composited with the renderer's own quadrature
(op3d.rendering.ray_marcher.interval_weights), normalised by the ray's total weight (the short ray need not become
opaque the way a full camera ray does). Sampling outside-in matters: the first 'visible' material along the normal is what
a camera sees, and a lookup at the vertex alone mixes in the colour behind the surface.

    sigma = op3d.shapes.extract_density(G, ws, 128)
    vertices, faces = op3d.shapes.density_mesh(sigma, level=10)
    colors = vertex_colors(plane_field(G, G.compute_planes(ws, noise_mode='const')), vertices, faces)  # [V, 3] uint8
"""

from __future__ import annotations

import numpy as np
import torch

from op3d.rendering.ray_marcher import interval_means, interval_weights

DEFAULT_OFFSET = 0.1
"""Half length of each vertex's ray, as a fraction of the box side (box_warp). It must cover the soft shell in
which a camera ray's weight accumulates (about 0.2 box sides thick for the 32-px demo model, where 0.05 missed a
quarter of it and the colours came out up to 13/255 darker; 0.1 is within 5/255 of the raw image head-on), and be
short enough not to reach another part of the surface."""
DEFAULT_SAMPLES = 32


def plane_field(G, planes: torch.Tensor, conditions: dict | None = None, ws: torch.Tensor | None = None):
    """The field of one sample as a function of world points [1, N, 3] -> (rgb [1, N, >=3], raw density [1, N, 1]).

    Unconditional generators: G.run_field on the cached planes. The SMPL-conditional generator (conditions and ws
    given): its pose-warped field, in the world frame of conditional_mesh (render frame = world rotated by pi about
    x), with the density as the Laplace density of the signed distance."""
    if conditions is None:
        def field(points):
            directions = torch.zeros_like(points)
            directions[..., 2] = -1
            out = G.run_field(planes, points, directions)
            return out["rgb"], out["sigma"]
        return field
    evaluate = G.field(planes, ws, conditions)
    flip = torch.tensor([1.0, -1.0, -1.0], device=planes.device)

    def conditional_field(points):
        out = evaluate(points * flip)
        return out["rgb"], G.density_func(out["sdf"])
    return conditional_field


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [V, 3] float32 of a mesh with outward-oriented faces."""
    v = vertices.astype(np.float64)
    face_normals = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])  # |n| = 2 * area
    normals = np.zeros_like(v)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(length, 1e-12)).astype(np.float32)


@torch.no_grad()
def surface_colors(field, points: np.ndarray, normals: np.ndarray, offset: float, samples: int = DEFAULT_SAMPLES,
                   chunk: int = 8192, device="cpu") -> np.ndarray:
    """Colours seen head-on at surface points [V, 3] with outward unit normals [V, 3] -> uint8 [V, 3].

    Each point's ray runs from points + offset * normal to points - offset * normal (world units) with `samples`
    evenly spaced samples; the composite RGB is normalised by the ray's weight and mapped as the raw image is
    (x * 127.5 + 128, clamped). Points whose ray has no weight get the field's RGB at the point."""
    if samples < 2 or offset <= 0:
        raise ValueError(f"need samples >= 2 and offset > 0, got {samples}, {offset}")
    out = np.empty((len(points), 3), dtype=np.uint8)
    t = torch.linspace(0.0, 2 * offset, samples, device=device)  # depth along -normal from the start point
    for start in range(0, len(points), chunk):
        p = torch.as_tensor(points[start:start + chunk], dtype=torch.float32, device=device)
        n = torch.as_tensor(normals[start:start + chunk], dtype=torch.float32, device=device)
        m = len(p)
        ray_points = (p + offset * n)[:, None] - t[None, :, None] * n[:, None]  # [M, S, 3]
        rgb, sigma = field(ray_points.reshape(1, m * samples, 3))
        colors = rgb[..., :3].reshape(1, m, samples, 3).float()
        densities = sigma.reshape(1, m, samples, 1).float()
        depths = t.view(1, 1, samples, 1).expand(1, m, samples, 1)
        weights, _ = interval_weights(densities, depths)
        total = weights.sum(2)  # [1, M, 1]
        composite = (weights * interval_means(colors)).sum(2) / total.clamp_min(1e-8)
        fallback = colors[:, :, samples // 2]
        composite = torch.where(total > 1e-6, composite, fallback)
        out[start:start + m] = (composite[0] * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return out


def vertex_colors(field, vertices: np.ndarray, faces: np.ndarray, box_warp: float = 1.0,
                  offset: float | None = None, samples: int = DEFAULT_SAMPLES, device="cpu") -> np.ndarray:
    """Per-vertex colours uint8 [V, 3] of a mesh (vertices [V, 3] world units, outward faces [F, 3]) from a
    plane_field. offset: the rays' half length in world units (default DEFAULT_OFFSET * box_warp)."""
    if offset is None:
        offset = DEFAULT_OFFSET * box_warp
    return surface_colors(field, vertices, vertex_normals(vertices, faces), offset, samples, device=device)


@torch.no_grad()
def generator_vertex_colors(G, ws: torch.Tensor, vertices: np.ndarray, faces: np.ndarray,
                            noise_mode: str = "const", conditions: dict | None = None) -> np.ndarray:
    """Per-vertex colours uint8 [V, 3] of a generator's mesh made from the same ws [1, num_ws, w_dim]
    (op3d.shapes.density_mesh; with the batch-1 pose conditions of an SMPL-conditional generator,
    op3d.generation_cond.conditional_mesh): the planes are computed once, then vertex_colors on their field."""
    planes = G.compute_planes(ws, noise_mode=noise_mode)
    field = plane_field(G, planes, conditions, ws if conditions is not None else None)
    return vertex_colors(field, vertices, faces, G.settings.box_warp, device=ws.device)
