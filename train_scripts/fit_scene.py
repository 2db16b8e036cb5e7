"""Fit one static scene from posed images by optimising OrthoPlanes or tri-plane tensors directly (no GAN), with the
generators' own lookup, decoder and renderer (op3d.scene_fitting), and report held-out PSNR, depth error and the
Chamfer distance of the extracted mesh.

    # make op3d's demanding synthetic scene (several objects, thin parts, textures) and fit OrthoPlanes to it
    python train_scripts/fit_scene.py --make-scene=table --data=scenes/table
    # the OP3D poster's comparison at matched size: tri-plane (H^2, 4C), tri-plane ((2H)^2, C), OrthoPlanes (H^2, C, 4)
    python train_scripts/fit_scene.py --data=scenes/table --table

--data is a folder with train/ and test/ op3d datasets (as --make-scene writes, with exact depth and surface
points), or one op3d dataset (images + dataset.json with EG3D's 25-float cameras, e.g. NeRF-synthetic converted),
of which every 8th view is held out. The scene must lie inside the cube of side --box-warp centred at the origin.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

COLUMNS = ("label", "plane_parameters", "psnr", "depth_error", "chamfer", "seconds")


@click.command(help=__doc__)
@click.option("--data", required=True, help="Scene folder (train/, test/) or one dataset.")
@click.option("--make-scene", type=click.Choice(["table", "blocks"]), help="First write this synthetic scene to --data.")
@click.option("--views", type=click.IntRange(min=1), default=48, show_default=True, help="--make-scene: training views.")
@click.option("--test-views", type=click.IntRange(min=1), default=8, show_default=True, help="--make-scene: held-out views.")
@click.option("--resolution", type=click.IntRange(min=8), default=64, show_default=True, help="--make-scene: image size.")
@click.option("--representation", type=click.Choice(["orthoplanes", "triplane"]), default="orthoplanes",
              show_default=True, help="Representation (without --table).")
@click.option("--plane-res", type=click.IntRange(min=2), default=32, show_default=True, help="Plane size H.")
@click.option("--channels", type=click.IntRange(min=1), default=8, show_default=True, help="Plane channels C.")
@click.option("--planes-per-axis", "k", type=click.IntRange(min=1), default=4, show_default=True, help="OrthoPlanes K.")
@click.option("--table", is_flag=True, help="Fit tri-plane (H^2, 4C), tri-plane ((2H)^2, C), OrthoPlanes (H^2, C, K=4).")
@click.option("--steps", type=click.IntRange(min=1), default=1500, show_default=True, help="Adam steps.")
@click.option("--rays", type=click.IntRange(min=1), default=1024, show_default=True, help="Rays per step.")
@click.option("--samples", type=click.IntRange(min=2), default=24, show_default=True, help="Coarse (= fine) samples per ray.")
@click.option("--lr-planes", type=click.FloatRange(min=0), default=0.02, show_default=True, help="Planes' learning rate.")
@click.option("--lr-decoder", type=click.FloatRange(min=0), default=0.005, show_default=True, help="Decoder's learning rate.")
@click.option("--tv", "tv_weight", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Total-variation weight.")
@click.option("--box-warp", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Side of the cube the planes span (world units).")
@click.option("--white-back/--black-back", default=True, show_default=True, help="Background the field is composited on.")
@click.option("--mesh-res", type=click.IntRange(min=8), default=128, show_default=True, help="Shape grid for the mesh.")
@click.option("--level", type=float, default=10.0, show_default=True, help="Raw density level of the mesh.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of init and rays.")
@click.option("--threads", type=click.IntRange(min=1), help="Torch CPU threads (default: torch's).")
def main(data, make_scene, views, test_views, resolution, representation, plane_res, channels, k, table, steps, rays,
         samples, lr_planes, lr_decoder, tv_weight, box_warp, white_back, mesh_res, level, seed, threads):
    import torch

    from op3d.scene_fitting import field, fit
    from op3d.training.dataset import DatasetError

    if threads:
        torch.set_num_threads(threads)
    try:
        if make_scene:
            from op3d.data.scenes import make_scene_dataset

            make_scene_dataset(data, make_scene, views, test_views, resolution, seed)
            click.echo(f"{data}: scene {make_scene!r}, {views} training and {test_views} held-out views")
        train, test, surface = fit.split_views(data)
    except (DatasetError, FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    specs = (field.matched_specs(plane_res, channels) if table
             else [field.FieldSpec(representation, plane_res, channels, k)])
    options = fit.FitOptions(steps=steps, rays=rays, lr_planes=lr_planes, lr_decoder=lr_decoder,
                             tv_weight=tv_weight, samples=samples, box_warp=box_warp, white_back=white_back,
                             seed=seed)
    click.echo(f"{len(train)} training views, {len(test)} held-out views, {options}")
    rows = []
    for spec in specs:
        result, _ = fit.fit_and_evaluate(
            spec, train, test, surface, options, mesh_resolution=mesh_res, level=level,
            progress=lambda step, loss: click.echo(f"  {spec.label} step {step} loss {loss:.4f}"))
        rows.append(result)
    click.echo("\n| representation | plane parameters | held-out PSNR (dB) | depth error | Chamfer | fit time (s) |")
    click.echo("|---|---|---|---|---|---|")
    for r in rows:
        click.echo(f"| {r['label']} | {r['plane_parameters']} | {r['psnr']:.2f} | {r['depth_error']:.4f} | "
                   f"{r['chamfer']:.4f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
