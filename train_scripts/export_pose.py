"""Turn per-image PARE outputs into pose-condition files for conditional training and generation.

    python train_scripts/export_pose.py --smpl_folder=pare_out/ --output_folder=processed_pose_cond \\
        --smpl-model=~/smpl/SMPL_NEUTRAL.pkl

Reads <name>.pkl (joblib or plain pickle; stock PARE image-folder output with pred_pose / pred_shape, or SMPL-output
files with tpose_vertices / fk_matrices / lbs_weights) and writes <name>.pickle with the five arrays the conditional
networks read: vertices, fk_matrices, lbs_weights, full_pose, body_shape (float32, canonical frame). Stock PARE
files hold SMPL parameters only and need the SMPL body model (op3d ships none). Nothing is executed from the input
files; errors write nothing.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


@click.command(help=__doc__)
@click.option("--smpl_folder", "--smpl-folder", "smpl_folder", required=True,
              help="Folder of PARE output files (.pkl, .pickle, .joblib), one per image.")
@click.option("--output_folder", "--output-folder", "output_folder", required=True,
              help="New (or empty) folder for the <name>.pickle pose files.")
@click.option("--n_poses", "--n-poses", "n_poses", type=click.IntRange(min=1), default=None,
              help="Convert only the first N files (sorted by name). Default: all.")
@click.option("--smpl-model", "--smpl_model", "smpl_model", default=None,
              help="SMPL_NEUTRAL.pkl / .npz, or its folder. Default: $OP3D_SMPL_DIR if set.")
@click.option("--person", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which detected person of each file (index into PARE's person axis).")
def main(smpl_folder, output_folder, n_poses, smpl_model, person):
    from op3d.data.pare_export import EXPORT_ERRORS, export_pose, optional_smpl_model

    model = None
    try:
        model = optional_smpl_model(smpl_model)
        summary = export_pose(smpl_folder, output_folder, n_poses=n_poses, model=model, person=person, progress=True)
    except EXPORT_ERRORS as err:
        hint = " (pass --smpl-model or set $OP3D_SMPL_DIR)" if model is None and "SMPL body model" in str(err) else ""
        raise click.ClickException(f"{err}{hint}") from None
    click.echo(summary)


if __name__ == "__main__":
    main()
