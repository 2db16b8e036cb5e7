"""Latent-interpolation videos with an orbiting camera from an OrthoPlanes or EG3D checkpoint, on CPU or GPU.

\b
    python gen_samples/unconditional/gen_videos.py --network=op3d-ffhq-512-128-withc-7plane.pkl \\
        --seeds=0-3 --grid=1x1 --outdir=out

\b
Each seed is mapped to W once (frontal conditioning camera); the video follows a closed cubic path through the
keyframe seeds (--w-frames frames from one keyframe to the next, the last blends back into the first) while the
camera swings in yaw and pitch, one period per video. With --grid=WxH, W*H videos play side by side; cell
(row, col) uses the consecutive seeds number (row*W + col)*K ... +K-1 as its K keyframes.

\b
Writes into --outdir (created):
  interpolation.mp4               the video (--interpolate=true, the default)
  interpolation_trajectory.npy    float32 [frames, 25] camera labels of the frames
  interpolation_<s0>_<s1>/        with --shapes: a mesh per frame, frame0000.ply ... (frame0000_row0_col1.ply
                                  for grids); <s0>, <s1> are the first two seeds
or, with --interpolate=false, per seed (one still latent, same camera path):
  seed0003.mp4, seed0003_trajectory.npy, seed0003_shapes/
Files are written atomically. Meshes: marching cubes at --level on the raw density, vertices in world units.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))


@click.command(help=__doc__)
@click.option("--network", "network", required=True,
              help="Snapshot .pkl (official OP3D/EG3D or op3d), or 'random-tiny' for an untrained demo generator.")
@click.option("--seeds", required=True, help="Seeds, e.g. '0-3,7'.")
@click.option("--shuffle-seed", type=int, default=None, help="Shuffle the seed list with this numpy seed.")
@click.option("--grid", default="1x1", show_default=True, help="WxH grid of videos in one frame.")
@click.option("--num-keyframes", type=int, default=None,
              help="Keyframes per cell (default: number of seeds / (W*H), which must divide evenly). If set, the "
                   "seed list is repeated cyclically to fill num_keyframes * W * H slots.")
@click.option("--w-frames", type=int, default=600, show_default=True, help="Frames from one keyframe to the next.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", "truncation_cutoff", type=int, default=14, show_default=True,
              help="Truncate the first N ws (14 = all; 0 disables truncation).")
@click.option("--outdir", required=True, help="Output folder (created).")
@click.option("--reload_modules", type=bool, default=False,
              help="Accepted for compatibility and ignored: op3d always builds its own modules.")
@click.option("--cfg", type=click.Choice(["FFHQ", "AFHQ", "Shapenet"], case_sensitive=False), default="FFHQ",
              show_default=True, help="Dataset config: camera focal 4.2647 (FFHQ, AFHQ) or 1.7074 (Shapenet).")
@click.option("--image_mode", type=click.Choice(["image", "image_depth", "image_raw"]), default="image",
              show_default=True, help="Final image, depth (near = bright, per-frame range) or the neural render.")
@click.option("--sample_mult", "sample_mult", type=float, default=2.0, show_default=True,
              help="Multiply the depth samples per ray (coarse and importance).")
@click.option("--nrr", type=int, default=None, help="Neural rendering resolution (default: the model's).")
@click.option("--shapes", type=bool, default=False, show_default=True,
              help="Also write a mesh per frame (slow: a shape-res^3 density grid per frame and cell).")
@click.option("--shape-res", type=int, default=512, show_default=True, help="Shape grid resolution N (N^3 points).")
@click.option("--level", type=float, default=10.0, show_default=True,
              help="Iso level of the meshes (raw density). Frames whose density never reaches it get no mesh.")
@click.option("--max-batch", type=int, default=1_000_000, show_default=True, help="Shape points per decoder chunk.")
@click.option("--interpolate", type=bool, default=True, show_default=True,
              help="One interpolation video of all seeds; false: one video per seed.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu), or a torch device.")
@click.option("--fps", type=int, default=60, show_default=True, help="Frames per second of the mp4.")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True,
              help="Backbone noise.")
def main(network, seeds, shuffle_seed, grid, num_keyframes, w_frames, truncation_psi, truncation_cutoff, outdir,
         reload_modules, cfg, image_mode, sample_mult, nrr, shapes, shape_res, level, max_batch, interpolate, device,
         fps, noise_mode):
    import os
    import pickle

    import numpy as np

    from op3d import generation, video
    from op3d.checkpoints import CheckpointError

    # Validate everything and load the network before touching the output folder.
    try:
        seed_list = generation.parse_range(seeds, "--seeds")
        if max(seed_list) >= 2 ** 32:
            raise ValueError(f"--seeds: seeds must be below 2**32 (numpy RandomState), got {max(seed_list)}")
        if shuffle_seed is not None:
            np.random.RandomState(shuffle_seed).shuffle(seed_list)
        grid_wh = video.parse_grid(grid, "--grid")
        jobs = []  # (seed grid, video name stem, shapes folder name)
        if interpolate:
            stem = "interpolation"
            jobs.append((video.arrange_keyframes(seed_list, grid_wh, num_keyframes), stem,
                         f"{stem}_{seed_list[0]}_{seed_list[1]}" if len(seed_list) >= 2 else None))
        else:
            for seed in seed_list:
                jobs.append((video.arrange_keyframes([seed], grid_wh, num_keyframes), f"seed{seed:04d}",
                             f"seed{seed:04d}_shapes"))
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if shapes and interpolate and len(seed_list) < 2:
        raise click.ClickException("--shapes: the interpolation needs at least two seeds (they name the shapes folder)")
    for name, value, low in (("--w-frames", w_frames, 1), ("--fps", fps, 1), ("--shape-res", shape_res, 2),
                             ("--max-batch", max_batch, 1), ("--nrr", nrr, 1)):
        if value is not None and value < low:
            raise click.ClickException(f"{name}: must be >= {low}, got {value}")
    if not sample_mult > 0:
        raise click.ClickException(f"--sample_mult: must be > 0, got {sample_mult}")
    focal = video.CFG_FOCALS[cfg.lower()]
    psi, cutoff = video.resolve_truncation(truncation_psi, truncation_cutoff)

    dev = generation.pick_device(device)
    try:
        G = generation.load_generator(network, dev)
    except OSError as err:
        raise click.ClickException(f"--network: cannot read {network}: {err.strerror or err}") from None
    except (CheckpointError, pickle.UnpicklingError, EOFError, ValueError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise click.ClickException(message if network in message else f"--network: {network}: {message}") from None
    try:
        s = G.settings
        G.rendering_kwargs.update(depth_resolution=int(s.depth_resolution * sample_mult),
                                  depth_resolution_importance=int(s.depth_resolution_importance * sample_mult))
    except ValueError as err:
        raise click.ClickException(f"--sample_mult: {err}") from None
    if nrr is not None:
        G.neural_rendering_resolution = nrr

    os.makedirs(outdir, exist_ok=True)
    for seed_grid, stem, shapes_name in jobs:
        video.render_video(
            G, seed_grid, os.path.join(outdir, f"{stem}.mp4"), w_frames=w_frames, focal=focal, truncation_psi=psi,
            truncation_cutoff=cutoff, image_mode=image_mode, noise_mode=noise_mode, fps=fps,
            trajectory_path=os.path.join(outdir, f"{stem}_trajectory.npy"),
            shapes_dir=os.path.join(outdir, shapes_name) if shapes else None, shape_res=shape_res, level=level,
            max_batch=max_batch, progress=True, warn=lambda message: click.echo(f"warning: {message}", err=True))


if __name__ == "__main__":
    main()
