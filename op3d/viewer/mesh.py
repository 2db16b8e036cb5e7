"""Meshes for the viewer: the density grid and marching-cubes mesh of a latent, exactly as op3d.shapes (or
op3d.generation_cond for conditional models) makes them, per-vertex colours (op3d.mesh_colors), and the bytes of
the `.ply` / `.obj` / `.mrc` downloads.

    mesh = extract_mesh(service, Latent(seed=0, psi=0.7), resolution=128, level=10.0, colors=True)
    data = mesh_bytes(mesh, '.ply')
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile

import numpy as np

from op3d import mesh_colors, shapes

MESH_FORMATS = (".ply", ".obj", ".mrc")


@dataclasses.dataclass
class Mesh:
    """vertices [V, 3] float32 (world units), faces [F, 3] int64, colors [V, 3] uint8 or None, the saved volume
    (the .mrc array) and its voxel size."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None
    volume: np.ndarray
    voxel_size: float


def extract_mesh(service, key, resolution: int, level: float, colors: bool = True) -> Mesh:
    """The mesh of a latent at a grid resolution and iso level, under the service's lock. Raises ValueError when the
    level is never crossed (op3d.shapes.density_mesh's message)."""
    from op3d import generation_cond

    if resolution < 2:
        raise ValueError(f"mesh resolution must be >= 2, got {resolution}")
    model, G = service.model, service.G
    box = G.settings.box_warp
    with service.lock:
        sample, _ = service.sample(key)
        if model.conditional:
            density = generation_cond.extract_conditional_density(G, sample.ws, sample.conditions, resolution,
                                                                   noise_mode=key.noise_mode)
            volume = generation_cond.conditional_volume(density)
            vertices, faces = generation_cond.conditional_mesh(volume, level, box)
        else:
            sigma = shapes.extract_density(G, sample.ws, resolution, noise_mode=key.noise_mode)
            volume = shapes.official_volume(sigma)
            vertices, faces = shapes.density_mesh(sigma, level, box)
        vertex_rgb = None
        if colors:
            field = mesh_colors.plane_field(G, sample.planes, sample.conditions, sample.ws)
            vertex_rgb = mesh_colors.vertex_colors(field, vertices, faces, box, device=service.device)
    return Mesh(vertices, faces, vertex_rgb, volume, box / (resolution - 1))


def mesh_bytes(mesh: Mesh, fmt: str) -> bytes:
    """The file contents of a mesh download: '.ply' / '.obj' (trimesh, with vertex colours when present) or '.mrc'
    (the volume, as gen_samples writes it)."""
    if fmt not in MESH_FORMATS:
        raise ValueError(f"mesh format must be one of {MESH_FORMATS}, got {fmt!r}")
    if fmt == ".mrc":
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "shape.mrc")
            shapes.write_mrc(path, mesh.volume, voxel_size=mesh.voxel_size)
            with open(path, "rb") as f:
                return f.read()
    import trimesh

    buffer = io.BytesIO()
    trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=mesh.colors,
                    process=False).export(buffer, file_type=fmt[1:])
    return buffer.getvalue()
