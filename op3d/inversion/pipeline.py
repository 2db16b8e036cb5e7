"""The whole inversion as the projector script runs it: check the inputs, project (stage 1), tune (stage 2), write
the outputs.

    job = InversionJob(network='ffhq.pkl', targets=['face.png'], cameras=['face.json'], outdir='out')
    prepared = prepare(job)        # every input checked and loaded; raises InputError / DetectorError / ...
    summary = run(prepared)        # writes the files listed in docs/inversion.md

With one target the files go into outdir; with several (optimised together as one batch, one tuned generator)
each target's files go into outdir/<target file stem>/ and the tuned snapshot into outdir."""

from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
import time

import numpy as np
import torch

from op3d.inversion import inputs, outputs
from op3d.inversion.camera import OrbitCamera
from op3d.inversion.losses import ImageLoss, load_lpips, mse, psnr
from op3d.inversion.projector import ProjectionSettings, project
from op3d.inversion.pti import PTISettings, pivotal_tuning

SNAPSHOT_NAME = "network-pti.pkl"


@dataclasses.dataclass
class InversionJob:
    """What to invert and how. cameras: none (optimise from the average camera), one file per target, or one
    file for all (a dataset.json)."""
    network: str
    targets: list
    outdir: str
    cameras: list = dataclasses.field(default_factory=list)
    refine_camera: bool = False
    loss: str = "lpips"
    detector_dir: str | None = None
    projection: ProjectionSettings = dataclasses.field(default_factory=ProjectionSettings)
    pti: PTISettings = dataclasses.field(default_factory=PTISettings)
    seed: int = 0
    device: str = "cpu"
    fov_deg: float = 18.837
    video_frames: int = 60
    shape_res: int = 128
    level: float = 10.0
    progress: bool = False


@dataclasses.dataclass
class Prepared:
    job: InversionJob
    G: torch.nn.Module
    training_set_kwargs: dict | None
    target: torch.Tensor
    labels: torch.Tensor | None
    lpips: object
    notes: list


def _camera_labels(job: InversionJob) -> torch.Tensor | None:
    if not job.cameras:
        if job.refine_camera:
            raise inputs.InputError("--refine-camera: needs --camera (without it the camera is optimised anyway)")
        return None
    if len(job.cameras) not in (1, len(job.targets)):
        raise inputs.InputError(f"--camera: give one file per --target ({len(job.targets)}) or one for all, got "
                                f"{len(job.cameras)}")
    files = job.cameras if len(job.cameras) == len(job.targets) else job.cameras * len(job.targets)
    return torch.from_numpy(np.stack([inputs.load_camera(f, t) for f, t in zip(files, job.targets)]))


def load_network(network: str, device):
    """(G_ema, training_set_kwargs) of a snapshot, or of 'random-tiny'. Pose-conditioned (SMPL) models are refused:
    their renders need a body pose the projector has no way to find."""
    from op3d import generation
    from op3d.checkpoints import load_network_pkl
    from op3d.networks.conditional import ConditionalOrthoPlanesGenerator

    if network == generation.RANDOM_TINY:
        return generation.random_tiny_generator().to(device), None
    generation.refuse_url(network, "--network")
    snapshot = load_network_pkl(network, device=device)
    if isinstance(snapshot["G_ema"], ConditionalOrthoPlanesGenerator):
        raise inputs.InputError(f"--network: {network} is a pose-conditioned (SMPL) model; the projector inverts "
                                "unconditional OrthoPlanes and EG3D tri-plane models")
    return snapshot["G_ema"], snapshot.get("training_set_kwargs")


def prepare(job: InversionJob) -> Prepared:
    """Check and load everything the run needs, cheapest first, so that bad input fails before any work: the
    cameras, the target images, the detector, then the network."""
    if not job.targets:
        raise inputs.InputError("--target: give at least one image")
    labels = _camera_labels(job)
    pictures = [inputs.read_target(path) for path in job.targets]
    lpips = load_lpips(job.detector_dir, job.device) if job.loss != "mse" else None
    G, training_set_kwargs = load_network(job.network, job.device)
    notes, images = [], []
    for path, pixels in zip(job.targets, pictures):
        image, note = inputs.target_tensor(pixels, path, G.img_resolution)
        images.append(image)
        if note:
            notes.append(note)
    return Prepared(job, G, training_set_kwargs, torch.cat(images).to(job.device), labels, lpips, notes)


def target_dirs(job: InversionJob) -> list[str]:
    """The output folder of each target (see the module docstring)."""
    if len(job.targets) == 1:
        return [job.outdir]
    stems = [pathlib.Path(t).stem for t in job.targets]
    return [os.path.join(job.outdir, s if stems.count(s) == 1 else f"{i:02d}-{s}") for i, s in enumerate(stems)]


@torch.no_grad()
def _measure(G, ws, c, target, lpips, seed) -> tuple[torch.Tensor, list[dict]]:
    """The final renders [B, 3, R, R] of a stage and their metrics (outputs.stage_metrics) per image."""
    torch.manual_seed(seed)
    images = G.synthesis(ws, c, noise_mode="const")["image"]
    lp = lpips.distance(lpips.features(images), lpips.features(target)) if lpips is not None else None
    return images, [outputs.stage_metrics(p, m, None if lp is None else lp[i]) for i, (p, m) in
                    enumerate(zip(psnr(images, target).tolist(), mse(images, target).tolist()))]


def run(prepared: Prepared, log=print) -> dict:
    """Stage 1, stage 2, outputs (see the module docstring). Returns the summary written to metrics.json."""
    job, G, target, lpips = prepared.job, prepared.G, prepared.target, prepared.lpips
    device = target.device
    pivot = G.settings.avg_camera_pivot
    if prepared.labels is None:
        camera = OrbitCamera.average(G, len(target), job.fov_deg)
    else:
        camera = OrbitCamera.from_label(prepared.labels, pivot)
    camera = camera.to(device)
    optimize_camera = prepared.labels is None or job.refine_camera
    settings = dataclasses.replace(job.projection, optimize_camera=optimize_camera)

    G_work = copy.deepcopy(G)
    start = time.perf_counter()
    projection = project(G_work, target, camera, ImageLoss(job.loss, lpips), settings, job.seed, job.progress)
    seconds = {"projection": time.perf_counter() - start}
    c = camera.label().detach()
    proj_images, proj_metrics = _measure(G_work, projection.ws, c, target, lpips, job.seed)

    G_reference = copy.deepcopy(G_work) if job.pti.locality else None
    start = time.perf_counter()
    pti_loss = ImageLoss("mse" if job.loss == "mse" else "lpips+mse", lpips)
    tuning = pivotal_tuning(G_work, projection.ws, c, target, pti_loss, job.pti, G_reference, seed=job.seed,
                            progress=job.progress)
    seconds["pti"] = time.perf_counter() - start
    for stage, steps in (("projection", projection.seconds), ("pti", tuning.seconds)):
        if len(steps):
            seconds[f"{stage}_step_median"] = float(np.median(steps))
    G_work.eval().requires_grad_(False)
    pti_images, pti_metrics = _measure(G_work, projection.ws, c, target, lpips, job.seed)

    os.makedirs(job.outdir, exist_ok=True)
    from op3d.checkpoints import save_network_pkl

    save_network_pkl(os.path.join(job.outdir, SNAPSHOT_NAME),
                     {"G_ema": G_work, "training_set_kwargs": prepared.training_set_kwargs})
    per_target = []
    for i, folder in enumerate(target_dirs(job)):
        os.makedirs(folder, exist_ok=True)
        ws = projection.ws[i:i + 1]
        summary = {"target": os.fspath(job.targets[i]), "camera": dict(camera.values(i), optimized=optimize_camera),
                   "projection": dict(proj_metrics[i], steps=settings.num_steps, latent_space=settings.latent_space,
                                      loss=job.loss, first_psnr=float(projection.psnr[0, i])),
                   "pti": dict(pti_metrics[i], steps=job.pti.num_steps), "seconds": seconds,
                   "snapshot": os.path.join(job.outdir, SNAPSHOT_NAME), "notes": list(prepared.notes)}
        _write_target(G_work, ws, camera, i, folder, target[i], proj_images[i], pti_images[i], summary, job)
        per_target.append(summary)
    result = per_target[0] if len(per_target) == 1 else {"targets": per_target}
    if len(per_target) > 1:
        outputs.save_json(os.path.join(job.outdir, "metrics.json"), result)
    for note in prepared.notes:
        log(f"note: {note}")
    return result


def _write_target(G, ws, camera, index, folder, target, proj_image, pti_image, summary, job) -> None:
    """One target's files (names in docs/inversion.md)."""
    from op3d.video import save_npy

    outputs.save_png(os.path.join(folder, "target.png"), target)
    outputs.save_png(os.path.join(folder, "proj.png"), proj_image)
    outputs.save_png(os.path.join(folder, "pti.png"), pti_image)
    name = "w.npy" if job.projection.latent_space == "w" else "w_plus.npy"
    save_npy(os.path.join(folder, name), ws.cpu().numpy().astype(np.float32))
    outputs.save_camera(folder, camera.label()[index], camera.values(index), summary["camera"]["optimized"])
    outputs.save_png(os.path.join(folder, "multiview.png"), outputs.multiview_strip(G, ws, camera, index))
    values = camera.values(index)
    if job.video_frames > 0:
        outputs.orbit_video(G, ws, os.path.join(folder, "orbit.mp4"), values["radius"], values["focal"],
                            job.video_frames)
    if job.shape_res > 0:
        note = outputs.write_mesh(G, ws, os.path.join(folder, "mesh.ply"), job.shape_res, job.level)
        if note:
            summary["notes"].append(note)
    outputs.save_json(os.path.join(folder, "metrics.json"), summary)
