"""Multi-view images and 3D shapes from an OrthoPlanes or EG3D checkpoint (official or op3d), on CPU or GPU.

    python gen_samples/unconditional/gen_samples.py --network=op3d-ffhq-512-128-withc-7plane.pkl \\
        --seeds=0-3 --trunc=0.7 --shapes=true --outdir=out

Writes per seed: seed%04d_RGB.png (the views side by side), optionally seed%04d_raw.png / seed%04d_depth.png,
and with --shapes seed%04d_Geometry.mrc (raw density, flipped along x, border set to -1000, as the official script)
or a mesh (.ply / .obj, marching cubes at --level, vertices in world units).
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

SHAPE_FORMATS = (".mrc", ".ply", ".obj")


def _float_list(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.ClickException(f"{name}: expected comma-separated numbers, got {text!r}") from None


@click.command(help=__doc__)
@click.option("--network", "network", default=None,
              help="Snapshot .pkl (official OP3D/EG3D or op3d), or 'random-tiny' for an untrained generator "
              "[default: op3d's bundled 32-px demo model, trained on synthetic spheres and boxes].")
@click.option("--seeds", required=True, help="Seeds, e.g. '0-3,7'.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", "truncation_cutoff", type=int, default=14, show_default=True,
              help="Truncate the first N ws (14 = all).")
@click.option("--class", "class_idx", type=int, default=None, help="Accepted for compatibility; unused.")
@click.option("--outdir", required=True, help="Output folder (created).")
@click.option("--shapes", type=bool, default=False, show_default=True, help="Also extract a 3D shape per seed.")
@click.option("--shape-res", type=int, default=None,
              help="Shape grid resolution N (N^3 points) [default: 512; 128 for the bundled demo model].")
@click.option("--shape-format", default=".mrc", show_default=True, help="One of .mrc, .ply, .obj.")
@click.option("--fov-deg", type=float, default=18.837, show_default=True,
              help="Field of view in degrees (the official script silently used 18).")
@click.option("--reload_modules", type=bool, default=False, help="Accepted for compatibility; op3d always builds "
              "its own modules.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu), or a torch device.")
@click.option("--batch", type=int, default=1, show_default=True, help="Views rendered per forward pass.")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True,
              help="Backbone noise. The official script used 'random' (unseeded); 'const' makes runs repeatable.")
@click.option("--views", default="0.8,0.6,0.4,0,-0.4,-0.6,-0.8", show_default=True,
              help="Yaw offsets in radians from the frontal view (pitch offset is -0.2).")
@click.option("--depth-samples", type=int, default=96, show_default=True,
              help="Coarse and importance samples per ray (the official script forces 96 + 96).")
@click.option("--max-batch", type=int, default=1_000_000, show_default=True, help="Shape points per decoder chunk.")
@click.option("--level", type=float, default=10.0, show_default=True,
              help="Iso level of meshes (raw density): 10 for FFHQ/AFHQ, 40 suggested for SHHQ.")
@click.option("--mesh-colors", type=bool, default=False, show_default=True,
              help="With --shape-format=.ply/.obj: colour each vertex with the generator's own colour field, as a "
              "camera looking at it along its normal sees it (op3d.mesh_colors).")
@click.option("--extra-images", type=bool, default=False, show_default=True,
              help="Also write the raw (neural-rendered) and depth images.")
def main(network, seeds, truncation_psi, truncation_cutoff, class_idx, outdir, shapes, shape_res, shape_format,
         fov_deg, reload_modules, device, batch, noise_mode, views, depth_samples, max_batch, level, mesh_colors,
         extra_images):
    import os
    import pickle

    import torch
    from tqdm import tqdm

    from op3d import generation, shapes as shape_io
    from op3d.checkpoints import CheckpointError

    if network is None:
        network = generation.DEMO_NETWORK
    if shape_res is None:
        shape_res = generation.DEMO_SHAPE_RES if network == generation.DEMO_NETWORK else 512
    # Validate everything before touching the output folder.
    try:
        seed_list = generation.parse_range(seeds, "--seeds")
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if shape_format not in SHAPE_FORMATS:
        raise click.ClickException(f"--shape-format: expected one of {', '.join(SHAPE_FORMATS)}, got {shape_format!r}")
    if mesh_colors and shape_format == ".mrc":
        raise click.ClickException("--mesh-colors: needs --shape-format=.ply or .obj (an .mrc volume has no vertices)")
    for name, value, low in (("--shape-res", shape_res, 2), ("--batch", batch, 1), ("--depth-samples", depth_samples, 2),
                             ("--max-batch", max_batch, 1)):
        if value < low:
            raise click.ClickException(f"{name}: must be >= {low}, got {value}")
    yaw_offsets = _float_list(views, "--views")
    if not yaw_offsets:
        raise click.ClickException("--views: give at least one yaw offset")
    dev = generation.pick_device(device)
    try:
        G = generation.load_generator(network, dev)
    except (CheckpointError, pickle.UnpicklingError, OSError, ValueError) as err:
        raise click.ClickException(str(err).splitlines()[0]) from None

    truncation_cutoff = generation.prepare_sampling(G, depth_samples, truncation_cutoff)
    os.makedirs(outdir, exist_ok=True)
    for seed in tqdm(seed_list, desc="seeds", unit="seed"):
        torch.manual_seed(seed)  # the renderer's stratified / importance draws
        ws = generation.seed_to_ws(G, seed, truncation_psi, truncation_cutoff, fov_deg, dev)
        generation.save_view_strips(G, ws, yaw_offsets, outdir, f"seed{seed:04d}", extra_images, fov_deg=fov_deg,
                                    noise_mode=noise_mode, batch=batch)
        if shapes:
            sigma = shape_io.extract_density(G, ws, shape_res, max_batch=max_batch, progress=True)
            path = os.path.join(outdir, f"seed{seed:04d}_Geometry{shape_format}")
            if shape_format == ".mrc":
                shape_io.write_mrc(path, shape_io.official_volume(sigma), voxel_size=G.settings.box_warp / (shape_res - 1))
            else:
                try:
                    vertices, faces = shape_io.density_mesh(sigma, level, G.settings.box_warp)
                except ValueError as err:
                    click.echo(f"seed {seed}: no mesh written: {err}", err=True)
                    continue
                colors = None
                if mesh_colors:
                    from op3d.mesh_colors import generator_vertex_colors

                    colors = generator_vertex_colors(G, ws, vertices, faces, noise_mode=noise_mode)
                shape_io.write_mesh(path, vertices, faces, colors)


if __name__ == "__main__":
    main()
