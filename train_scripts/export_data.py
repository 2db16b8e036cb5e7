"""Build a pose-conditioned training dataset from images and their PARE outputs.

    python train_scripts/export_data.py --image_folder=images/ --smpl_folder=pare_out/ --output_folder=data/shhq \\
        --smpl-model=~/smpl/SMPL_NEUTRAL.pkl

Pairs the sorted images with the sorted PARE files (the counts must match) and writes {i:06d}.png, dataset.json with
one camera label per image and processed_pose_cond/{i:06d}.pickle, which ConditionalImageDataset (and conditional
training) reads directly. The camera looks at the person from --camera_radius along the person's root orientation:
cam2world = (T @ R_root)^-1, T a translation by the radius along z, intrinsics [[f, 0, .5], [0, f, .5], [0, 0, 1]]
(R_root is the estimated rotation itself; the official script misread the axis-angle root as Euler angles).
Images must be square (or all resized to --resolution). Stock PARE files need the SMPL body model. Errors write
nothing.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


@click.command(help=__doc__)
@click.option("--image_folder", "--image-folder", "image_folder", required=True,
              help="Folder of images (walked recursively, sorted by relative path).")
@click.option("--smpl_folder", "--smpl-folder", "smpl_folder", required=True,
              help="Folder of PARE output files (.pkl, .pickle, .joblib), one per image.")
@click.option("--output_folder", "--output-folder", "output_folder", required=True,
              help="Output dataset: a new (or empty) folder, or a .zip.")
@click.option("--n_images", "--n-images", "n_images", type=click.IntRange(min=1), default=None,
              help="Export only the first N pairs. Default: all.")
@click.option("--focal_length", "--focal-length", "focal_length", type=click.FloatRange(min=0, min_open=True),
              default=4.2647, show_default=True, help="Normalized focal length of the labels (2985.29 / 700).")
@click.option("--camera_radius", "--camera-radius", "camera_radius", type=click.FloatRange(min=0, min_open=True),
              default=2.7, show_default=True, help="Camera distance from the person (world units).")
@click.option("--tune", is_flag=True,
              help="Accepted for the official command line; has no effect (the official script does not document it).")
@click.option("--variant", default=None,
              help="Accepted for the official command line; has no effect (the official script does not document it).")
@click.option("--smpl-model", "--smpl_model", "smpl_model", default=None,
              help="SMPL_NEUTRAL.pkl / .npz, or its folder. Default: $OP3D_SMPL_DIR if set.")
@click.option("--person", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which detected person of each PARE file.")
@click.option("--resolution", type=click.IntRange(min=1), default=None,
              help="Resize the (square) images to this size (normalized intrinsics are unchanged).")
def main(image_folder, smpl_folder, output_folder, n_images, focal_length, camera_radius, tune, variant, smpl_model,
         person, resolution):
    from op3d.data.pare_export import EXPORT_ERRORS, export_data, optional_smpl_model

    if tune or variant is not None:
        click.echo("note: --tune and --variant are accepted for compatibility and change nothing", err=True)
    model = None
    try:
        model = optional_smpl_model(smpl_model)
        summary = export_data(image_folder, smpl_folder, output_folder, n_images=n_images,
                              focal_length=focal_length, camera_radius=camera_radius, model=model, person=person,
                              resolution=resolution, progress=True)
    except EXPORT_ERRORS as err:
        hint = " (pass --smpl-model or set $OP3D_SMPL_DIR)" if model is None and "SMPL body model" in str(err) else ""
        raise click.ClickException(f"{err}{hint}") from None
    click.echo(summary)


if __name__ == "__main__":
    main()
