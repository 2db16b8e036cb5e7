"""Options of SMPL-conditional training (train_conditional.py): the unconditional options of
:mod:`op3d.training.options` (the official conditional script is a copy of the unconditional one, spec 5.1) plus the
pose-condition folder, the SMPL model (for the body mesh faces) and the intended conditional loss's settings
(spec 4.7), and the training_options.json dict they imply.

What differs from the unconditional spec, and why:
* G is the conditional generator (official `training.kaolin_version.TriMultiPlaneGenerator`): K is passed as
  `planes` and L is fixed to 10 (the official script passed per_dir_plane_number / fourier_L, which the class
  rejects: a TypeError at construction).
* D is `DualDiscriminatorWithWarping` (camera + betas + pose label; the official script still chose the plain
  DualDiscriminator, which the released conditional pickle does not have).
* The loss is the intended `StyleGAN2LossWithWarpingSDF` (op3d.training.loss_cond), with prior_weight,
  eikonal_weight and curriculum_kimg.
* The dataset is the pose-conditioned one (pose_dir added to training_set_kwargs; xflip is refused).
* grad_clip_norm = 5: the official conditional loop clips the gradient norm to 5 (op3d clips the process-averaged
  gradient, so one process and many still train alike).
* metrics are refused: the official metrics render G(z, c) without a pose (they fail for the conditional model).
"""

from __future__ import annotations

import dataclasses

from op3d.training.loss_cond import CURRICULUM_KIMG, EIKONAL_WEIGHT, PRIOR_WEIGHT, check_curriculum
from op3d.training.options import OptionsError, TrainingOptions, training_spec

CONDITIONAL_GENERATOR = "training.kaolin_version.TriMultiPlaneGenerator"
CONDITIONAL_DISCRIMINATOR = "training.dual_discriminator.DualDiscriminatorWithWarping"
CONDITIONAL_LOSS = "training.loss.StyleGAN2LossWithWarpingSDF"
CONDITIONAL_DATASET = "training.dataset_cond.ImageFolderDataset"
CONDITIONAL_L = 10
GRAD_CLIP_NORM = 5.0


@dataclasses.dataclass
class ConditionalTrainingOptions(TrainingOptions):
    """TrainingOptions of train_conditional.py. Additions: pose_dir (pose-condition folder; default: the dataset's
    processed_pose_cond/, see op3d.datasets.conditional), smpl_model (SMPL file or folder, default
    $OP3D_SMPL_DIR: the generator needs the body's faces), prior_weight, eikonal_weight, curriculum_kimg."""

    metrics: list = dataclasses.field(default_factory=list)
    pose_dir: str | None = None
    smpl_model: str | None = None
    prior_weight: float = PRIOR_WEIGHT
    eikonal_weight: float = EIKONAL_WEIGHT
    curriculum_kimg: tuple = CURRICULUM_KIMG


def check_conditional_options(opts: ConditionalTrainingOptions) -> None:
    """The conditional model's own limits, as OptionsError naming the flag."""
    if opts.generator != "orthoplanes":
        raise OptionsError(f"--generator: conditional training has only the OrthoPlanes generator, got "
                           f"{opts.generator!r}")
    if opts.fourier_L != CONDITIONAL_L:
        raise OptionsError(f"--fourier_L: the conditional generator's L is fixed to {CONDITIONAL_L}, got "
                           f"{opts.fourier_L}")
    if opts.mirror:
        raise OptionsError("--mirror: not supported for pose-conditioned data (a mirrored image needs a mirrored "
                           "SMPL body)")
    if opts.metrics:
        raise OptionsError(f"--metrics: {','.join(opts.metrics)} cannot be computed for the conditional generator "
                           "(the metrics render G(z, c) without a pose; the official ones fail the same way); use "
                           "--metrics=none")
    if opts.prior_weight < 0 or opts.eikonal_weight < 0:
        raise OptionsError(f"--prior_weight / --eikonal_weight: must be >= 0, got {opts.prior_weight} / "
                           f"{opts.eikonal_weight}")
    try:
        check_curriculum(opts.curriculum_kimg)
    except ValueError as error:
        raise OptionsError(f"--curriculum_kimg: {error}") from None


def conditional_training_spec(opts: ConditionalTrainingOptions, dataset_resolution: int, dataset_len: int,
                              resume_continues: bool = False, smpl_model: str | None = None) -> dict:
    """The training_options.json dict of a conditional run: training_spec's, changed as the module docstring says.
    smpl_model: the SMPL file the faces are read from (resolved path), stored as the op3d key 'smpl_model'."""
    check_conditional_options(opts)
    spec = training_spec(opts, dataset_resolution, dataset_len, resume_continues=resume_continues)
    G_kwargs = spec["G_kwargs"]
    G_kwargs["class_name"] = CONDITIONAL_GENERATOR
    G_kwargs["planes"] = G_kwargs.pop("per_dir_plane_number")
    del G_kwargs["fourier_L"]
    spec["D_kwargs"]["class_name"] = CONDITIONAL_DISCRIMINATOR
    spec["loss_kwargs"].update(class_name=CONDITIONAL_LOSS, prior_weight=opts.prior_weight,
                               eikonal_weight=opts.eikonal_weight, curriculum_kimg=list(opts.curriculum_kimg))
    spec["training_set_kwargs"].update(class_name=CONDITIONAL_DATASET, pose_dir=opts.pose_dir)
    spec["grad_clip_norm"] = GRAD_CLIP_NORM
    spec["smpl_model"] = smpl_model
    return spec
