"""Train an unconditional OrthoPlanes (or EG3D tri-plane) GAN, on one GPU, many GPUs, many nodes, or a CPU.

    # one GPU
    python train_scripts/train_unconditional.py --outdir=runs --cfg=ffhq --data=ffhq512.zip --gpus=1 --batch=8 \\
        --gamma=1 --gen_pose_cond=True --plane_number=8 --fourier_L=10
    # 8 GPUs on this machine (or: torchrun --nproc_per_node=8 train_scripts/train_unconditional.py --gpus=8 ...)
    python train_scripts/train_unconditional.py --outdir=runs --cfg=ffhq --data=ffhq512.zip --gpus=8 --batch=32 --gamma=1
    # resume exactly from a run directory (or a snapshot .pkl; official pickles resume their weights only)
    python train_scripts/train_unconditional.py ... --resume=runs/00000-ffhq-ffhq512-gpus8-batch32-gamma1

EG3D: --generator=triplane trains EG3D's tri-plane model with EG3D's defaults (--map-depth 2, --cbase 32768,
--cmax 512) and the same --cfg values (ffhq, afhq, shapenet).

Every official option is accepted with its official default. Parsed but unused, as in the official script:
--c-noise, --sr_first_cutoff, --sr_first_stopband. --reg_type l1-alt / total-variation are refused (officially
they silently train without density regularisation). op3d additions: --device, --generator, --detector-dir, and
fractional --kimg / --tick for small runs; --cfg=tiny is a CPU-sized configuration for small images.
"""

import importlib.util
import json
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

CFGS = ["ffhq", "afhq", "shhq", "shhq48", "shapenet", "tiny"]


def _metrics(text: str) -> list:
    return [] if text.strip().lower() == "none" else [m.strip() for m in text.split(",") if m.strip()]


@click.command(help=__doc__)
@click.option("--outdir", required=True, help="Where to make the run directory.")
@click.option("--cfg", required=True, type=click.Choice(CFGS), help="Base configuration.")
@click.option("--data", required=True, help="Training data (zip or folder with dataset.json).")
@click.option("--gpus", required=True, type=click.IntRange(min=1), help="Number of processes (GPUs).")
@click.option("--batch", required=True, type=click.IntRange(min=1), help="Total batch size.")
@click.option("--gamma", required=True, type=click.FloatRange(min=0), help="R1 regularisation weight.")
@click.option("--cond", type=bool, default=True, show_default=True, help="Use the camera labels (required).")
@click.option("--mirror", type=bool, default=False, show_default=True,
              help="x-flip augmentation; op3d also mirrors the camera label.")
@click.option("--aug", type=click.Choice(["noaug", "ada", "fixed"]), default="noaug", show_default=True,
              help="Augmentation mode.")
@click.option("--resume", default=None, help="Run directory or snapshot pickle to resume from.")
@click.option("--freezed", type=click.IntRange(min=0), default=0, show_default=True, help="Freeze first D layers.")
@click.option("--p", type=click.FloatRange(min=0, max=1), default=0.2, show_default=True,
              help="Augmentation probability for --aug=fixed.")
@click.option("--target", type=click.FloatRange(min=0, max=1), default=0.6, show_default=True, help="ADA target.")
@click.option("--batch-gpu", type=click.IntRange(min=1), default=None, help="Images per process and chunk.")
@click.option("--cbase", type=click.IntRange(min=1), default=None,
              help="Channel base [default: 24576; EG3D's 32768 with --generator=triplane].")
@click.option("--cmax", type=click.IntRange(min=1), default=None,
              help="Channel maximum [default: 384; EG3D's 512 with --generator=triplane].")
@click.option("--glr", type=click.FloatRange(min=0), default=None, help="G learning rate [default: 0.0025].")
@click.option("--dlr", type=click.FloatRange(min=0), default=0.002, show_default=True, help="D learning rate.")
@click.option("--map-depth", type=click.IntRange(min=1), default=None,
              help="Mapping layers [default: 8; EG3D's 2 with --generator=triplane].")
@click.option("--mbstd-group", type=click.IntRange(min=1), default=4, show_default=True, help="Minibatch-std group.")
@click.option("--desc", default=None, help="Suffix of the run directory name.")
@click.option("--metrics", default="fid50k_full", show_default=True, help="Comma list of metrics, or none.")
@click.option("--kimg", type=click.FloatRange(min=0, min_open=True), default=25000, show_default=True,
              help="Training length in thousands of images.")
@click.option("--tick", type=click.FloatRange(min=0, min_open=True), default=4, show_default=True,
              help="kimg per progress tick.")
@click.option("--snap", type=click.IntRange(min=1), default=50, show_default=True,
              help="Ticks per snapshot (images, network, training state, metrics).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("--nobench", type=bool, default=False, show_default=True, help="Disable cuDNN benchmarking.")
@click.option("--workers", type=click.IntRange(min=0), default=3, show_default=True, help="DataLoader workers.")
@click.option("-n", "--dry-run", is_flag=True, help="Print the training options and exit.")
@click.option("--neural_rendering_resolution_initial", type=click.IntRange(min=1), default=64, show_default=True,
              help="Neural rendering resolution (--cfg=tiny: half the image size unless set).")
@click.option("--neural_rendering_resolution_final", type=click.IntRange(min=1), default=None,
              help="Final neural rendering resolution (enables the fade).")
@click.option("--neural_rendering_resolution_fade_kimg", type=click.FloatRange(min=0), default=1000,
              show_default=True, help="Neural rendering resolution fade length.")
@click.option("--blur_fade_kimg", type=click.FloatRange(min=0), default=200, show_default=True,
              help="Blur fade length (scaled by batch / 32).")
@click.option("--gen_pose_cond", type=bool, default=False, show_default=True, help="Generator pose conditioning.")
@click.option("--c-scale", type=click.FloatRange(min=0), default=1, show_default=True, help="Label multiplier.")
@click.option("--c-noise", type=click.FloatRange(min=0), default=0, show_default=True, help="Unused (official).")
@click.option("--gpc_reg_prob", type=click.FloatRange(min=0, max=1), default=0.5, show_default=True,
              help="Pose-conditioning swap probability.")
@click.option("--gpc_reg_fade_kimg", type=click.FloatRange(min=0), default=1000, show_default=True,
              help="Pose-conditioning swap fade length.")
@click.option("--disc_c_noise", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Noise on D's camera label.")
@click.option("--sr_noise_mode", type=click.Choice(["random", "none"]), default="none", show_default=True,
              help="Superresolution noise.")
@click.option("--resume_blur", type=bool, default=False, show_default=True, help="Keep the blur when resuming "
              "weights only.")
@click.option("--sr_num_fp16_res", type=click.IntRange(min=0), default=4, show_default=True, help="SR fp16 blocks.")
@click.option("--g_num_fp16_res", type=click.IntRange(min=0), default=0, show_default=True, help="G fp16 blocks.")
@click.option("--d_num_fp16_res", type=click.IntRange(min=0), default=4, show_default=True, help="D fp16 blocks.")
@click.option("--sr_first_cutoff", type=click.IntRange(min=2), default=2, show_default=True, help="Unused (official).")
@click.option("--sr_first_stopband", type=click.FloatRange(min=2), default=2 ** 2.1, show_default=True,
              help="Unused (official).")
@click.option("--style_mixing_prob", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Style mixing probability.")
@click.option("--sr-module", default=None, help="Superresolution module class path override.")
@click.option("--density_reg", type=click.FloatRange(min=0), default=0.25, show_default=True,
              help="Density regularisation weight.")
@click.option("--density_reg_every", type=click.FloatRange(min=1), default=4, show_default=True,
              help="Density regularisation interval (iterations).")
@click.option("--density_reg_p_dist", type=click.FloatRange(min=0), default=0.004, show_default=True,
              help="Density regularisation perturbation.")
@click.option("--reg_type", type=click.Choice(["l1", "l1-alt", "monotonic-detach", "monotonic-fixed",
                                               "total-variation"]), default="l1", show_default=True,
              help="Density regularisation type.")
@click.option("--decoder_lr_mul", type=click.FloatRange(min=0), default=1, show_default=True,
              help="Decoder learning-rate multiplier.")
@click.option("--plane_number", "plane_number", type=click.IntRange(min=4), default=8, show_default=True,
              help="K, planes per axis.")
@click.option("--fourier_L", "fourier_L", type=click.IntRange(min=0), default=10, show_default=True,
              help="L, Fourier frequencies of the plane positions.")
@click.option("--plane_projection", type=click.Choice(["compat", "consistent"]), default="compat", show_default=True,
              help="Plane lookup. compat: the official one, which released models need (OrthoPlanes scales only the XY "
              "group by 2/box_warp, so with box_warp=1 the box covers only the central half of the YZ and ZX "
              "planes; EG3D's planes never read (y, z)). consistent: every plane spans the box, for new models.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu) or a device.")
@click.option("--generator", type=click.Choice(["orthoplanes", "triplane"]), default="orthoplanes",
              show_default=True, help="Representation: OrthoPlanes, or EG3D tri-planes (with EG3D's size defaults; "
              "--plane_number / --fourier_L are then unused).")
@click.option("--detector-dir", default=None, help="Folder with the metric detector files.")
@click.option("--metrics-num-gen", type=click.IntRange(min=2), default=None,
              help="Generated images per metric instead of the metric's own (quick runs; not comparable).")
def main(dry_run, metrics, **kwargs):
    from op3d.training.launch import input_errors, launch, prepare
    from op3d.training.options import TrainingOptions

    opts = TrainingOptions(metrics=_metrics(metrics), **kwargs)
    try:
        if dry_run:
            click.echo(json.dumps(prepare(opts), indent=2))
            return
        launch(opts)
    except input_errors() as error:  # bad input is one line; any other error is a bug and keeps its traceback
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":
    main()
