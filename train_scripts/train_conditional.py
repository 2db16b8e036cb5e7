"""Train the SMPL-pose conditional OrthoPlanes GAN (OP3D's SHHQ model), on one GPU, many GPUs, many nodes, or a CPU.

\b
    # data: images + PARE outputs -> dataset with processed_pose_cond/ (train_scripts/export_data.py)
    python train_scripts/train_conditional.py --outdir=runs --cfg=shhq --data=data/shhq --gpus=8 --batch=32 \\
        --gamma=20 --gen_pose_cond=False --plane_number=8 --fourier_L=10 --smpl-model=~/smpl/SMPL_NEUTRAL.pkl
    # CPU smoke run on small images
    python train_scripts/train_conditional.py --outdir=runs --cfg=tiny --data=data/small --gpus=1 --batch=4 \\
        --gamma=1 --kimg=0.02 --tick=0.004 --snap=1 --smpl-model=~/smpl

Every option of train_unconditional.py is accepted, with the same defaults and the same launch (one process per
GPU, or torchrun), except: --metrics defaults to none and only none is accepted (the metrics render without a
pose), --fourier_L must be 10 (fixed in the conditional generator), --mirror is refused, and there is no
--generator. Added: --pose-dir (pose-condition folder; default: the dataset's processed_pose_cond/, then one beside
it, then ./processed_pose_cond), --smpl-model (the SMPL file or folder the body mesh faces come from; default
$OP3D_SMPL_DIR; op3d ships no SMPL data), and the intended conditional loss's settings (--prior_weight,
--eikonal_weight, --curriculum_kimg). G renders every fake with the pose of a real image; the SDF prior and
eikonal terms are added to G's loss; the curriculum decides whether D sees the real SMPL conditions or zeros and
whether fakes take the real or a generated camera. Snapshots load with op3d.load_network_pkl and feed
gen_samples/conditional/gen_samples.py.
"""

import importlib.util
import json
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# The unconditional script holds the official option list; this script takes it over (spec 5.1: the official
# conditional script is a copy of the unconditional one) and changes only what differs.
_spec = importlib.util.spec_from_file_location("op3d_train_unconditional",
                                               pathlib.Path(__file__).with_name("train_unconditional.py"))
_unconditional = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_unconditional)
REPLACED = ("metrics", "fourier_L", "generator")


def _curriculum(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected four comma-separated kimg values, got {text!r}") from None
    if len(values) != 4:
        raise click.BadParameter(f"expected four comma-separated kimg values, got {text!r}")
    return values


def run(dry_run, metrics, curriculum_kimg, **kwargs):
    from op3d.training.launch import input_errors, launch, prepare
    from op3d.training.options_cond import ConditionalTrainingOptions

    try:
        opts = ConditionalTrainingOptions(metrics=_unconditional._metrics(metrics),
                                          curriculum_kimg=_curriculum(curriculum_kimg), **kwargs)
        if dry_run:
            click.echo(json.dumps(prepare(opts), indent=2))
            return
        launch(opts)
    except click.BadParameter as error:
        raise click.ClickException(f"--curriculum_kimg: {error.message}") from None
    except input_errors() as error:  # bad input is one line; any other error is a bug and keeps its traceback
        raise click.ClickException(str(error)) from None


OWN_OPTIONS = [
    click.Option(["--metrics"], default="none", show_default=True,
                 help="Metrics: only none (the official metrics render without a pose)."),
    click.Option(["--fourier_L", "fourier_L"], type=click.IntRange(min=0), default=10, show_default=True,
                 help="L, Fourier frequencies of the plane positions: fixed to 10 in the conditional generator."),
    click.Option(["--pose-dir", "--pose_dir", "pose_dir"], default=None,
                 help="Pose-condition folder (<image name>.pickle per image) [default: processed_pose_cond/ inside "
                 "the dataset, beside it, or in the working directory]."),
    click.Option(["--smpl-model", "--smpl_model", "smpl_model"], default=None,
                 help="SMPL_NEUTRAL.pkl / .npz or its folder (body mesh faces) [default: $OP3D_SMPL_DIR]."),
    click.Option(["--prior_weight", "--prior-weight", "prior_weight"], type=click.FloatRange(min=0), default=1.0,
                 show_default=True, help="Weight of the SDF prior mean((sdf - sdf_smpl)^2) in G's loss."),
    click.Option(["--eikonal_weight", "--eikonal-weight", "eikonal_weight"], type=click.FloatRange(min=0),
                 default=1e-3, show_default=True, help="Weight of the eikonal term mean((g^2 - 1)^2) in G's loss."),
    click.Option(["--curriculum_kimg", "--curriculum-kimg", "curriculum_kimg"], default="200,400,800,1200",
                 show_default=True, help="kimg where D's conditioning changes: zeroed + generated camera, real + "
                 "real camera, zeroed + generated, real + real, then real conditions + generated camera."),
]

main = click.Command(
    "train_conditional", callback=run, help=__doc__,
    params=[p for p in _unconditional.main.params if p.name not in REPLACED] + OWN_OPTIONS)


if __name__ == "__main__":
    main()
