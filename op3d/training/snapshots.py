"""A run's snapshot files (network pickle + training state), finding the one to resume from, and copying weights in."""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import torch

from op3d.atomic import atomic_output
from op3d.training.options import OptionsError

STATE_PATTERN = "training-state-{kimg:06d}.pt"
SNAPSHOT_PATTERN = "network-snapshot-{kimg:06d}.pkl"


@dataclasses.dataclass
class LoopState:
    """Counters that, with the networks, optimizer states and augmentation state, define where a run is."""
    cur_nimg: int = 0
    cur_tick: int = 0
    batch_idx: int = 0
    tick_start_nimg: int = 0


def latest_snapshot(run_dir: str) -> str | None:
    """The newest network-snapshot-<kimg>.pkl of a run directory that has its training-state file, else the newest
    (never a temporary <name>.tmp-<pid>.pkl that a killed process left)."""
    pkls = sorted(p for p in glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl"))
                  if re.fullmatch(r"network-snapshot-\d+\.pkl", os.path.basename(p)))
    with_state = [p for p in pkls if os.path.isfile(state_path_for(p))]
    return (with_state or pkls or [None])[-1]


def state_path_for(snapshot_pkl: str) -> str:
    """training-state-<kimg>.pt beside network-snapshot-<kimg>.pkl."""
    match = re.search(r"network-snapshot-(\d+)\.pkl$", snapshot_pkl)
    if not match:
        return snapshot_pkl + ".state.pt"
    return os.path.join(os.path.dirname(snapshot_pkl), STATE_PATTERN.format(kimg=int(match.group(1))))


def save_training_state(snapshot_pkl: str, state: LoopState, optimizers: dict, ada, world: int,
                        batch_size: int) -> None:
    """Write the training state beside snapshot_pkl: loop counters, optimizer states by network letter ('G', 'D'),
    the ADA state (or None), and the process count and batch the run used (tensors and numbers only)."""
    training_state = {"loop": dataclasses.asdict(state),
                      "optimizers": {letter: optimizer.state_dict() for letter, optimizer in optimizers.items()},
                      "ada": ada.state_dict() if ada is not None else None,
                      "world_size": world, "batch_size": batch_size}
    with atomic_output(state_path_for(snapshot_pkl)) as tmp:
        torch.save(training_state, tmp)


def copy_weights(source: torch.nn.Module, target: torch.nn.Module, where: str) -> None:
    """Copy parameters and buffers by name; a name present in both with another shape is an error."""
    src = dict(source.state_dict())
    dst = target.state_dict()
    mismatched = [k for k in dst if k in src and src[k].shape != dst[k].shape]
    if mismatched:
        raise OptionsError(f"--resume: {where} does not fit this configuration: tensors {mismatched[:5]} have other "
                         "shapes")
    with torch.no_grad():
        for name, tensor in dst.items():
            if name in src:
                tensor.copy_(src[name])
