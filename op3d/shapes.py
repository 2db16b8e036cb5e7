"""3D shapes from a generator: the density grid, `.mrc` volumes and marching-cubes meshes in world units.

The density of a seed is computed from its planes, which are built once; only the decoder runs per chunk of points,
so memory is bounded by `max_batch` (a 512^3 grid fits in a few GB).

Volume convention (official gen_samples): grid index order [x, y, z] over the cube of side `cube_length` centred at
the origin, voxel size cube_length / (N - 1); the stored value is the raw decoder density (before softplus).
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from op3d.atomic import atomic_output
from op3d.fast_paths import FAST


@dataclass(frozen=True)
class ShapeGrid:
    """N^3 sample points over [-cube_length/2, cube_length/2]^3, point n at index (n // N^2, n // N % N, n % N).

    compat=True reproduces the official sample grid, which computes the x and y indices with float32 divisions,
    so they carry fractional offsets (y up to one voxel, x less); the released shapes were extracted with it.
    compat=False uses exact integer indices."""

    resolution: int
    cube_length: float = 1.0
    compat: bool = True

    def __post_init__(self):
        if self.resolution < 2:
            raise ValueError(f"shape resolution must be >= 2, got {self.resolution}")

    @property
    def voxel_size(self) -> float:
        return self.cube_length / (self.resolution - 1)

    @property
    def voxel_origin(self) -> np.ndarray:
        return np.full(3, -self.cube_length / 2)

    @property
    def num_points(self) -> int:
        return self.resolution ** 3

    def points(self, start: int = 0, stop: int | None = None, device=None) -> torch.Tensor:
        """World coordinates of points start..stop-1: [stop - start, 3] float32."""
        stop = self.num_points if stop is None else stop
        return self.points_at(torch.arange(start, stop, dtype=torch.int64, device=device)).contiguous()

    def slab(self, k: int, device=None) -> torch.Tensor:
        """The points with z index k, line j holding points (i, j, k) for i = 0..N-1: [N, N, 3] float32."""
        n_res = self.resolution
        lines = torch.arange(n_res, dtype=torch.int64, device=device)
        return self.points_at(lines.view(1, -1) * n_res * n_res + lines.view(-1, 1) * n_res + k)

    def points_at(self, index: torch.Tensor) -> torch.Tensor:
        """World coordinates of the points with flat indices `index` [...] (int64): [..., 3] float32, stored
        axis-major (a view of [3, ...])."""
        n_res = self.resolution
        if self.compat:
            quotient = index.float() / n_res
            ix, iy = (quotient / n_res) % n_res, quotient % n_res
        else:
            ix, iy = (index // (n_res * n_res)).float(), (index // n_res % n_res).float()
        iz = (index % n_res).float()
        offset = float(self.voxel_origin[0])
        # Axis-major memory ([3, ...] underneath): per-axis reads are contiguous (the slab lookup's).
        return (torch.stack([ix, iy, iz]) * self.voxel_size + offset).movedim(0, -1)


@torch.no_grad()
def extract_density(G, ws: torch.Tensor, resolution: int = 256, max_batch: int = 1_000_000,
                    compat_grid: bool = True, progress: bool = False, workers: int | None = None,
                    **synthesis_kwargs) -> np.ndarray:
    """Raw density of one sample on the shape grid: ws [1, num_ws, w_dim] -> float32 [N, N, N] (index [x, y, z]).

    The planes are computed once (backbone noise 'const' unless given). The fast path (`shape_grid`) goes slab by
    slab; on CPU, `workers` threads (default: torch's thread count) take blocks of consecutive slabs, each with one
    intra-op thread, which parallelises better than splitting each slab's small operations. The plain path runs
    the decoder on chunks of max_batch points."""
    if ws.shape[0] != 1:
        raise ValueError(f"extract_density takes the ws of one sample, got batch {ws.shape[0]}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    grid = ShapeGrid(resolution, G.settings.box_warp, compat_grid)
    synthesis_kwargs.setdefault("noise_mode", "const")
    planes = G.compute_planes(ws, **synthesis_kwargs)
    if FAST.shape_grid and getattr(G, "slab_sampler", None) is not None:
        if workers is None:
            workers = torch.get_num_threads() if planes.device.type == "cpu" else 1
        return _density_by_slabs(G, planes, grid, progress, max(1, workers))
    sigma = np.empty(grid.num_points, dtype=np.float32)
    starts = range(0, grid.num_points, max_batch)
    for start in tqdm(starts, desc="shape", unit="chunk", disable=not progress, leave=False):
        stop = min(start + max_batch, grid.num_points)
        points = grid.points(start, stop, device=ws.device).unsqueeze(0)
        directions = torch.zeros_like(points)
        directions[..., 2] = -1
        sigma[start:stop] = G.run_field(planes, points, directions)["sigma"].reshape(-1).float().cpu().numpy()
    return sigma.reshape(resolution, resolution, resolution)


SLABS_PER_BLOCK = 16  # slabs a worker takes at a time: it writes them to the [x, y, z] volume in runs of 64 bytes


def _density_by_slabs(G, planes: torch.Tensor, grid: ShapeGrid, progress: bool, workers: int) -> np.ndarray:
    """extract_density's shape_grid fast path: one z slab at a time, each plane group interpolated along z once
    per slab (representation/grid_lookup.py), decoding only the density. Slabs go in blocks of SLABS_PER_BLOCK
    consecutive z, each written into the [x, y, z] volume by the thread that computed it. workers > 1: that many
    threads with one intra-op thread each (restored afterwards), each taking the next free block."""
    n_res = grid.resolution
    volume = torch.empty(n_res, n_res, n_res, dtype=torch.float32, device=planes.device)  # [x, y, z]
    block = min(SLABS_PER_BLOCK, n_res)
    firsts = range(0, n_res, block)
    blocks = queue.SimpleQueue()
    for first in firsts:
        blocks.put(first)
    workers = min(workers, len(firsts))
    bar = tqdm(total=n_res, desc="shape", unit="slab", disable=not progress, leave=False)
    shared = G.slab_sampler(planes)

    def run(lookup) -> None:
        with torch.no_grad():
            densities = torch.empty(block, n_res * n_res, dtype=torch.float32, device=planes.device)  # [z, y*N+x]
            while True:
                try:
                    first = blocks.get_nowait()
                except queue.Empty:
                    return
                count = min(block, n_res - first)
                for k in range(first, first + count):
                    features = lookup(grid.slab(k, device=planes.device).reshape(-1, 3))
                    densities[k - first] = G.decoder.sigma(features.unsqueeze(0)).view(-1)
                    bar.update()
                volume[:, :, first:first + count] = densities[:count].view(count, n_res, n_res).permute(2, 1, 0)

    threads = torch.get_num_threads()
    try:
        if workers == 1:
            run(shared)
        else:
            torch.set_num_threads(1)
            # Each worker has a table of its own (it holds the worker's current slab); the volumes are shared.
            with ThreadPoolExecutor(workers) as pool:
                for future in [pool.submit(run, shared.fork()) for _ in range(workers)]:
                    future.result()
    finally:
        torch.set_num_threads(threads)
        bar.close()
    return volume.cpu().numpy()


def border_width(resolution: int) -> int:
    """Voxels set to -1000 on every face of a saved volume (official: int(30 N / 256))."""
    return int(30 * resolution / 256)


def official_volume(sigma: np.ndarray) -> np.ndarray:
    """The array the official gen_samples writes to .mrc: flipped along x (axis 0), a border of border_width(N)
    voxels set to -1000 on all six faces."""
    volume = np.flip(sigma, 0).copy()
    pad = border_width(sigma.shape[0])
    if pad > 0:
        volume[:pad], volume[-pad:] = -1000, -1000
        volume[:, :pad], volume[:, -pad:] = -1000, -1000
        volume[:, :, :pad], volume[:, :, -pad:] = -1000, -1000
    return volume


def write_mrc(path: str | os.PathLike, volume: np.ndarray, voxel_size: float | None = None) -> None:
    """Save a float32 volume as .mrc (mode 2), atomically. voxel_size (world units) goes into the header; the same
    volume always gives the same bytes."""
    import mrcfile

    with atomic_output(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(volume, dtype=np.float32))
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
        mrc.header.label[0] = b"op3d raw density"  # instead of a creation time stamp: repeatable bytes


def density_mesh(sigma: np.ndarray, level: float = 10.0, cube_length: float = 1.0):
    """Marching cubes on the density grid [x, y, z] -> (vertices [V, 3] in world units, faces [F, 3]).

    The volume gets the official -1000 border first so that surfaces close at the box. Faces are oriented with
    normals pointing out of the dense region. Raises ValueError if the level is never crossed."""
    from skimage import measure

    n = sigma.shape[0]
    volume = np.pad(sigma, 1, constant_values=-1000.0)
    pad = border_width(n)
    if pad > 0:
        volume[1:pad + 1], volume[-pad - 1:-1] = -1000, -1000
        volume[:, 1:pad + 1], volume[:, -pad - 1:-1] = -1000, -1000
        volume[:, :, 1:pad + 1], volume[:, :, -pad - 1:-1] = -1000, -1000
    if not volume.min() < level < volume.max():
        raise ValueError(f"iso level {level} is outside the density range [{sigma.min():.3g}, {sigma.max():.3g}]: "
                         "no surface to extract (try another --level)")
    voxel = cube_length / (n - 1)
    vertices, faces, _, _ = measure.marching_cubes(volume, level=level, spacing=(voxel, voxel, voxel),
                                                   gradient_direction="ascent")
    vertices = vertices - voxel - cube_length / 2  # undo the 1-voxel pad, centre the box at the origin
    return vertices.astype(np.float32), faces.astype(np.int64)


def write_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
               colors: np.ndarray | None = None) -> None:
    """Save a triangle mesh; the format (.ply or .obj) follows the file extension. colors: optional per-vertex
    uint8 [V, 3] (op3d.mesh_colors), written as the files' vertex colours. Written atomically."""
    import trimesh

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".ply", ".obj"):
        raise ValueError(f"mesh format must be .ply or .obj, got {ext!r}")
    with atomic_output(path) as tmp:
        trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False).export(tmp)
