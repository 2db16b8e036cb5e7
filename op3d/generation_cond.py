"""Images and shapes from the SMPL-conditional generator, as the official conditional gen_samples intends them
(spec 8.3): a pose condition read from a folder by pose id, eleven views, and a density volume.

    G = op3d.load_network_pkl(path)['G_ema']                      # a ConditionalOrthoPlanesGenerator
    pose = load_pose(pose_file('processed_SHHQ_pose_cond', 5))    # batched dict, batch 1
    ws = op3d.generation.seed_to_ws(G, seed=0)
    views = op3d.generation.render_views(G, ws, CONDITIONAL_YAW_OFFSETS, conditions=pose)
    volume = conditional_volume(extract_conditional_density(G, ws, pose, resolution=256))

Volume convention (official conditional script): the N^3 grid of op3d.shapes.ShapeGrid (official float32 index
quirk included) over the cube of side box_warp, in the generator's render frame, sampled at (-x, y, z) (the x axis
negated instead of the unconditional script's flip of the saved array); the stored value is G.sample's density,
the Laplace density of the total signed distance (up to 1 / beta), and borders of int(90 N / 256) voxels along z
and int(45 N / 256) along x and y are set to -1000.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch
from tqdm import tqdm

from op3d.shapes import ShapeGrid

CONDITIONAL_YAW_OFFSETS = (2.0, 1.6, 1.0, 0.8, 0.4, 0.0, -0.4, -0.8, -1.0, -1.6, -2.0)
"""The official conditional script's eleven views (yaw offsets in radians; pitch offset -0.2)."""
POSE_DIR = "processed_SHHQ_pose_cond"
"""Default pose folder: the released SHHQ-40K-SMPL archive, unpacked and renamed as the official README says."""


class PoseSelectionError(ValueError):
    """No pose file for a pose id; the message names the folder and what was looked for."""


def pose_file(pose_dir: str | os.PathLike, pose_id: int) -> str:
    """The pose file of --pose_id: ``{pose_id + 1:06d}.pickle`` in pose_dir (the released naming), else, when the
    folder does not use that naming (no file named with six digits), the pose_id-th pose file in sorted order."""
    from op3d.smpl.pose_files import POSE_FILE_EXTENSIONS

    pose_dir = os.fspath(pose_dir)
    if pose_id < 0:
        raise PoseSelectionError(f"--pose_id: expected >= 0, got {pose_id}")
    if not os.path.isdir(pose_dir):
        raise PoseSelectionError(f"--pose-dir: {pose_dir} is not a folder (expected pose-condition files, e.g. the "
                                 f"released SHHQ-40K-SMPL unpacked as {POSE_DIR}/, or export_pose.py output)")
    official = os.path.join(pose_dir, f"{pose_id + 1:06d}.pickle")
    if os.path.isfile(official):
        return official
    names = sorted(n for n in os.listdir(pose_dir) if n.lower().endswith(POSE_FILE_EXTENSIONS)
                   and os.path.isfile(os.path.join(pose_dir, n)))
    if any(re.fullmatch(r"\d{6}\.pickle", n) for n in names):
        raise PoseSelectionError(f"--pose_id: {official} not found ({pose_dir} uses the released naming "
                                 f"000001.pickle ...; pose ids are the file number minus one)")
    if pose_id >= len(names):
        raise PoseSelectionError(f"--pose_id: {pose_id} is out of range: {pose_dir} has {len(names)} pose file(s)")
    return os.path.join(pose_dir, names[pose_id])


def load_pose(path: str | os.PathLike, model=None, device="cpu") -> dict[str, torch.Tensor]:
    """A pose file -> the batched pose condition (five float32 tensors with batch 1) on device. model: an SMPL
    body model, needed only for files holding bare SMPL parameters (stock PARE output)."""
    from op3d.smpl.pose_files import POSE_CONDITION_KEYS, load_pose_condition

    arrays = load_pose_condition(path, model=model)
    return {key: torch.from_numpy(arrays[key]).unsqueeze(0).to(device) for key in POSE_CONDITION_KEYS}


def check_pose_fits(G, conditions: dict, source: str) -> None:
    """ValueError unless the pose's body has as many vertices as G's mesh faces need."""
    faces = G.renderer.faces()
    vertices = conditions["vertices"].shape[1]
    if int(faces.max()) >= vertices:
        raise ValueError(f"{source}: the pose's body has {vertices} vertices, but the generator's body mesh uses "
                         f"vertex {int(faces.max())}: pose and network come from different body models")


@torch.no_grad()
def extract_conditional_density(G, ws: torch.Tensor, conditions: dict, resolution: int = 256,
                                max_batch: int = 1_000_000, progress: bool = False,
                                **synthesis_kwargs) -> np.ndarray:
    """G.sample's density on the shape grid, sampled at (-x, y, z): ws [1, num_ws, w_dim] and a batch-1 pose ->
    float32 [N, N, N] (index [x, y, z]). Planes are computed once (backbone noise 'const' unless given)."""
    if ws.shape[0] != 1:
        raise ValueError(f"extract_conditional_density takes the ws of one sample, got batch {ws.shape[0]}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    grid = ShapeGrid(resolution, G.settings.box_warp, compat=True)
    synthesis_kwargs.setdefault("noise_mode", "const")
    planes = G.compute_planes(ws, **synthesis_kwargs)
    field = G.field(planes, ws, conditions)
    flip_x = torch.tensor([-1.0, 1.0, 1.0], device=ws.device)
    density = np.empty(grid.num_points, dtype=np.float32)
    starts = range(0, grid.num_points, max_batch)
    for start in tqdm(starts, desc="shape", unit="chunk", disable=not progress, leave=False):
        stop = min(start + max_batch, grid.num_points)
        points = grid.points(start, stop, device=ws.device).unsqueeze(0) * flip_x
        sdf = field(points)["sdf"]
        density[start:stop] = G.density_func(sdf).reshape(-1).float().cpu().numpy()
    return density.reshape(resolution, resolution, resolution)


def conditional_volume(density: np.ndarray) -> np.ndarray:
    """The array the official conditional script saves: int(90 N / 256) voxels at both ends of z and int(45 N /
    256) at both ends of x and y set to -1000 (no flip: the grid was sampled at -x)."""
    volume = np.array(density, dtype=np.float32, copy=True)
    n = volume.shape[0]
    pad_z, pad_xy = int(90 * n / 256), int(45 * n / 256)
    if pad_xy > 0:
        volume[:pad_xy], volume[-pad_xy:] = -1000, -1000
        volume[:, :pad_xy], volume[:, -pad_xy:] = -1000, -1000
    if pad_z > 0:
        volume[:, :, :pad_z], volume[:, :, -pad_z:] = -1000, -1000
    return volume


def conditional_mesh(volume: np.ndarray, level: float, cube_length: float):
    """Marching cubes on a conditional volume -> (vertices [V, 3], faces [F, 3]) in the cameras' world frame
    (the person upright): the volume's x index runs along -x of the render frame, and the render frame is the
    world frame rotated by pi about x, so a vertex (x, y, z) of the volume grid is (-x, -y, -z) in the world.
    Raises ValueError if the level is never crossed."""
    from op3d.shapes import density_mesh

    vertices, faces = density_mesh(volume, level, cube_length)
    return -vertices, np.ascontiguousarray(faces[:, ::-1])  # a point reflection: flip the winding
