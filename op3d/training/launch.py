"""Starting a training run: check the options and the dataset, make the run directory (official naming), find what
to resume from, and run the loop on one process, on N local processes, or under torchrun."""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from op3d.atomic import is_temporary, remove_stale_temporaries
from op3d.distributed import launched_by_torchrun, local_device, rank_and_world, run
from op3d.training.options import OptionsError, TrainingOptions, run_name, training_spec


def input_errors() -> tuple[type[Exception], ...]:
    """The exception types that mean bad user input (options, data, resume file, SMPL model): the scripts print
    them as one line. Anything else, a plain ValueError included, is a bug and keeps its traceback."""
    from op3d.checkpoints import CheckpointError
    from op3d.metrics.detectors import DetectorError
    from op3d.safe_pickle import UnsafePickleError
    from op3d.smpl.body_model import SMPLModelError
    from op3d.smpl.pose_files import PoseFileError
    from op3d.datasets import DatasetError

    return (OptionsError, DatasetError, CheckpointError, UnsafePickleError, DetectorError, SMPLModelError,
            PoseFileError, FileNotFoundError)


def resume_source(path: str) -> tuple[str, str | None]:
    """--resume path -> (snapshot pkl, its training-state file or None). A run directory resumes from its newest
    snapshot that has a training state."""
    from op3d.training.snapshots import latest_snapshot, state_path_for

    if os.path.isdir(path):
        snapshot = latest_snapshot(path)
        if snapshot is None:
            raise OptionsError(f"--resume: {path} holds no network-snapshot-*.pkl")
    elif os.path.isfile(path):
        if is_temporary(path):
            raise OptionsError(f"--resume: {path} is the unfinished temporary of an interrupted write, not a snapshot")
        snapshot = path
    else:
        raise OptionsError(f"--resume: {path} does not exist (expected a run directory or a snapshot .pkl)")
    state = state_path_for(snapshot)
    return snapshot, state if os.path.isfile(state) else None


def prepare(opts: TrainingOptions) -> dict:
    """Everything checkable before any process starts: options, dataset, resume source. Returns the training
    spec (the training_options.json dict)."""
    from op3d.generation import refuse_url
    from op3d.datasets import ImageFolderDataset

    if opts.resume is not None:
        try:
            refuse_url(opts.resume, "--resume")
        except ValueError as error:
            raise OptionsError(str(error)) from None
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) != opts.gpus:
        raise OptionsError(f"--gpus: {opts.gpus}, but torchrun started {os.environ['WORLD_SIZE']} processes")
    make_spec = training_spec
    if _is_conditional(opts):
        dataset, make_spec = _conditional_data(opts)
    else:
        dataset = ImageFolderDataset(opts.data, use_labels=True, xflip=opts.mirror, label_dim=25)
    resume_state = None
    if opts.resume is not None:
        snapshot, resume_state = resume_source(opts.resume)
        opts = dataclasses.replace(opts, resume=snapshot)
    spec = make_spec(opts, dataset.resolution, len(dataset) // (2 if opts.mirror else 1),
                     resume_continues=resume_state is not None)
    spec["training_set_kwargs"]["max_size"] = None  # every item; the official 110000 cap is not applied
    spec["resume_state"] = resume_state
    spec["detector_dir"] = opts.detector_dir
    check_metrics(opts.metrics)
    if opts.resume is not None:
        check_resume_fits(spec, dataset)
    dataset.close()
    return spec


def _is_conditional(opts: TrainingOptions) -> bool:
    from op3d.training.options_cond import ConditionalTrainingOptions
    return isinstance(opts, ConditionalTrainingOptions)


def _conditional_data(opts):
    """Conditional training (train_conditional.py): check its options, find the SMPL model, open the
    pose-conditioned dataset and check that its bodies have the model's vertex count. Returns (dataset, spec maker)."""
    import functools

    from op3d.smpl.body_model import find_smpl_file, load_smpl_model
    from op3d.datasets.conditional import ConditionalImageDataset
    from op3d.training.options_cond import check_conditional_options, conditional_training_spec

    check_conditional_options(opts)
    smpl_file = str(find_smpl_file(opts.smpl_model))
    model = load_smpl_model(smpl_file)
    dataset = ConditionalImageDataset(opts.data, use_labels=True, label_dim=25, pose_dir=opts.pose_dir)
    vertices = dataset.get_conditions(0)["vertices"].shape[0]
    if vertices != model.num_vertices:
        raise OptionsError(f"--smpl-model: {smpl_file} has {model.num_vertices} vertices, the pose conditions of "
                           f"{dataset.pose_source} have {vertices}: they were made with another body model")
    return dataset, functools.partial(conditional_training_spec, smpl_model=smpl_file)


def check_metrics(names: list[str]) -> None:
    """OptionsError for a metric name op3d does not compute (checked before training, not at the first snapshot)."""
    from op3d.metrics.registry import check_metric_names

    try:
        check_metric_names(names)
    except ValueError as error:
        raise OptionsError(str(error)) from None


def check_resume_fits(spec: dict, dataset) -> None:
    """Check the resume source against the configuration before any process starts or any file is written: an
    exact resume (training state) needs the batch it was trained with, and the snapshot's weights must fit the
    configured networks (built on the CPU) and be read with the plane lookup they were trained with."""
    from op3d.checkpoints import load_network_pkl
    from op3d.training.build import build_networks
    from op3d.training.snapshots import copy_weights

    if spec.get("resume_state"):
        saved = torch.load(spec["resume_state"], map_location="cpu", weights_only=True)
        if saved["batch_size"] != spec["batch_size"]:
            raise OptionsError(f"--batch: the run being resumed ({spec['resume_state']}) used batch "
                               f"{saved['batch_size']}, got {spec['batch_size']}; an exact resume needs the same batch")
    snapshot = load_network_pkl(spec["resume_pkl"])
    G, D = build_networks(spec, dataset, torch.device("cpu"))
    trained_with = snapshot["G_ema"].settings.plane_projection  # official pickles: compat
    if trained_with != G.settings.plane_projection:
        raise OptionsError(f"--plane_projection: {spec['resume_pkl']} was trained with '{trained_with}', this run "
                           f"has '{G.settings.plane_projection}', which would read its planes elsewhere; pass "
                           f"--plane_projection={trained_with}")
    for name, module in (("G", G), ("D", D), ("G_ema", G)):
        if snapshot.get(name) is not None:
            copy_weights(snapshot[name], module, f"{spec['resume_pkl']} [{name}]")


def _make_run_dir(opts: TrainingOptions, dataset_name: str) -> str:
    os.makedirs(opts.outdir, exist_ok=True)
    run_dir = os.path.join(opts.outdir, run_name(opts, os.listdir(opts.outdir), dataset_name))
    os.makedirs(run_dir)
    return run_dir


def _worker(opts: TrainingOptions, spec: dict) -> None:
    from op3d.checkpoints import load_network_pkl
    from op3d.generation import pick_device
    from op3d.training.loop import training_loop

    rank, world = rank_and_world()
    device = local_device(pick_device(opts.device))
    run_dir = None
    if rank == 0:
        name = os.path.splitext(os.path.basename(os.path.normpath(opts.data)))[0]
        run_dir = _make_run_dir(opts, name)
        with open(os.path.join(run_dir, "training_options.json"), "w") as f:
            json.dump(spec, f, indent=2)
    if world > 1:
        shared = [run_dir]
        torch.distributed.broadcast_object_list(shared, src=0)
    resume = None
    if spec.get("resume_pkl"):
        resume = {"snapshot": load_network_pkl(spec["resume_pkl"], device=device), "state": None}
        if spec.get("resume_state"):
            resume["state"] = torch.load(spec["resume_state"], map_location=device, weights_only=True)
    torch.backends.cudnn.benchmark = not opts.nobench
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    training_loop(run_dir, spec, device, resume)


def launch(opts: TrainingOptions) -> dict:
    """Check everything, then train on opts.gpus processes (torchrun's group if launched by torchrun).
    Returns the spec."""
    spec = prepare(opts)
    if spec.get("resume_pkl"):  # a process killed while writing a snapshot left its temporaries there
        remove_stale_temporaries(os.path.dirname(os.path.abspath(spec["resume_pkl"])))
    run(_worker, (opts, spec), num_processes=1 if launched_by_torchrun() else opts.gpus,
        device=local_device(_device_name(opts)))
    return spec


def _device_name(opts: TrainingOptions) -> str:
    from op3d.generation import pick_device
    return str(pick_device(opts.device))
