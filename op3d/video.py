"""Latent-interpolation videos the way the official gen_videos script makes them: keyframe seeds mapped once to W,
a periodic cubic path through them, an orbiting camera, one frame (or a grid of cells) per step, written as mp4.

    G = op3d.load_network_pkl(path)['G_ema']
    seed_grid = op3d.video.arrange_keyframes([0, 1, 2], grid=(1, 1))    # [rows, cols, keyframes]
    op3d.video.render_video(G, seed_grid, 'interpolation.mp4', w_frames=120)

Conventions:
* Time runs in keyframe units: t = frame / w_frames, keyframe k sits at t = k, and the path closes after
  t = num_keyframes (the last keyframe blends back into the first).
* The camera makes one full yaw/pitch oscillation over the whole video (F = num_keyframes * w_frames frames) on
  the orbit of radius `avg_camera_radius` around the world origin (the official LookAtPoseSampler), looking at the
  model's `avg_camera_pivot`, with the focal length of the dataset config.
* All cells of a grid share the camera; cell (row, col) uses seeds seed_grid[row, col, :] as its keyframes.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from op3d.atomic import atomic_output
from op3d.cameras import LookAtPoseSampler, focal_to_intrinsics, pack_label
from op3d.generation import depth_to_uint8, seed_latent, to_uint8

CFG_FOCALS = {"ffhq": 4.2647, "afhq": 4.2647, "shapenet": 1.7074}
"""Normalised focal length of the video camera per dataset config (the official script's fixed values)."""

YAW_RANGE = 0.8
PITCH_RANGE = 0.3
PITCH_OFFSET = -0.05
WRAPS = 2
"""Copies of the keyframe sequence placed before and after the evaluated period when fitting the spline."""

IMAGE_MODES = ("image", "image_depth", "image_raw")
FULL_TRUNCATION_CUTOFF = 14
DEFAULT_LEVEL = 10.0


def parse_grid(text: str, name: str = "--grid") -> tuple[int, int]:
    """'3x2' -> (3, 2) = (columns, rows). Raises ValueError naming the option on anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"{name}: expected WIDTHxHEIGHT like '2x2', got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 1 or height < 1:
        raise ValueError(f"{name}: width and height must be >= 1, got {text!r}")
    return width, height


def resolve_truncation(psi: float, cutoff: int | None) -> tuple[float, int | None]:
    """The official rules: a cutoff of 0 truncates nothing, so psi becomes 1; psi 1 sets the cutoff to 14."""
    if cutoff == 0:
        psi = 1.0
    if psi == 1.0:
        cutoff = FULL_TRUNCATION_CUTOFF
    return psi, cutoff


def arrange_keyframes(seeds: Sequence[int], grid: tuple[int, int] = (1, 1),
                      num_keyframes: int | None = None) -> np.ndarray:
    """Seeds -> int64 [rows, cols, num_keyframes]: cell (row, col) takes consecutive seeds as its keyframes
    (seed index (row * cols + col) * num_keyframes + k).

    Without num_keyframes the seeds must fill the grid evenly (num_keyframes = len(seeds) / (cols * rows)); with
    it, the seed list is repeated cyclically to fill num_keyframes * cols * rows slots. Raises ValueError."""
    cols, rows = grid
    cells = cols * rows
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("--seeds: no seeds given")
    if num_keyframes is None:
        if len(seeds) % cells != 0:
            raise ValueError(f"--seeds: {len(seeds)} seed(s) do not fill a {cols}x{rows} grid; give a multiple of "
                             f"{cells} seeds (one per cell and keyframe) or set --num-keyframes")
        num_keyframes = len(seeds) // cells
    if num_keyframes < 1:
        raise ValueError(f"--num-keyframes: must be >= 1, got {num_keyframes}")
    total = num_keyframes * cells
    flat = np.array([seeds[i % len(seeds)] for i in range(total)], dtype=np.int64)
    return flat.reshape(rows, cols, num_keyframes)


def periodic_cubic(keyframes: np.ndarray, wraps: int = WRAPS) -> Callable[[float], np.ndarray]:
    """A closed cubic path through keyframes [K, ...] (any trailing shape): returns f(t) with f(k) = keyframes[k]
    and f(t + K) = f(t).

    The sequence is repeated 2 * wraps + 1 times on t = -K * wraps ... K * (wraps + 1) - 1 and a C2 cubic spline with
    not-a-knot ends is fitted through it (the official construction); t is evaluated modulo K, i.e. inside the
    middle copy, where the end conditions have faded out and the path is effectively periodic."""
    from scipy.interpolate import CubicSpline

    values = np.asarray(keyframes, dtype=np.float64)
    count = values.shape[0]
    if count < 1:
        raise ValueError("periodic_cubic: need at least one keyframe")
    if wraps < 1:
        raise ValueError(f"periodic_cubic: wraps must be >= 1, got {wraps}")
    if count == 1:
        constant = values[0]
        return lambda t: constant.copy()
    positions = np.arange(-count * wraps, count * (wraps + 1), dtype=np.float64)
    spline = CubicSpline(positions, np.concatenate([values] * (2 * wraps + 1), axis=0), axis=0,
                         bc_type="not-a-knot")
    return lambda t: spline(np.mod(t, count))


def orbit_angles(frame: int, num_frames: int, yaw_range: float = YAW_RANGE, pitch_range: float = PITCH_RANGE,
                 pitch_offset: float = PITCH_OFFSET) -> tuple[float, float]:
    """(yaw, pitch) of the video camera at a frame: one sine/cosine period over num_frames frames, starting at
    yaw pi/2 (frontal) and pitch pi/2 + pitch_offset + pitch_range."""
    phase = 2 * math.pi * frame / num_frames
    return (math.pi / 2 + yaw_range * math.sin(phase),
            math.pi / 2 + pitch_offset + pitch_range * math.cos(phase))


def camera_at(yaw: float, pitch: float, pivot, radius: float, focal: float, device="cpu") -> torch.Tensor:
    """A [1, 25] label for a camera at (yaw, pitch) on the orbit of `radius` around the world origin, looking at
    `pivot`."""
    cam2world = LookAtPoseSampler.sample(yaw, pitch, torch.as_tensor(pivot, dtype=torch.float32, device=device),
                                         radius=radius, device=device)
    return pack_label(cam2world, focal_to_intrinsics(focal, device=device))


def camera_trajectory(num_frames: int, pivot, radius: float, focal: float, device="cpu") -> torch.Tensor:
    """[num_frames, 25] labels of the orbit (see orbit_angles)."""
    if num_frames < 1:
        raise ValueError(f"camera_trajectory: need at least one frame, got {num_frames}")
    return torch.cat([camera_at(*orbit_angles(f, num_frames), pivot, radius, focal, device)
                      for f in range(num_frames)])


def layout_grid(images: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """[rows * cols, H, W, C] (row-major cells) -> one [rows * H, cols * W, C] image."""
    cols, rows = grid
    n, h, w, ch = images.shape
    if n != rows * cols:
        raise ValueError(f"layout_grid: {n} images for a {cols}x{rows} grid")
    return images.reshape(rows, cols, h, w, ch).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, ch)


@torch.no_grad()
def map_keyframes(G, seed_grid: np.ndarray, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                  focal: float = CFG_FOCALS["ffhq"], device="cpu") -> torch.Tensor:
    """ws of every keyframe seed, mapped once with the frontal camera (at the pivot/radius, cfg focal) as label
    -> [rows, cols, K, num_ws, w_dim]. Truncation arguments are used as given (see resolve_truncation)."""
    s = G.settings
    label = camera_at(math.pi / 2, math.pi / 2, s.avg_camera_pivot, s.avg_camera_radius, focal, device)
    flat = seed_grid.reshape(-1)
    z = torch.cat([seed_latent(int(seed), G.z_dim, device) for seed in flat])
    ws = G.mapping(z, label.expand(len(flat), -1), truncation_psi=truncation_psi,
                   truncation_cutoff=truncation_cutoff)
    return ws.reshape(*seed_grid.shape, *ws.shape[1:])


def frame_image(out: dict, image_mode: str) -> np.ndarray:
    """One rendered sample's output -> [H, W, 3] uint8 (depth: negated, min-max normalised to this image)."""
    if image_mode == "image_depth":
        return depth_to_uint8(out["image_depth"])[0]
    return to_uint8(out[image_mode])[0]


def video_shape_volume(sigma: np.ndarray) -> np.ndarray:
    """Density grid [x, y, z] with the extra cut of the official video shapes: int(38 N / 256) voxels on the
    high-y side set to -1000 (density_mesh adds the int(30 N / 256) border on all faces itself)."""
    volume = sigma.copy()
    pad_top = int(38 * sigma.shape[1] / 256)
    if pad_top > 0:
        volume[:, -pad_top:] = -1000.0
    return volume


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save, atomically."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def mesh_name(frame: int, row: int, col: int, grid: tuple[int, int]) -> str:
    """File name of a frame's mesh: frame0007.ply, or frame0007_row0_col1.ply for a grid of videos."""
    if grid == (1, 1):
        return f"frame{frame:04d}.ply"
    return f"frame{frame:04d}_row{row}_col{col}.ply"


@torch.no_grad()
def render_video(G, seed_grid: np.ndarray, path: str | os.PathLike, *, w_frames: int = 600,
                 focal: float = CFG_FOCALS["ffhq"], truncation_psi: float = 1.0, truncation_cutoff: int | None = 14,
                 image_mode: str = "image", noise_mode: str = "const", fps: int = 60, bitrate: str = "10M",
                 trajectory_path: str | os.PathLike | None = None, shapes_dir: str | os.PathLike | None = None,
                 shape_res: int = 512, level: float = DEFAULT_LEVEL, max_batch: int = 1_000_000,
                 progress: bool = False, warn: Callable[[str], None] | None = None) -> torch.Tensor:
    """Render the interpolation video of seed_grid [rows, cols, K] to `path` (mp4, libx264, written atomically).

    Frames: F = K * w_frames. Frame f shows every cell at w(t = f / w_frames) of its periodic cubic W path, seen
    from camera_trajectory(F)[f]; the torch RNG is seeded with f before each frame (the renderer's sample jitter),
    so frames are repeatable. Optionally saves the [F, 25] camera labels to trajectory_path (.npy) and a mesh per
    frame and cell into shapes_dir (marching cubes at `level` on a shape_res^3 raw-density grid from the
    last-w-styled planes, as the official sample_mixed; vertices in world units). A frame whose density never
    crosses `level` gets no mesh: `warn` (default warnings.warn) is called instead. Returns the trajectory."""
    import imageio
    from tqdm import tqdm

    from op3d import shapes as shape_io

    if image_mode not in IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")
    if w_frames < 1:
        raise ValueError(f"w_frames must be >= 1, got {w_frames}")
    warn = warn or (lambda message: warnings.warn(message, stacklevel=2))
    device = next(G.parameters()).device
    rows, cols, num_keyframes = seed_grid.shape
    grid = (cols, rows)
    num_frames = num_keyframes * w_frames
    settings = G.settings

    ws = map_keyframes(G, seed_grid, truncation_psi, truncation_cutoff, focal, device)
    w_shape = ws.shape[3:]
    path_of_w = periodic_cubic(ws.permute(2, 0, 1, 3, 4).cpu().numpy())  # keyframe axis first
    labels = camera_trajectory(num_frames, settings.avg_camera_pivot, settings.avg_camera_radius, focal)
    if trajectory_path is not None:
        save_npy(trajectory_path, labels.numpy())
    if shapes_dir is not None:
        os.makedirs(shapes_dir, exist_ok=True)

    with atomic_output(path) as tmp:
        writer = imageio.get_writer(tmp, mode="I", fps=fps, codec="libx264", bitrate=bitrate)
        try:
            for frame in tqdm(range(num_frames), desc="frames", unit="frame", disable=not progress):
                torch.manual_seed(frame)
                c = labels[frame:frame + 1].to(device)
                w_cells = torch.from_numpy(path_of_w(frame / w_frames)).float().to(device).reshape(rows * cols,
                                                                                                  *w_shape)
                cells = []
                for index in range(rows * cols):
                    w = w_cells[index:index + 1]
                    cells.append(frame_image(G.synthesis(w, c, noise_mode=noise_mode), image_mode))
                    if shapes_dir is not None:
                        row, col = divmod(index, cols)
                        sigma = shape_io.extract_density(G, w, shape_res, max_batch=max_batch, mixed=True)
                        try:
                            vertices, faces = shape_io.density_mesh(video_shape_volume(sigma), level,
                                                                    settings.box_warp)
                        except ValueError as err:
                            warn(f"frame {frame}: no mesh written for cell ({row}, {col}): {err}")
                            continue
                        shape_io.write_mesh(os.path.join(shapes_dir, mesh_name(frame, row, col, grid)),
                                            vertices, faces)
                writer.append_data(layout_grid(np.stack(cells), grid))
        finally:
            writer.close()
    return labels
