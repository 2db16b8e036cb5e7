"""Which dataset items each process reads per iteration, loader chunks on the device, and a chunk's G inputs."""

from __future__ import annotations

import numpy as np
import torch


def derived_seed(*values: int) -> int:
    """One 32-bit seed from a tuple of integers (run seed, epoch or iteration, phase, chunk ...)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


class ChunkSampler(torch.utils.data.Sampler):
    """Dataset indices this process reads, iteration after iteration, from `start_iteration` on.

    The run's item order is a shuffled pass over the dataset per epoch (seeded by (seed, epoch)); iteration k takes
    the next batch_size items, split into chunks of batch_gpu; chunk j goes to process j % world, in round
    j // world. Yields the indices of this process's chunks in round order, forever."""

    def __init__(self, num_items: int, batch_size: int, batch_gpu: int, rank: int, world: int, seed: int,
                 start_iteration: int = 0):
        self.num_items, self.batch_size, self.batch_gpu = num_items, batch_size, batch_gpu
        self.rank, self.world, self.seed, self.start_iteration = rank, world, seed, start_iteration
        self._epoch, self._order = None, None

    def _item(self, position: int) -> int:
        epoch = position // self.num_items
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.RandomState(derived_seed(self.seed, epoch) % (1 << 31)).permutation(self.num_items)
        return int(self._order[position % self.num_items])

    def __iter__(self):
        iteration = self.start_iteration
        rounds = self.batch_size // (self.batch_gpu * self.world)
        while True:
            for round_idx in range(rounds):
                chunk = round_idx * self.world + self.rank
                start = iteration * self.batch_size + chunk * self.batch_gpu
                for position in range(start, start + self.batch_gpu):
                    yield self._item(position)
            iteration += 1


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor -> device. To CUDA from pinned memory without blocking: a blocking copy would wait for all the
    GPU work queued so far (a host sync per chunk); PyTorch keeps the pinned buffer until the copy is done."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def chunk_to_device(batch, device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A loader batch -> (real images float [B, C, H, W] in [-1, 1], labels [B, 25], extra loss arguments: the
    batched pose conditions as {'real_conditions': ...} for the conditional dataset, else {})."""
    img, c, *pose = batch
    extra = {"real_conditions": {k: to_device(v, device) for k, v in pose[0].items()}} if pose else {}
    return to_device(img, device).to(torch.float32) / 127.5 - 1, to_device(c, device), extra



def generator_inputs(dataset, batch: int, z_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """z [batch, z_dim] ~ N(0, I) and the labels [batch, 25] of uniformly drawn dataset items, from torch's global
    generator (the loop seeds it per chunk)."""
    z = torch.randn([batch, z_dim], device=device)
    items = torch.randint(len(dataset), [batch]).tolist()
    return z, to_device(torch.from_numpy(np.stack([dataset.get_label(i) for i in items])), device)


def chunk_loader(dataset, batch_size: int, batch_gpu: int, rank: int, world: int, seed: int, start_iteration: int,
                 num_workers: int, device: torch.device, conditional: bool):
    """An endless iterator over this process's loader batches of batch_gpu items (ChunkSampler order); conditional
    datasets' pose conditions are batched as a dict."""
    from op3d.datasets.conditional import collate_conditional

    sampler = ChunkSampler(len(dataset), batch_size, batch_gpu, rank, world, seed, start_iteration=start_iteration)
    return iter(torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=batch_gpu, num_workers=num_workers,
                                            pin_memory=device.type == "cuda",
                                            prefetch_factor=2 if num_workers > 0 else None,
                                            persistent_workers=num_workers > 0,
                                            collate_fn=collate_conditional if conditional else None))
