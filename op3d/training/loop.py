"""The training loop (spec 5.3): lazy-regularised G and D phases with Adam, EMA of G, adaptive augmentation, ticks
with a status line, snapshots, logs and metrics, on one process or many (torch.distributed), resumable exactly.

Randomness. Every chunk of batch_gpu images of every phase draws its latents, labels and all renderer / noise /
augmentation randomness after torch.manual_seed(seed of (run seed, iteration, phase, chunk)), and chunk j of an
iteration always holds the same dataset items. So a run does not depend on how chunks are spread over processes
(one process with --batch-gpu=B/2 equals two processes), and resuming needs no RNG state.

Conditional training (train_conditional.py) runs this same loop: the spec's class names select the pose-conditioned
dataset, the conditional generator and discriminator and the conditional loss; each chunk then carries its real
images' pose conditions to the loss, the snapshot grid is rendered with the grid items' poses, and the gradient norm
is clipped to spec['grad_clip_norm'] after the process average.

Gradients. Each round of gradient accumulation contributes its chunk mean times gain / rounds, so the gradient is
the mean over the per-process batch whatever --batch-gpu is (the official loop summed the rounds, which scaled the
learning rate with the number of rounds); processes are averaged by one flat all-reduce per phase.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import json
import os
import re
import time

import numpy as np
import psutil
import torch

from op3d.atomic import atomic_output
from op3d.distributed import rank_and_world
from op3d.networks.conditional import ConditionalOrthoPlanesGenerator
from op3d.networks.discriminator import DualDiscriminator, DualDiscriminatorWithWarping
from op3d.networks.generator import OrthoPlanesGenerator, TriPlaneGenerator
from op3d.training.options import OptionsError

# The spec's class names (official module paths) -> op3d classes. The conditional entries serve train_conditional.py.
GENERATOR_CLASSES = {"training.orthoplanes.TriMultiPlaneGenerator": OrthoPlanesGenerator,
                     "training.triplane.TriPlaneGenerator": TriPlaneGenerator,
                     "training.kaolin_version.TriMultiPlaneGenerator": ConditionalOrthoPlanesGenerator}
DISCRIMINATOR_CLASSES = {"training.dual_discriminator.DualDiscriminator": DualDiscriminator,
                         "training.dual_discriminator.DualDiscriminatorWithWarping": DualDiscriminatorWithWarping}
D_REG_INTERVAL = 16
ADA_INTERVAL = 4
GRID_SIZE = (6, 4)  # OP3D's snapshot grid: 6 columns x 4 rows
STATE_PATTERN = "training-state-{kimg:06d}.pt"
SNAPSHOT_PATTERN = "network-snapshot-{kimg:06d}.pkl"


# --- data ----------------------------------------------------------------------------------------------------------

def _seed(*values: int) -> int:
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
            self._order = np.random.RandomState(_seed(self.seed, epoch) % (1 << 31)).permutation(self.num_items)
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


def open_dataset(spec: dict):
    """The training set of spec['training_set_kwargs']: images and camera labels, plus pose conditions for the
    conditional dataset class."""
    from op3d.datasets import ImageFolderDataset
    from op3d.datasets.conditional import ConditionalImageDataset

    classes = {"training.dataset.ImageFolderDataset": ImageFolderDataset,
               "training.dataset_cond.ImageFolderDataset": ConditionalImageDataset}
    kwargs = dict(spec["training_set_kwargs"])
    return classes[kwargs.pop("class_name", "training.dataset.ImageFolderDataset")](**kwargs, label_dim=25)


def build_networks(spec: dict, dataset, device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Fresh G and D from the training spec's G_kwargs / D_kwargs and the dataset's label size and images. The
    conditional generator also gets the body mesh faces of the spec's SMPL model ('smpl_model')."""
    common = dict(c_dim=dataset.label_dim, img_resolution=dataset.resolution, img_channels=dataset.num_channels)
    g_kwargs = {k: v for k, v in spec["G_kwargs"].items() if k != "class_name"}
    d_kwargs = {k: v for k, v in spec["D_kwargs"].items() if k != "class_name"}
    G_class = GENERATOR_CLASSES[spec["G_kwargs"]["class_name"]]
    if G_class is ConditionalOrthoPlanesGenerator:
        from op3d.smpl.body_model import load_smpl_model
        g_kwargs["faces"] = load_smpl_model(spec["smpl_model"]).faces
    G = G_class(**g_kwargs, **common)
    D = DISCRIMINATOR_CLASSES[spec["D_kwargs"]["class_name"]](**d_kwargs, **common)
    G.neural_rendering_resolution = spec["loss_kwargs"]["neural_rendering_resolution_initial"]
    G.dataset_label_std = torch.from_numpy(dataset.get_label_std())
    return G.train().requires_grad_(False).to(device), D.train().requires_grad_(False).to(device)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor -> device. To CUDA from pinned memory without blocking: a blocking copy would wait for all the
    GPU work queued so far (a host sync per chunk); PyTorch keeps the pinned buffer until the copy is done."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _chunk_to_device(batch, device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A loader batch -> (real images float [B, C, H, W] in [-1, 1], labels [B, 25], extra loss arguments: the
    batched pose conditions as {'real_conditions': ...} for the conditional dataset, else {})."""
    img, c, *pose = batch
    extra = {"real_conditions": {k: _to_device(v, device) for k, v in pose[0].items()}} if pose else {}
    return _to_device(img, device).to(torch.float32) / 127.5 - 1, _to_device(c, device), extra


# --- optimisation --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Phase:
    name: str
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    interval: float


def make_phases(G, D, spec: dict) -> list[Phase]:
    """Gmain/Greg/Dmain/Dreg with lazy regularisation (lr and betas scaled by interval / (interval + 1)), or
    Gboth/Dboth for a module without a regularisation interval."""
    phases = []
    for name, module, opt_kwargs, interval in (("G", G, spec["G_opt_kwargs"], spec.get("G_reg_interval")),
                                               ("D", D, spec["D_opt_kwargs"], D_REG_INTERVAL)):
        kwargs = {k: v for k, v in opt_kwargs.items() if k != "class_name"}
        kwargs["betas"] = [float(beta) for beta in kwargs["betas"]]  # torch's Adam refuses the JSON's int 0
        if interval is None:
            optimizer = torch.optim.Adam(module.parameters(), **kwargs)
            phases.append(Phase(name + "both", module, optimizer, 1))
            continue
        ratio = interval / (interval + 1)
        kwargs.update(lr=kwargs["lr"] * ratio, betas=[beta ** ratio for beta in kwargs["betas"]])
        optimizer = torch.optim.Adam(module.parameters(), **kwargs)
        phases += [Phase(name + "main", module, optimizer, 1), Phase(name + "reg", module, optimizer, interval)]
    return phases


def reduce_gradients(module: torch.nn.Module) -> torch.Tensor | int:
    """Average the gradients of module's parameters over processes (one flat all-reduce), then replace NaN by 0
    and +-inf by +-1e5 as the official loop does. Returns how many gradient entries were not finite, as a 0-d
    tensor on the gradients' device (reading it would wait for the GPU; the tick's statistics read it)."""
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return 0
    flat = torch.cat([p.grad.flatten() for p in params])
    _, world = rank_and_world()
    if world > 1:
        torch.distributed.all_reduce(flat)
        flat /= world
    nonfinite = (~torch.isfinite(flat)).sum()
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    return nonfinite


@torch.no_grad()
def update_ema(G_ema, G, cur_nimg: int, batch_size: int, ema_kimg: float, ema_rampup: float | None) -> None:
    """G_ema <- lerp(G, G_ema, beta) with beta = 0.5 ** (batch / ema_nimg), ema_nimg ramped up to ema_kimg * 1000
    as cur_nimg * ema_rampup; buffers and rendering settings copied."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
    G_ema.neural_rendering_resolution = G.neural_rendering_resolution
    G_ema.rendering_kwargs = dict(G.rendering_kwargs)


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if rank_and_world()[1] > 1:
        for tensor in list(module.parameters()) + list(module.buffers()):
            torch.distributed.broadcast(tensor.data, src=0)


# --- statistics and logs -------------------------------------------------------------------------------------------

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


def save_image_grid(images: np.ndarray, path: str, grid: tuple[int, int], drange=(-1, 1)) -> None:
    """images [N, C, H, W] (N = columns * rows) in drange -> one PNG, columns x rows."""
    from PIL import Image

    lo, hi = drange
    images = np.rint((np.asarray(images, dtype=np.float32) - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    gw, gh = grid
    _, c, h, w = images.shape
    canvas = images.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    with atomic_output(path) as tmp:
        Image.fromarray(canvas[:, :, 0] if c == 1 else canvas).save(tmp)


@torch.no_grad()
def render_grid(G_ema, grid_z: torch.Tensor, grid_c: torch.Tensor, batch: int,
                grid_conditions: dict | None = None) -> dict:
    """G_ema outputs for the grid latents/labels (and batched pose conditions, for the conditional generator) with
    noise_mode 'const' -> numpy image, image_raw, image_depth (depth negated and normalised to its own range, as
    officially)."""
    poses = [()] * len(grid_z.split(batch))
    if grid_conditions is not None:
        parts = {k: v.split(batch) for k, v in grid_conditions.items()}
        poses = [({k: v[i] for k, v in parts.items()},) for i in range(len(poses))]
    outs = [G_ema(z, c, *pose, noise_mode="const") for z, c, pose in zip(grid_z.split(batch), grid_c.split(batch),
                                                                          poses)]
    images = {k: torch.cat([o[k] for o in outs]).float().cpu() for k in ("image", "image_raw", "image_depth")}
    depth = -images["image_depth"]
    images["image_depth"] = (depth - depth.min()) / (depth.max() - depth.min()).clamp_min(1e-8) * 2 - 1
    images["image_raw"] = torch.nn.functional.interpolate(images["image_raw"][:, :3], size=images["image"].shape[-1],
                                                          mode="nearest")
    return {k: v.numpy() for k, v in images.items()}


# --- snapshots and resume ------------------------------------------------------------------------------------------

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


@dataclasses.dataclass
class LoopState:
    """Counters that, with the networks, optimizer states and augmentation state, define where a run is."""
    cur_nimg: int = 0
    cur_tick: int = 0
    batch_idx: int = 0
    tick_start_nimg: int = 0


# --- the loop ------------------------------------------------------------------------------------------------------

def training_loop(run_dir: str | None, spec: dict, device: torch.device, resume: dict | None = None,
                  progress_hook=None) -> dict:
    """Train as spec (the training_options.json dict) says. run_dir is None on processes other than rank 0.

    resume: {'snapshot': load_network_pkl dict, 'state': training-state dict or None}. Returns the final
    {'G', 'D', 'G_ema', 'state'} (for tests). progress_hook(state) is called after every tick (tests use it to
    interrupt a run)."""
    from op3d.checkpoints import save_network_pkl
    from op3d.metrics.detectors import DetectorError
    from op3d.metrics.registry import MetricContext, calc_metric, report_metric
    from op3d.training.augment import AdaptiveAugment, AugmentPipe
    from op3d.datasets.conditional import ConditionalImageDataset, collate_conditional, stack_pose_conditions
    from op3d.training.loss import GANLoss
    from op3d.training.loss_cond import ConditionalGANLoss

    rank, world = rank_and_world()
    log = RunLog(run_dir)
    start_time = time.time()
    seed = spec["random_seed"]
    batch_size, batch_gpu = spec["batch_size"], spec["batch_gpu"]
    rounds = batch_size // (batch_gpu * world)
    if batch_size % (batch_gpu * world):
        raise OptionsError(f"--batch {batch_size} is not a multiple of --batch-gpu {batch_gpu} x {world} processes")

    dataset_kwargs = {k: v for k, v in spec["training_set_kwargs"].items() if k != "class_name"}
    dataset = open_dataset(spec)
    conditional = isinstance(dataset, ConditionalImageDataset)
    torch.manual_seed(seed)
    G, D = build_networks(spec, dataset, device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    ada = None
    if "augment_kwargs" in spec:
        augment_pipe = AugmentPipe(**{k: v for k, v in spec["augment_kwargs"].items() if k != "class_name"})
        augment_pipe = augment_pipe.train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(spec.get("augment_p", 0.0)))
        if "ada_target" in spec:
            ada = AdaptiveAugment(target=spec["ada_target"], interval=ADA_INTERVAL, kimg=spec.get("ada_kimg", 500),
                                  device=device)

    state = LoopState()
    phases = make_phases(G, D, spec)
    if resume is not None:
        snapshot = resume["snapshot"]
        for name, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            if snapshot.get(name) is not None:
                copy_weights(snapshot[name], module, f"{spec.get('resume_pkl')} [{name}]")
        if augment_pipe is not None and snapshot.get("augment_pipe") is not None and \
                isinstance(snapshot["augment_pipe"], torch.nn.Module):
            copy_weights(snapshot["augment_pipe"], augment_pipe, f"{spec.get('resume_pkl')} [augment_pipe]")
        if resume.get("state") is not None:
            saved = resume["state"]
            state = LoopState(**saved["loop"])
            for phase in phases:
                phase.optimizer.load_state_dict(saved["optimizers"][phase.name[0]])
            if ada is not None and saved.get("ada") is not None:
                ada.load_state_dict(saved["ada"])
        source = snapshot["G"] if snapshot.get("G") is not None else snapshot["G_ema"]
        G.neural_rendering_resolution = source.neural_rendering_resolution
    for module in (G, D, G_ema):
        broadcast_module(module)
    if augment_pipe is not None:
        broadcast_module(augment_pipe)

    loss_kwargs = {k: v for k, v in spec["loss_kwargs"].items() if k != "class_name"}
    loss_class = {"training.loss.StyleGAN2Loss": GANLoss,
                  "training.loss.StyleGAN2LossWithWarpingSDF": ConditionalGANLoss}[spec["loss_kwargs"]["class_name"]]
    loss = loss_class(G, D, augment_pipe=augment_pipe, **loss_kwargs)
    workers = spec["data_loader_kwargs"]["num_workers"]
    sampler = ChunkSampler(len(dataset), batch_size, batch_gpu, rank, world, seed, start_iteration=state.batch_idx)
    loader = iter(torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=batch_gpu, num_workers=workers,
                                              pin_memory=device.type == "cuda",
                                              prefetch_factor=2 if workers > 0 else None,
                                              persistent_workers=workers > 0,
                                              collate_fn=collate_conditional if conditional else None))
    grid_count = GRID_SIZE[0] * GRID_SIZE[1]
    grid_items = np.random.RandomState(seed).randint(len(dataset), size=grid_count)
    grid_c = torch.from_numpy(np.stack([dataset.get_label(i) for i in grid_items])).to(device)
    grid_z = torch.randn([grid_count, G.z_dim], generator=torch.Generator().manual_seed(seed)).to(device)
    grid_conditions = None
    if conditional:
        grid_conditions = {k: v.to(device) for k, v in
                           stack_pose_conditions([dataset.get_conditions(i) for i in grid_items]).items()}
    if run_dir is not None and not os.path.isfile(os.path.join(run_dir, "reals.png")):
        reals = np.stack([dataset[i][0] for i in grid_items])
        save_image_grid(reals, os.path.join(run_dir, "reals.png"), GRID_SIZE, drange=(0, 255))

    stats = Stats()
    total_nimg = spec["total_kimg"] * 1000
    kimg_per_tick = spec["kimg_per_tick"]
    metric_note_shown = False
    metric_results = {}
    tick_start_time = time.time()
    maintenance = 0.0
    log.line(f"Training for {spec['total_kimg']} kimg from kimg {state.cur_nimg / 1000:.3f} "
             f"({world} process(es), batch {batch_size}, {batch_gpu} per chunk)...")
    done = state.cur_nimg >= total_nimg
    while not done:
        chunks = [_chunk_to_device(next(loader), device) for _ in range(rounds)]
        for phase_idx, phase in enumerate(phases):
            if state.batch_idx % phase.interval != 0:
                continue
            phase.module.requires_grad_(True)
            phase.optimizer.zero_grad(set_to_none=True)
            for round_idx, (real_img, real_c, pose) in enumerate(chunks):
                chunk = round_idx * world + rank
                torch.manual_seed(_seed(seed, state.batch_idx, phase_idx, chunk))
                gen_z = torch.randn([batch_gpu, G.z_dim], device=device)
                gen_items = torch.randint(len(dataset), [batch_gpu]).tolist()
                gen_c = _to_device(torch.from_numpy(np.stack([dataset.get_label(i) for i in gen_items])), device)
                reported = loss.accumulate_gradients(phase.name, real_img, real_c, gen_z, gen_c,
                                                     gain=phase.interval / rounds, cur_nimg=state.cur_nimg, **pose)
                for name, value in reported.items():
                    stats.add(name, value)
                if ada is not None and "Loss/scores/real" in reported and phase.name in ("Dmain", "Dboth"):
                    ada.accumulate(reported["Loss/scores/real"])
            phase.module.requires_grad_(False)
            nonfinite = reduce_gradients(phase.module)
            if spec.get("grad_clip_norm"):  # conditional training: the official conditional loop clips
                torch.nn.utils.clip_grad_norm_(phase.module.parameters(), spec["grad_clip_norm"])
            stats.add(f"{NONFINITE_STAT}{phase.name}", nonfinite)  # reported with the tick's statistics
            phase.optimizer.step()

        update_ema(G_ema, G, state.cur_nimg, batch_size, spec["ema_kimg"], spec.get("ema_rampup", 0.05))
        state.cur_nimg += batch_size
        state.batch_idx += 1
        if ada is not None and ada.is_due(state.batch_idx):
            if world > 1:
                torch.distributed.all_reduce(ada.accum)
            ada.update(augment_pipe, batch_size)

        done = state.cur_nimg >= total_nimg
        if not done and state.cur_tick != 0 and state.cur_nimg < state.tick_start_nimg + kimg_per_tick * 1000:
            continue

        # --- tick ---
        tick_end_time = time.time()
        stats.add("Progress/tick", [state.cur_tick])
        stats.add("Progress/kimg", [state.cur_nimg / 1e3])
        stats.add("Timing/sec_per_tick", [tick_end_time - tick_start_time])
        tick_kimg = max(state.cur_nimg - state.tick_start_nimg, 1) / 1e3
        stats.add("Timing/sec_per_kimg", [(tick_end_time - tick_start_time) / tick_kimg])
        if augment_pipe is not None:
            stats.add("Progress/augment", [float(augment_pipe.p)])
        cpu_gb = psutil.Process(os.getpid()).memory_info().rss / 2 ** 30
        gpu_gb = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
        log.line(" ".join([f"tick {state.cur_tick:<5d}", f"kimg {state.cur_nimg / 1e3:<8.3f}",
                           f"time {time.time() - start_time:<8.1f}",
                           f"sec/tick {tick_end_time - tick_start_time:<7.1f}",
                           f"sec/kimg {(tick_end_time - tick_start_time) / tick_kimg:<7.2f}",
                           f"maintenance {maintenance:<6.1f}", f"cpumem {cpu_gb:<6.2f}", f"gpumem {gpu_gb:<6.2f}",
                           f"augment {float(augment_pipe.p) if augment_pipe is not None else 0:.3f}"]))
        maintenance_start = time.time()
        snapshot_now = done or state.cur_tick % spec["network_snapshot_ticks"] == 0
        kimg_label = state.cur_nimg // 1000
        snapshot_pkl = None
        if snapshot_now and rank == 0:
            grid = render_grid(G_ema, grid_z, grid_c, batch_gpu, grid_conditions)
            for key, suffix in (("image", ""), ("image_raw", "_raw"), ("image_depth", "_depth")):
                save_image_grid(grid[key], os.path.join(run_dir, f"fakes{kimg_label:06d}{suffix}.png"), GRID_SIZE)
        next_state = LoopState(state.cur_nimg, state.cur_tick + 1, state.batch_idx, state.cur_nimg)
        if snapshot_now:
            snapshot_pkl = os.path.join(run_dir or "", SNAPSHOT_PATTERN.format(kimg=kimg_label))
            if rank == 0:
                save_network_pkl(snapshot_pkl, {"training_set_kwargs": dict(spec["training_set_kwargs"]),
                                                "G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment_pipe})
                training_state = {"loop": dataclasses.asdict(next_state),
                                  "optimizers": {p.name[0]: p.optimizer.state_dict() for p in phases},
                                  "ada": ada.state_dict() if ada is not None else None,
                                  "world_size": world, "batch_size": batch_size}
                with atomic_output(state_path_for(snapshot_pkl)) as tmp:
                    torch.save(training_state, tmp)
            for name in spec.get("metrics", []):
                ctx = MetricContext(G_ema, {"path": dataset_kwargs["path"], "xflip": dataset_kwargs["xflip"]},
                                    device=device, detector_dir=spec.get("detector_dir"),
                                    num_gen=spec.get("metrics_num_gen"))
                try:
                    result = calc_metric(name, ctx)
                except DetectorError as error:
                    if not metric_note_shown:
                        log.line(f"metrics skipped: {error}")
                        metric_note_shown = True
                    continue
                if rank == 0:
                    report_metric(result, run_dir, snapshot_pkl)
                    metric_results.update(result["results"])
        maintenance = time.time() - maintenance_start
        summary = stats.summary(device)
        # Every process computed the same metric values: they are logged once, outside the per-process statistics
        # (whose names must match on every process for the reduction).
        summary.update({f"Metrics/{key}": {"num": 1, "mean": value, "std": 0.0} for key, value in metric_results.items()})
        metric_results = {}
        for name, stat in summary.items():
            if name.startswith(NONFINITE_STAT) and stat["mean"] > 0:  # every process counts the same reduced grads
                log.line(f"warning: {round(stat['num'] * stat['mean'] / world)} non-finite gradient values in phase "
                         f"{name[len(NONFINITE_STAT):]} during tick {state.cur_tick} (kimg "
                         f"{state.tick_start_nimg / 1000:.3f} to {state.cur_nimg / 1000:.3f}); replaced (NaN -> 0, "
                         f"inf -> +-1e5) as the official loop does")
        log.stats(summary, state.cur_nimg)
        state = next_state
        tick_start_time = time.time()
        if progress_hook is not None:
            progress_hook(state)
    log.line("Exiting...")
    log.close()
    return {"G": G, "D": D, "G_ema": G_ema, "state": state}
