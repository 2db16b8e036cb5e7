"""Invert photos into an OrthoPlanes or EG3D model: latent projection (W or W+), then pivotal tuning (PTI).

\b
    python gen_samples/unconditional/projector.py --network=ffhq.pkl --target=face.png --camera=face.json \\
        --outdir=out --detector-dir=~/detectors

\b
--camera is a 25-float label (.npy, .json list or {"label": ...}, or a dataset.json whose entry is matched by the
target's file name). Without it the camera (yaw, pitch, roll, radius, focal) is optimised from the model's average
camera during the first part of stage 1; --refine-camera does the same starting from the given label.
--loss=mse needs no detector; LPIPS needs the official vgg16.pkl (--detector-dir, $OP3D_DETECTOR_DIR or the dnnlib
cache; never downloaded).

\b
Writes into --outdir (one target), or --outdir/<target stem>/ (several, optimised as one batch):
  target.png proj.png pti.png     the target, the stage-1 render, the stage-2 render (at the target camera)
  w.npy | w_plus.npy              ws [1, num_ws, w_dim] float32 (in W the one w repeated over the layers)
  camera.npy camera.json          the (found) camera label [1, 25] and its yaw/pitch/roll/radius/focal
  multiview.png orbit.mp4 mesh.ply   views, orbit video and marching-cubes mesh of the tuned generator
  metrics.json                    PSNR, MSE (and LPIPS with the detector) per stage, camera, timings
and --outdir/network-pti.pkl: the tuned generator as an op3d snapshot (G_ema) for gen_samples, gen_videos, the
viewer. The --network file is not changed.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))


@click.command(help=__doc__)
@click.option("--network", default=None,
              help="Snapshot .pkl (official OP3D/EG3D or op3d), or 'random-tiny'. Default: the bundled demo model.")
@click.option("--target", "targets", multiple=True, required=True, help="Target RGB image (repeat for a batch).")
@click.option("--camera", "cameras", multiple=True, help="Camera label file per target, or one for all.")
@click.option("--refine-camera", is_flag=True, help="Also optimise the given --camera.")
@click.option("--outdir", required=True, help="Output folder (created).")
@click.option("--latent-space", type=click.Choice(["w", "w+"]), default="w", show_default=True)
@click.option("--num-steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Projection steps.")
@click.option("--pti-steps", type=click.IntRange(min=0), default=350, show_default=True,
              help="Pivotal tuning steps (0: none).")
@click.option("--loss", type=click.Choice(["lpips", "mse", "lpips+mse"]), default="lpips", show_default=True,
              help="Projection loss.")
@click.option("--detector-dir", default=None, help="Folder holding vgg16.pkl.")
@click.option("--w-lr", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="Peak learning rate of w.")
@click.option("--camera-lr", type=click.FloatRange(min=0, min_open=True), default=0.02, show_default=True,
              help="Peak learning rate of the camera (radians; relative for radius and focal).")
@click.option("--camera-fraction", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Part of the projection steps during which the camera is optimised.")
@click.option("--noise-opt/--no-noise-opt", default=True, show_default=True,
              help="Optimise the noise maps (with the noise regulariser).")
@click.option("--w-avg-samples", type=click.IntRange(min=1), default=10000, show_default=True)
@click.option("--pti-lr", type=click.FloatRange(min=0, min_open=True), default=3e-4, show_default=True)
@click.option("--pti-locality", is_flag=True, help="Add PTI's locality regulariser.")
@click.option("--fov-deg", type=float, default=18.837, show_default=True, help="FOV of the average camera.")
@click.option("--video-frames", type=click.IntRange(min=0), default=60, show_default=True, help="0: no video.")
@click.option("--shape-res", type=click.IntRange(min=0), default=None, help="Mesh grid (0: no mesh; default 256, "
              "128 for the demo model).")
@click.option("--level", type=float, default=10.0, show_default=True, help="Iso level of the mesh (raw density).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu), or a device.")
def main(network, targets, cameras, refine_camera, outdir, latent_space, num_steps, pti_steps, loss, detector_dir,
         w_lr, camera_lr, camera_fraction, noise_opt, w_avg_samples, pti_lr, pti_locality, fov_deg, video_frames,
         shape_res, level, seed, device):
    import pickle

    from op3d import generation
    from op3d.checkpoints import CheckpointError
    from op3d.inversion import pipeline
    from op3d.inversion.inputs import InputError
    from op3d.inversion.projector import ProjectionSettings
    from op3d.inversion.pti import PTISettings
    from op3d.metrics.detectors import DetectorError

    network = network or generation.DEMO_NETWORK
    if shape_res is None:
        shape_res = generation.DEMO_SHAPE_RES if network == generation.DEMO_NETWORK else 256
    job = pipeline.InversionJob(
        network=network, targets=list(targets), outdir=outdir, cameras=list(cameras), refine_camera=refine_camera,
        loss=loss, detector_dir=detector_dir, seed=seed, device=str(generation.pick_device(device)),
        projection=ProjectionSettings(num_steps=num_steps, latent_space=latent_space, lr=w_lr,
                                      optimize_noise=noise_opt, w_avg_samples=w_avg_samples, camera_lr=camera_lr,
                                      camera_fraction=camera_fraction),
        pti=PTISettings(num_steps=pti_steps, lr=pti_lr, locality=pti_locality), fov_deg=fov_deg,
        video_frames=video_frames, shape_res=shape_res, level=level, progress=True)
    try:
        prepared = pipeline.prepare(job)
    except (InputError, DetectorError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:
        raise click.ClickException(f"--network: cannot read {network}: {err.strerror or err}") from None
    except (CheckpointError, pickle.UnpicklingError, EOFError, ValueError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise click.ClickException(message if network in message else f"--network: {network}: {message}") from None
    summary = pipeline.run(prepared, log=lambda line: click.echo(line, err=True))
    for item in summary.get("targets", [summary]):
        click.echo(f"{item['target']}: PSNR {item['projection']['psnr']:.2f} dB after projection, "
                   f"{item['pti']['psnr']:.2f} dB after PTI")


if __name__ == "__main__":
    main()
