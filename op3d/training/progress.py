"""Tick statistics reduced over processes, and the run's logs: log.txt, stats.jsonl and TensorBoard events."""

from __future__ import annotations

import json
import os
import time

import torch

from op3d.distributed import rank_and_world

NONFINITE_STAT = "Progress/nonfinite_grads/"  # + phase name: non-finite gradient entries per step of that phase


class Stats:
    """Scalar statistics of a tick: add(name, values), then summary() -> {name: {num, mean, std}} over every
    process (names must be the same on every process).

    Values on a CUDA device are summed there: adding them never waits for the GPU (no host sync in the training
    step); summary() reads all sums once per tick. Other values are summed on the CPU (float64, which MPS lacks)."""

    def __init__(self):
        self._counts = {}
        self._sums = {}  # name -> [sum, sum of squares], float64, on the values' device

    def add(self, name: str, values) -> None:
        v = torch.as_tensor(values).detach()
        v = v.to(device=v.device if v.device.type == "cuda" else "cpu", dtype=torch.float64).flatten()
        self._counts[name] = self._counts.get(name, 0) + v.numel()
        sums = torch.stack([v.sum(), v.square().sum()])
        previous = self._sums.get(name)
        self._sums[name] = sums if previous is None else previous.to(sums.device) + sums

    def summary(self, device) -> dict:
        names = sorted(self._counts)
        if not names:
            return {}
        counts = torch.tensor([float(self._counts[n]) for n in names], dtype=torch.float64, device=device)
        table = torch.cat([counts[:, None], torch.stack([self._sums[n].to(device) for n in names])], dim=1)
        if rank_and_world()[1] > 1:
            torch.distributed.all_reduce(table)
        table = table.cpu()
        out = {}
        for name, (num, total, squares) in zip(names, table.tolist()):
            mean = total / num if num else float("nan")
            std = max(squares / num - mean * mean, 0) ** 0.5 if num else float("nan")
            out[name] = {"num": num, "mean": mean, "std": std}
        self._counts, self._sums = {}, {}
        return out


class RunLog:
    """log.txt + stdout lines, stats.jsonl, and TensorBoard events (rank 0 only; TensorBoard skipped when missing)."""

    def __init__(self, run_dir: str | None):
        self.run_dir = run_dir
        self.writer = None
        if run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(run_dir)
            except ImportError:
                self.line("TensorBoard is not installed: no events file (pip install tensorboard)")

    def line(self, text: str) -> None:
        if self.run_dir is None:
            return
        print(text, flush=True)
        with open(os.path.join(self.run_dir, "log.txt"), "a") as f:
            f.write(text + "\n")

    def stats(self, summary: dict, cur_nimg: int) -> None:
        if self.run_dir is None:
            return
        with open(os.path.join(self.run_dir, "stats.jsonl"), "a") as f:
            f.write(json.dumps(dict(summary, timestamp=time.time())) + "\n")
        if self.writer is not None:
            for name, value in summary.items():
                self.writer.add_scalar(name, value["mean"], global_step=int(cur_nimg / 1e3))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
