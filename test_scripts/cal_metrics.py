"""Image-quality and 3D-consistency metrics of a snapshot (official OP3D/EG3D or op3d), offline, on CPU or GPU.

    python test_scripts/cal_metrics.py --network=network-snapshot-004000.pkl --metrics=fid50k_full,mvc1k \\
        --data=ffhq512.zip --detector-dir=~/detectors

Metrics: fid50k_full, kid50k_full, pr50k3_full, is50k, fid50k, kid50k, pr50k3 (the official definitions) and
mvc1k (op3d's multi-view consistency: depth reprojection and photometric error between two views of each fake;
needs no detector). Detectors are the official files inception-2015-12-05.pkl and vgg16.pkl, found in
--detector-dir, $OP3D_DETECTOR_DIR or the dnnlib download cache; they are read with a restricted unpickler that
rebuilds torch modules and tensors and runs no code the file names.
Each result is printed as a jsonl line and appended to metric-<name>.jsonl when the snapshot lies in a training
run directory (next to training_options.json). Dataset statistics are cached in ~/.cache/op3d/gan-metrics.
Several processes: --gpus N, or launch with torchrun.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


@click.command(help=__doc__)
@click.option("--network", "network_pkl", required=True, help="Snapshot .pkl to evaluate (a local file).")
@click.option("--metrics", default="fid50k_full", show_default=True, help="Comma-separated metric names.")
@click.option("--data", default=None, help="Dataset zip or folder [default: the snapshot's training set].")
@click.option("--mirror", type=bool, default=None, help="Mirror the dataset for non-'_full' metrics "
              "[default: as in training].")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of processes (one per GPU with a CUDA device).")
@click.option("--verbose", type=bool, default=True, show_default=True, help="Progress bars.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu), or a torch device.")
@click.option("--detector-dir", default=None, help="Folder with inception-2015-12-05.pkl / vgg16.pkl.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Generator batch (the detector batch is 64, a multiple of it).")
@click.option("--num-gen", type=click.IntRange(min=2), default=None,
              help="Number of generated images instead of the metric's own (e.g. 50000); for quick runs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated latents and labels.")
@click.option("--cache/--no-cache", default=True, show_default=True, help="Reuse cached dataset statistics.")
def main(network_pkl, metrics, data, mirror, gpus, verbose, device, detector_dir, batch, num_gen, seed, cache):
    import os

    from op3d.checkpoints import CheckpointError
    from op3d.generation import pick_device, refuse_url
    from op3d.metrics.detectors import DetectorError
    from op3d.metrics.evaluate import EvaluationOptions, evaluate
    from op3d.safe_pickle import UnsafePickleError
    from op3d.datasets import DatasetError

    try:
        refuse_url(network_pkl, "--network")
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if not os.path.isfile(network_pkl):
        raise click.ClickException(f"--network: {network_pkl} does not exist")
    if data is not None and not os.path.exists(data):
        raise click.ClickException(f"--data: {data} does not exist (expected a dataset zip or folder)")
    if 64 % batch:
        raise click.ClickException(f"--batch: expected a divisor of the detector batch 64, got {batch}")
    options = EvaluationOptions(network_pkl=network_pkl, metrics=[m.strip() for m in metrics.split(",") if m.strip()],
                                data=data, mirror=mirror, device=str(pick_device(device)), detector_dir=detector_dir,
                                gen_batch=batch, num_gen=num_gen, seed=seed, progress=verbose, use_cache=cache)
    try:
        evaluate(options, num_processes=gpus)
    except (ValueError, FileNotFoundError, DetectorError, DatasetError, CheckpointError, UnsafePickleError) as error:
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":
    main()
