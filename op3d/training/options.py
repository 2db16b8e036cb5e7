"""Training options: the official train script's options and defaults (spec 5.1), and the network, loss and loop
settings they imply (spec 1.6), in the official `training_options.json` layout.

    opts = TrainingOptions(outdir='runs', cfg='ffhq', data='ffhq512.zip', gpus=8, batch=32, gamma=1)
    spec = training_spec(opts, dataset_resolution=512, dataset_len=70000)   # the training_options.json dict
"""

from __future__ import annotations

import dataclasses
import re

from op3d.networks.superresolution import SMALL_VARIANT_PATH, variant_for_resolution
from op3d.rendering.settings import PLANE_PROJECTIONS

# Rendering settings per --cfg (spec 1.6). 'tiny' is op3d's CPU-sized config for small synthetic data.
CFG_RENDERING = {
    "ffhq": dict(depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1,
                 avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2]),
    "afhq": dict(depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1,
                 avg_camera_radius=2.7, avg_camera_pivot=[0, 0, -0.06]),
    "shhq": dict(depth_resolution=64, depth_resolution_importance=64, ray_start="auto", ray_end="auto", box_warp=1.0,
                 white_back=True, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0]),
    "shhq48": dict(depth_resolution=48, depth_resolution_importance=48, ray_start="auto", ray_end="auto", box_warp=1,
                   white_back=True, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0]),
    "shapenet": dict(depth_resolution=64, depth_resolution_importance=64, ray_start=0.1, ray_end=2.6, box_warp=1.6,
                     white_back=True, avg_camera_radius=1.7, avg_camera_pivot=[0, 0, 0]),
    "tiny": dict(depth_resolution=12, depth_resolution_importance=12, ray_start=2.25, ray_end=3.3, box_warp=1,
                 white_back=True, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0]),
}
# op3d's tiny config: small planes and backbone, neural rendering at half the image size.
TINY_G_KWARGS = dict(z_dim=64, plane_resolution=32)
REG_TYPES = ("l1", "l1-alt", "monotonic-detach", "monotonic-fixed", "total-variation")
AUG_MODES = ("noaug", "ada", "fixed")
GENERATORS = {"orthoplanes": "training.orthoplanes.TriMultiPlaneGenerator",
              "triplane": "training.triplane.TriPlaneGenerator"}
# Defaults of --cbase / --cmax / --map-depth per representation: OP3D's train script, and EG3D's for tri-planes.
SIZE_DEFAULTS = {"orthoplanes": dict(cbase=24576, cmax=384, map_depth=8),
                 "triplane": dict(cbase=32768, cmax=512, map_depth=2)}


@dataclasses.dataclass
class TrainingOptions:
    """Every option of train_unconditional.py, with the official defaults. Options the official script parses but
    never uses are kept (and documented in the CLI) so existing command lines work: c_noise, sr_first_cutoff,
    sr_first_stopband. op3d additions: device, generator, detector_dir, metrics_num_gen, fractional kimg/tick. cbase, cmax and
    map_depth left at None take the representation's official default (SIZE_DEFAULTS)."""

    def __post_init__(self):
        for name, value in SIZE_DEFAULTS.get(self.generator, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
    outdir: str
    cfg: str
    data: str
    gpus: int
    batch: int
    gamma: float
    cond: bool = True
    mirror: bool = False
    aug: str = "noaug"
    resume: str | None = None
    freezed: int = 0
    p: float = 0.2
    target: float = 0.6
    batch_gpu: int | None = None
    cbase: int | None = None
    cmax: int | None = None
    glr: float | None = None
    dlr: float = 0.002
    map_depth: int | None = None
    mbstd_group: int = 4
    desc: str | None = None
    metrics: list = dataclasses.field(default_factory=lambda: ["fid50k_full"])
    kimg: float = 25000
    tick: float = 4
    snap: int = 50
    seed: int = 0
    nobench: bool = False
    workers: int = 3
    neural_rendering_resolution_initial: int = 64
    neural_rendering_resolution_final: int | None = None
    neural_rendering_resolution_fade_kimg: float = 1000
    blur_fade_kimg: float = 200
    gen_pose_cond: bool = False
    c_scale: float = 1
    c_noise: float = 0
    gpc_reg_prob: float = 0.5
    gpc_reg_fade_kimg: float = 1000
    disc_c_noise: float = 0
    sr_noise_mode: str = "none"
    resume_blur: bool = False
    sr_num_fp16_res: int = 4
    g_num_fp16_res: int = 0
    d_num_fp16_res: int = 4
    sr_first_cutoff: float = 2
    sr_first_stopband: float = 2 ** 2.1
    style_mixing_prob: float = 0
    sr_module: str | None = None
    density_reg: float = 0.25
    density_reg_every: float = 4
    density_reg_p_dist: float = 0.004
    reg_type: str = "l1"
    decoder_lr_mul: float = 1
    plane_number: int = 8
    fourier_L: int = 10
    plane_projection: str = "compat"
    device: str = "auto"
    generator: str = "orthoplanes"
    detector_dir: str | None = None
    metrics_num_gen: int | None = None
    z_dim: int = 512


class OptionsError(ValueError):
    """An invalid option combination; the message names the option."""


def check_options(opts: TrainingOptions) -> None:
    """The official checks (batch divisibility, minimum batch per GPU, known cfg) plus op3d's, as OptionsError."""
    if opts.cfg not in CFG_RENDERING:
        raise OptionsError(f"--cfg: expected one of {', '.join(CFG_RENDERING)}, got {opts.cfg!r}")
    if opts.generator not in GENERATORS:
        raise OptionsError(f"--generator: expected one of {', '.join(GENERATORS)}, got {opts.generator!r}")
    if opts.aug not in AUG_MODES:
        raise OptionsError(f"--aug: expected one of {', '.join(AUG_MODES)}, got {opts.aug!r}")
    if opts.plane_projection not in PLANE_PROJECTIONS:
        raise OptionsError(f"--plane_projection: expected one of {', '.join(PLANE_PROJECTIONS)}, got "
                           f"{opts.plane_projection!r}")
    if opts.reg_type not in REG_TYPES:
        raise OptionsError(f"--reg_type: expected one of {', '.join(REG_TYPES)}, got {opts.reg_type!r}")
    if opts.reg_type in ("l1-alt", "total-variation"):
        raise OptionsError(f"--reg_type: {opts.reg_type} is accepted by the official script but implemented nowhere "
                           "(it would train without density regularisation); use l1, monotonic-detach or "
                           "monotonic-fixed")
    batch_gpu = opts.batch_gpu or opts.batch // opts.gpus
    if opts.batch % opts.gpus or opts.batch % (opts.gpus * batch_gpu):
        raise OptionsError(f"--batch: {opts.batch} must be a multiple of --gpus ({opts.gpus}) times --batch-gpu "
                           f"({batch_gpu})")
    if batch_gpu < opts.mbstd_group:
        raise OptionsError(f"--batch-gpu: {batch_gpu} images per GPU is fewer than --mbstd-group ({opts.mbstd_group})")
    if opts.plane_number < 4 or opts.fourier_L < 0:
        raise OptionsError(f"--plane_number >= 4 and --fourier_L >= 0 expected, got {opts.plane_number}, "
                           f"{opts.fourier_L}")
    if not opts.cond:
        raise OptionsError("--cond=False: the camera labels are required for rendering (the official script fails "
                           "the same way later)")


def superresolution_module(opts: TrainingOptions, resolution: int) -> str:
    """--sr-module, else the official class for 128/256/512 (op3d's small 2x module for other sizes with 'tiny')."""
    if opts.sr_module:
        return opts.sr_module
    if opts.cfg == "tiny" and resolution not in (128, 256, 512):
        return SMALL_VARIANT_PATH
    try:
        return "training.superresolution." + variant_for_resolution(resolution)
    except ValueError:
        raise OptionsError(f"--data: {resolution}x{resolution} images have no superresolution module (expected 128, "
                           "256 or 512, or --cfg=tiny for small images)") from None


def training_spec(opts: TrainingOptions, dataset_resolution: int, dataset_len: int,
                  resume_continues: bool = False) -> dict:
    """The training_options.json dict, as the official script builds it (plus op3d keys where op3d adds
    settings). With --resume, the official fine-tuning changes (no blur, no pose-swap fade, no EMA ramp-up,
    ADA over 100 kimg) apply unless resume_continues: an op3d training state resumes the run exactly instead."""
    check_options(opts)
    batch_gpu = opts.batch_gpu or opts.batch // opts.gpus
    rendering = dict(image_resolution=dataset_resolution, disparity_space_sampling=False, clamp_mode="softplus",
                     superresolution_module=superresolution_module(opts, dataset_resolution),
                     c_gen_conditioning_zero=not opts.gen_pose_cond,
                     gpc_reg_prob=opts.gpc_reg_prob if opts.gen_pose_cond else None, c_scale=opts.c_scale,
                     superresolution_noise_mode=opts.sr_noise_mode, density_reg=opts.density_reg,
                     density_reg_p_dist=opts.density_reg_p_dist, reg_type=opts.reg_type,
                     decoder_lr_mul=opts.decoder_lr_mul, sr_antialias=True, **CFG_RENDERING[opts.cfg])
    if opts.plane_projection != "compat":  # an op3d key: absent, as in the official options, for the default
        rendering["plane_projection"] = opts.plane_projection
    common = dict(channel_base=opts.cbase, channel_max=opts.cmax, fused_modconv_default="inference_only")
    G_kwargs = dict(class_name=GENERATORS[opts.generator], z_dim=opts.z_dim, w_dim=512,
                    mapping_kwargs=dict(num_layers=opts.map_depth), **common, rendering_kwargs=rendering,
                    num_fp16_res=opts.g_num_fp16_res)
    if opts.generator == "orthoplanes":
        G_kwargs.update(per_dir_plane_number=opts.plane_number, fourier_L=opts.fourier_L)
    G_kwargs.update(sr_num_fp16_res=opts.sr_num_fp16_res, sr_kwargs=dict(common),
                    conv_clamp=256 if opts.g_num_fp16_res > 0 else None)
    if opts.cfg == "tiny":
        G_kwargs.update(TINY_G_KWARGS)
    D_kwargs = dict(class_name="training.dual_discriminator.DualDiscriminator",
                    block_kwargs=dict(freeze_layers=opts.freezed), mapping_kwargs={},
                    epilogue_kwargs=dict(mbstd_group_size=opts.mbstd_group), channel_base=opts.cbase,
                    channel_max=opts.cmax, disc_c_noise=opts.disc_c_noise, num_fp16_res=opts.d_num_fp16_res,
                    conv_clamp=256 if opts.d_num_fp16_res > 0 else None)
    glr = opts.glr if opts.glr is not None else 0.0025
    nrr_initial = opts.neural_rendering_resolution_initial
    if opts.cfg == "tiny" and nrr_initial == 64:  # the official default does not fit small images
        nrr_initial = dataset_resolution // 2
    loss_kwargs = dict(class_name="training.loss.StyleGAN2Loss", r1_gamma=float(opts.gamma),
                       filter_mode="antialiased", blur_init_sigma=10,
                       blur_fade_kimg=opts.batch * opts.blur_fade_kimg / 32,
                       gpc_reg_prob=opts.gpc_reg_prob if opts.gen_pose_cond else None,
                       gpc_reg_fade_kimg=opts.gpc_reg_fade_kimg, dual_discrimination=True,
                       neural_rendering_resolution_initial=nrr_initial,
                       neural_rendering_resolution_final=opts.neural_rendering_resolution_final,
                       neural_rendering_resolution_fade_kimg=opts.neural_rendering_resolution_fade_kimg,
                       style_mixing_prob=opts.style_mixing_prob)
    spec = dict(
        G_kwargs=G_kwargs, D_kwargs=D_kwargs,
        G_opt_kwargs=dict(class_name="torch.optim.Adam", betas=[0, 0.99], eps=1e-8, lr=glr),
        D_opt_kwargs=dict(class_name="torch.optim.Adam", betas=[0, 0.99], eps=1e-8, lr=opts.dlr),
        loss_kwargs=loss_kwargs,
        data_loader_kwargs=dict(pin_memory=True, prefetch_factor=2, num_workers=opts.workers),
        training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path=opts.data, use_labels=True,
                                 max_size=dataset_len, xflip=opts.mirror, resolution=dataset_resolution,
                                 random_seed=opts.seed),
        num_gpus=opts.gpus, batch_size=opts.batch, batch_gpu=batch_gpu, metrics=list(opts.metrics),
        total_kimg=opts.kimg, kimg_per_tick=opts.tick, image_snapshot_ticks=opts.snap,
        network_snapshot_ticks=opts.snap, random_seed=opts.seed, ema_kimg=opts.batch * 10 / 32,
    )
    if opts.metrics_num_gen is not None:
        spec["metrics_num_gen"] = opts.metrics_num_gen  # op3d: fewer fakes per metric, for quick runs
    if opts.density_reg > 0:
        spec["G_reg_interval"] = opts.density_reg_every
    if opts.aug != "noaug":
        spec["augment_kwargs"] = dict(class_name="training.augment.AugmentPipe", xflip=1, rotate90=1, xint=1,
                                      scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1,
                                      hue=1, saturation=1)
        if opts.aug == "ada":
            spec["ada_target"] = opts.target
        else:
            spec["augment_p"] = opts.p
    if opts.resume is not None:
        spec["resume_pkl"] = opts.resume
    if opts.resume is not None and not resume_continues:
        spec.update(ada_kimg=100, ema_rampup=None)
        if not opts.resume_blur:
            spec["loss_kwargs"].update(blur_init_sigma=0, gpc_reg_fade_kimg=0)
    return spec


def run_name(opts: TrainingOptions, existing: list[str], dataset_name: str) -> str:
    """'<NNNNN>-<cfg>-<data>-gpus<G>-batch<B>-gamma<g>[-desc]' with NNNNN one past the largest existing id."""
    ids = [int(m.group()) for name in existing if (m := re.match(r"^\d+", name))]
    name = f"{max(ids, default=-1) + 1:05d}-{opts.cfg}-{dataset_name}-gpus{opts.gpus}-batch{opts.batch}-gamma{opts.gamma:g}"
    return name + (f"-{opts.desc}" if opts.desc else "")
