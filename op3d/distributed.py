"""Process groups for multi-process work (metrics now, training next): torchrun's env:// rendezvous on one or many
nodes, or N local processes started for the user; NCCL on CUDA, gloo on CPU. Nothing home-made beyond launching."""

from __future__ import annotations

import os
import socket
from typing import Callable

import torch
import torch.distributed as dist


def backend_for(device: torch.device | str) -> str:
    """'nccl' for CUDA devices, 'gloo' otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_by_torchrun() -> bool:
    """True when the environment holds a torchrun/SLURM-style rendezvous (WORLD_SIZE > 1, MASTER_ADDR set)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ


def local_device(device: torch.device | str) -> torch.device:
    """The device this process uses: 'cuda' becomes cuda:<LOCAL_RANK> so each process owns one GPU."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_from_env(device: torch.device | str) -> None:
    """Join the process group described by the environment (env:// rendezvous), once."""
    if not dist.is_initialized():
        device = local_device(device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend_for(device), init_method="env://")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_worker(rank: int, world_size: int, port: int, device: str, fn: Callable, args: tuple) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_from_env(device)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def run(fn: Callable, args: tuple = (), num_processes: int = 1, device: torch.device | str = "cpu") -> None:
    """Run fn(*args) in every process of a group.

    Under torchrun (or any env:// launcher) this process joins the group given by the environment. Otherwise, with
    num_processes > 1, that many local processes are started (torch.multiprocessing, spawn) with a fresh rendezvous
    on 127.0.0.1; with 1, fn simply runs here without a group. fn and args must be picklable for local launches."""
    if launched_by_torchrun():
        init_from_env(device)
        fn(*args)
    elif num_processes > 1:
        torch.multiprocessing.spawn(_local_worker, args=(num_processes, _free_port(), str(device), fn, args),
                                    nprocs=num_processes, join=True)
    else:
        fn(*args)


def gather(x: torch.Tensor, interleave: bool) -> torch.Tensor:
    """All ranks' [N, ...] tensors (same shape on each) -> [world * N, ...]. interleave=True orders item 0 of rank 0,
    item 0 of rank 1, ..., item 1 of rank 0, ... (undoing a rank-strided split); False concatenates rank 0's block,
    then rank 1's, ... (undoing a split into consecutive blocks). Identity without a group."""
    rank, world = rank_and_world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1) if interleave else torch.cat(parts)
