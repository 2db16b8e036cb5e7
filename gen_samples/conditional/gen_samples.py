"""Multi-view images and 3D shapes of a person in a given SMPL pose, from a pose-conditional OrthoPlanes checkpoint
(official SHHQ conditional pickle or a train_conditional.py snapshot), on CPU or GPU.

\b
    python gen_samples/conditional/gen_samples.py --network=shhq-conditional.pkl --seeds=0-3 --pose_id=5 \\
        --pose-dir=processed_SHHQ_pose_cond --trunc=0.7 --shapes=true --outdir=out

The pose: --pose_id p reads {p+1:06d}.pickle from --pose-dir (the released SHHQ-40K-SMPL files, unpacked and renamed
processed_SHHQ_pose_cond as the official README says); in a folder without that naming (e.g. export_pose.py output
named after the images) it reads the p-th pose file in sorted order. Released SMPL-output pickles, op3d's pose files
and, with --smpl-model, stock PARE output are understood.

Writes per seed: seed%04d_pose<p>_RGB.png (eleven views, yaw offsets +2 ... -2 rad, side by side), optionally
_raw.png / _depth.png, and with --shapes seed%04d_pose<p>_Geometry.mrc (G.sample's density on the unit cube sampled
at -x, borders of 90 N/256 voxels along z and 45 N/256 along x and y set to -1000, as the official script) or a mesh
(.ply / .obj, marching cubes at --level, in the cameras' world frame). Every other option is the unconditional
script's.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

# The unconditional script holds the official option list (spec 8.3: the conditional script has the same options
# plus --pose_id); this script takes it over and changes only what differs.
_spec = importlib.util.spec_from_file_location(
    "op3d_gen_samples_unconditional", pathlib.Path(__file__).resolve().parents[1] / "unconditional" / "gen_samples.py")
_unconditional = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_unconditional)
REPLACED = ("network", "views", "level", "shape_res")
DEFAULT_VIEWS = "2,1.6,1,0.8,0.4,0,-0.4,-0.8,-1,-1.6,-2"


def run(network, seeds, truncation_psi, truncation_cutoff, class_idx, outdir, shapes, shape_res, shape_format,
        fov_deg, reload_modules, device, batch, noise_mode, views, depth_samples, max_batch, level, mesh_colors,
        extra_images, pose_id, pose_dir, smpl_model):
    import os
    import pickle

    import torch
    from tqdm import tqdm

    from op3d import generation, generation_cond
    from op3d.checkpoints import CheckpointError
    from op3d.networks.conditional import ConditionalOrthoPlanesGenerator
    from op3d.safe_pickle import UnsafePickleError
    from op3d.shapes import write_mesh, write_mrc
    from op3d.smpl.body_model import SMPLModelError, load_smpl_model
    from op3d.smpl.pose_files import PoseFileError

    # Validate everything before touching the output folder.
    try:
        seed_list = generation.parse_range(seeds, "--seeds")
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if shape_format not in _unconditional.SHAPE_FORMATS:
        raise click.ClickException(f"--shape-format: expected one of {', '.join(_unconditional.SHAPE_FORMATS)}, "
                                   f"got {shape_format!r}")
    if mesh_colors and shape_format == ".mrc":
        raise click.ClickException("--mesh-colors: needs --shape-format=.ply or .obj (an .mrc volume has no vertices)")
    for name, value, low in (("--shape-res", shape_res, 2), ("--batch", batch, 1),
                             ("--depth-samples", depth_samples, 2), ("--max-batch", max_batch, 1)):
        if value < low:
            raise click.ClickException(f"{name}: must be >= {low}, got {value}")
    yaw_offsets = _unconditional._float_list(views, "--views")
    if not yaw_offsets:
        raise click.ClickException("--views: give at least one yaw offset")
    dev = generation.pick_device(device)
    try:
        path = generation_cond.pose_file(pose_dir, pose_id)
        model = load_smpl_model(smpl_model) if smpl_model is not None else None
        pose = generation_cond.load_pose(path, model=model, device=dev)
    except (generation_cond.PoseSelectionError, PoseFileError, UnsafePickleError, SMPLModelError,
            FileNotFoundError) as err:
        hint = " (stock PARE output: pass --smpl-model)" if "SMPL body model" in str(err) and model is None else ""
        raise click.ClickException(f"{err}{hint}") from None
    try:
        G = generation.load_generator(network, dev)
    except (CheckpointError, pickle.UnpicklingError, OSError, ValueError) as err:
        raise click.ClickException(str(err).splitlines()[0]) from None
    if not isinstance(G, ConditionalOrthoPlanesGenerator):
        raise click.ClickException(f"--network: {network} holds a {type(G).__name__}, not a pose-conditional "
                                   "generator (use gen_samples/unconditional/gen_samples.py)")
    try:
        generation_cond.check_pose_fits(G, pose, path)
    except ValueError as err:
        raise click.ClickException(str(err)) from None

    truncation_cutoff = generation.prepare_sampling(G, depth_samples, truncation_cutoff)
    os.makedirs(outdir, exist_ok=True)
    for seed in tqdm(seed_list, desc="seeds", unit="seed"):
        torch.manual_seed(seed)  # the renderer's stratified / importance draws
        name = f"seed{seed:04d}_pose{pose_id}"
        ws = generation.seed_to_ws(G, seed, truncation_psi, truncation_cutoff, fov_deg, dev)
        generation.save_view_strips(G, ws, yaw_offsets, outdir, name, extra_images, fov_deg=fov_deg,
                                    noise_mode=noise_mode, batch=batch, conditions=pose)
        if shapes:
            density = generation_cond.extract_conditional_density(G, ws, pose, shape_res, max_batch=max_batch,
                                                                  progress=True)
            volume = generation_cond.conditional_volume(density)
            target = os.path.join(outdir, f"{name}_Geometry{shape_format}")
            if shape_format == ".mrc":
                write_mrc(target, volume, voxel_size=G.settings.box_warp / (shape_res - 1))
                continue
            try:
                vertices, faces = generation_cond.conditional_mesh(volume, level, G.settings.box_warp)
            except ValueError as err:
                click.echo(f"seed {seed}: no mesh written: {err}", err=True)
                continue
            colors = None
            if mesh_colors:
                from op3d.mesh_colors import generator_vertex_colors

                colors = generator_vertex_colors(G, ws, vertices, faces, noise_mode, conditions=pose)
            write_mesh(target, vertices, faces, colors)


OWN_OPTIONS = [
    click.Option(["--network"], required=True,
                 help="Snapshot .pkl of a pose-conditional generator (official SHHQ conditional, or "
                 "train_conditional.py)."),
    click.Option(["--pose_id", "--pose-id", "pose_id"], type=click.IntRange(min=0), default=5, show_default=True,
                 help="Pose: reads {pose_id+1:06d}.pickle, or the pose_id-th file of a folder without that naming."),
    click.Option(["--pose-dir", "--pose_dir", "pose_dir"], default="processed_SHHQ_pose_cond",
                 show_default=True, help="Folder of pose-condition files (op3d.generation_cond.POSE_DIR)."),
    click.Option(["--smpl-model", "--smpl_model", "smpl_model"], default=None,
                 help="SMPL_NEUTRAL.pkl / .npz or its folder; needed only for stock PARE pose files."),
    click.Option(["--views"], default=DEFAULT_VIEWS, show_default=True,
                 help="Yaw offsets in radians from the frontal view (pitch offset is -0.2)."),
    click.Option(["--level"], type=float, default=40.0, show_default=True,
                 help="Iso level of meshes (density, at most 1/beta; the official README suggests 40 for SHHQ)."),
    click.Option(["--shape-res"], type=int, default=512, show_default=True,
                 help="Shape grid resolution N (N^3 points)."),
]

main = click.Command(
    "gen_samples", callback=run, help=__doc__,
    params=OWN_OPTIONS[:1] + [p for p in _unconditional.main.params if p.name not in REPLACED] + OWN_OPTIONS[1:])


if __name__ == "__main__":
    main()
