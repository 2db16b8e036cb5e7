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
import os
import time

import psutil
import torch

from op3d.distributed import rank_and_world
from op3d.training.build import build_augmentation, build_loss, build_networks, open_dataset
from op3d.training.chunks import chunk_loader, chunk_to_device, derived_seed, generator_inputs
from op3d.training.grids import SnapshotGrid
from op3d.training.optimization import (Phase, broadcast_module, ema_beta, load_optimizer_state, make_phases,
                                       reduce_gradients, update_ema)
from op3d.training.options import OptionsError
from op3d.training.progress import NONFINITE_STAT, RunLog, Stats
from op3d.training.snapshots import SNAPSHOT_PATTERN, LoopState, copy_weights, save_training_state


@dataclasses.dataclass
class _Run:
    """What a run builds once and every step of the loop reads: the spec, this process's place among the processes,
    the data, the networks with their optimizer phases and augmentation, the loss, the snapshot grid and the logs."""
    spec: dict
    device: torch.device
    run_dir: str | None
    rank: int
    world: int
    log: RunLog
    dataset: torch.utils.data.Dataset
    conditional: bool
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    augment_pipe: torch.nn.Module | None
    ada: object | None  # AdaptiveAugment
    phases: list[Phase]
    stats: Stats = dataclasses.field(default_factory=Stats)
    loss: object | None = None  # set by _prepare_iterations, as are loader and grid
    loader: object | None = None
    grid: SnapshotGrid | None = None
    metric_note_shown: bool = False

    @property
    def batch_size(self) -> int:
        return self.spec["batch_size"]

    @property
    def batch_gpu(self) -> int:
        return self.spec["batch_gpu"]

    @property
    def rounds(self) -> int:
        """Chunks this process accumulates per iteration."""
        return self.batch_size // (self.batch_gpu * self.world)


@dataclasses.dataclass
class _Clock:
    """Wall-clock times (time.time()) the status line reports."""
    start: float
    tick_start: float = 0.0
    maintenance: float = 0.0  # seconds the previous tick spent on snapshots and metrics


def training_loop(run_dir: str | None, spec: dict, device: torch.device, resume: dict | None = None,
                  progress_hook=None) -> dict:
    """Train as spec (the training_options.json dict) says. run_dir is None on processes other than rank 0.

    resume: {'snapshot': load_network_pkl dict, 'state': training-state dict or None}. Returns the final
    {'G', 'D', 'G_ema', 'state'} (for tests). progress_hook(state) is called after every tick (tests use it to
    interrupt a run)."""
    clock = _Clock(start=time.time())
    run = _set_up(run_dir, spec, device)
    state = _resume(run, resume) if resume is not None else LoopState()
    _prepare_iterations(run, state)
    total_nimg = spec["total_kimg"] * 1000
    clock.tick_start = time.time()
    run.log.line(f"Training for {spec['total_kimg']} kimg from kimg {state.cur_nimg / 1000:.3f} "
                 f"({run.world} process(es), batch {run.batch_size}, {run.batch_gpu} per chunk)...")
    done = state.cur_nimg >= total_nimg
    while not done:
        _train_iteration(run, state)
        done = state.cur_nimg >= total_nimg
        tick_due = state.cur_nimg >= state.tick_start_nimg + spec["kimg_per_tick"] * 1000
        if done or state.cur_tick == 0 or tick_due:
            state = _end_tick(run, state, clock, done)
            if progress_hook is not None:
                progress_hook(state)
    run.log.line("Exiting...")
    run.log.close()
    return {"G": run.G, "D": run.D, "G_ema": run.G_ema, "state": state}


# --- set-up and resume ---------------------------------------------------------------------------------------------

def _set_up(run_dir: str | None, spec: dict, device: torch.device) -> _Run:
    """Check the batch split, open the dataset, build G, D, G_ema (a copy of G), augmentation and optimizer phases."""
    from op3d.datasets.conditional import ConditionalImageDataset

    rank, world = rank_and_world()
    log = RunLog(run_dir)
    batch_size, batch_gpu = spec["batch_size"], spec["batch_gpu"]
    if batch_size % (batch_gpu * world):
        raise OptionsError(f"--batch {batch_size} is not a multiple of --batch-gpu {batch_gpu} x {world} processes")
    dataset = open_dataset(spec)
    torch.manual_seed(spec["random_seed"])
    G, D = build_networks(spec, dataset, device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe, ada = build_augmentation(spec, device)
    return _Run(spec, device, run_dir, rank, world, log, dataset, isinstance(dataset, ConditionalImageDataset),
                G, D, G_ema, augment_pipe, ada, make_phases(G, D, spec))


def _resume(run: _Run, resume: dict) -> LoopState:
    """Copy the snapshot's weights in by name; with a training state, also the optimizer and ADA states and the
    loop counters (returned). G keeps the snapshot's neural rendering resolution."""
    snapshot = resume["snapshot"]
    where = run.spec.get("resume_pkl")
    for name, module in (("G", run.G), ("D", run.D), ("G_ema", run.G_ema)):
        if snapshot.get(name) is not None:
            copy_weights(snapshot[name], module, f"{where} [{name}]")
    if run.augment_pipe is not None and isinstance(snapshot.get("augment_pipe"), torch.nn.Module):
        copy_weights(snapshot["augment_pipe"], run.augment_pipe, f"{where} [augment_pipe]")
    state = LoopState()
    saved = resume.get("state")
    if saved is not None:
        state = LoopState(**saved["loop"])
        for letter, optimizer in _optimizers(run).items():
            for change in load_optimizer_state(optimizer, saved["optimizers"][letter]):
                run.log.line(f"Resume: {letter} optimizer {change} (this run's options; moments kept)")
        if run.ada is not None and saved.get("ada") is not None:
            run.ada.load_state_dict(saved["ada"])
    source = snapshot["G"] if snapshot.get("G") is not None else snapshot["G_ema"]
    run.G.neural_rendering_resolution = source.neural_rendering_resolution
    return state


def _optimizers(run: _Run) -> dict[str, torch.optim.Optimizer]:
    """{'G': ..., 'D': ...}: one optimizer per network (Gmain and Greg share one), as the training state stores them."""
    return {phase.name[0]: phase.optimizer for phase in run.phases}


def _prepare_iterations(run: _Run, state: LoopState) -> None:
    """Give every process rank 0's weights, then make the loss, the data loader (from state's iteration on) and the
    snapshot grid (reals.png written once)."""
    for module in (run.G, run.D, run.G_ema, run.augment_pipe):
        if module is not None:
            broadcast_module(module)
    run.loss = build_loss(run.spec, run.G, run.D, run.augment_pipe)
    run.loader = chunk_loader(run.dataset, run.batch_size, run.batch_gpu, run.rank, run.world, run.spec["random_seed"],
                              state.batch_idx, run.spec["data_loader_kwargs"]["num_workers"], run.device,
                              run.conditional)
    run.grid = SnapshotGrid.choose(run.dataset, run.G.z_dim, run.spec["random_seed"], run.device, run.conditional)
    if run.run_dir is not None:
        run.grid.save_reals(run.dataset, run.run_dir)


# --- one iteration -------------------------------------------------------------------------------------------------

def _train_iteration(run: _Run, state: LoopState) -> None:
    """One batch: every phase due at this iteration, then the EMA, the counters and (when due) ADA's p."""
    chunks = [chunk_to_device(next(run.loader), run.device) for _ in range(run.rounds)]
    for phase_idx, phase in enumerate(run.phases):
        if state.batch_idx % phase.interval == 0:
            _train_phase(run, state, phase_idx, phase, chunks)
    beta = ema_beta(state.cur_nimg, run.batch_size, run.spec["ema_kimg"], run.spec.get("ema_rampup", 0.05))
    update_ema(run.G_ema, run.G, beta)
    state.cur_nimg += run.batch_size
    state.batch_idx += 1
    if run.ada is not None and run.ada.is_due(state.batch_idx):
        if run.world > 1:
            torch.distributed.all_reduce(run.ada.accum)
        run.ada.update(run.augment_pipe, run.batch_size)


def _train_phase(run: _Run, state: LoopState, phase_idx: int, phase: Phase, chunks: list) -> None:
    """Accumulate the phase's gradients over this process's chunks (each after its own seed), average them over
    processes, and step the phase's optimizer."""
    phase.module.requires_grad_(True)
    phase.optimizer.zero_grad(set_to_none=True)
    for round_idx, (real_img, real_c, pose) in enumerate(chunks):
        chunk = round_idx * run.world + run.rank
        torch.manual_seed(derived_seed(run.spec["random_seed"], state.batch_idx, phase_idx, chunk))
        gen_z, gen_c = generator_inputs(run.dataset, run.batch_gpu, run.G.z_dim, run.device)
        reported = run.loss.accumulate_gradients(phase.name, real_img, real_c, gen_z, gen_c,
                                                 gain=phase.interval / run.rounds, cur_nimg=state.cur_nimg, **pose)
        for name, value in reported.items():
            run.stats.add(name, value)
        if run.ada is not None and "Loss/scores/real" in reported and phase.name in ("Dmain", "Dboth"):
            run.ada.accumulate(reported["Loss/scores/real"])
    phase.module.requires_grad_(False)
    nonfinite = reduce_gradients(phase.module)
    if run.spec.get("grad_clip_norm"):  # conditional training: the official conditional loop clips
        torch.nn.utils.clip_grad_norm_(phase.module.parameters(), run.spec["grad_clip_norm"])
    run.stats.add(f"{NONFINITE_STAT}{phase.name}", nonfinite)  # reported with the tick's statistics
    phase.optimizer.step()


# --- tick and snapshot ---------------------------------------------------------------------------------------------

def _end_tick(run: _Run, state: LoopState, clock: _Clock, done: bool) -> LoopState:
    """Status line; at every network_snapshot_ticks-th tick and at the end, images, snapshot, training state and
    metrics; then the tick's statistics. Returns the counters the next tick starts from."""
    _report_progress(run, state, clock)
    maintenance_start = time.time()
    next_state = LoopState(state.cur_nimg, state.cur_tick + 1, state.batch_idx, state.cur_nimg)
    metric_results = {}
    if done or state.cur_tick % run.spec["network_snapshot_ticks"] == 0:
        metric_results = _snapshot(run, state, next_state)
    clock.maintenance = time.time() - maintenance_start
    _log_statistics(run, state, metric_results)
    clock.tick_start = time.time()
    return next_state


def _report_progress(run: _Run, state: LoopState, clock: _Clock) -> None:
    """The tick's progress statistics and its status line."""
    tick_end = time.time()
    tick_seconds = tick_end - clock.tick_start
    tick_kimg = max(state.cur_nimg - state.tick_start_nimg, 1) / 1e3
    augment_p = float(run.augment_pipe.p) if run.augment_pipe is not None else None
    run.stats.add("Progress/tick", [state.cur_tick])
    run.stats.add("Progress/kimg", [state.cur_nimg / 1e3])
    run.stats.add("Timing/sec_per_tick", [tick_seconds])
    run.stats.add("Timing/sec_per_kimg", [tick_seconds / tick_kimg])
    if augment_p is not None:
        run.stats.add("Progress/augment", [augment_p])
    cpu_gb = psutil.Process(os.getpid()).memory_info().rss / 2 ** 30
    gpu_gb = torch.cuda.max_memory_allocated(run.device) / 2 ** 30 if run.device.type == "cuda" else 0.0
    run.log.line(" ".join([f"tick {state.cur_tick:<5d}", f"kimg {state.cur_nimg / 1e3:<8.3f}",
                           f"time {time.time() - clock.start:<8.1f}", f"sec/tick {tick_seconds:<7.1f}",
                           f"sec/kimg {tick_seconds / tick_kimg:<7.2f}", f"maintenance {clock.maintenance:<6.1f}",
                           f"cpumem {cpu_gb:<6.2f}", f"gpumem {gpu_gb:<6.2f}", f"augment {augment_p or 0:.3f}"]))


def _snapshot(run: _Run, state: LoopState, next_state: LoopState) -> dict:
    """Rank 0 writes the fakes grid, network-snapshot-<kimg>.pkl and its training state (next_state's counters);
    every process then computes the metrics. Returns rank 0's metric results ({} elsewhere)."""
    from op3d.checkpoints import save_network_pkl

    kimg = state.cur_nimg // 1000
    snapshot_pkl = os.path.join(run.run_dir or "", SNAPSHOT_PATTERN.format(kimg=kimg))
    if run.rank == 0:
        run.grid.save_fakes(run.G_ema, run.batch_gpu, run.run_dir, kimg)
        save_network_pkl(snapshot_pkl, {"training_set_kwargs": dict(run.spec["training_set_kwargs"]),
                                        "G": run.G, "D": run.D, "G_ema": run.G_ema, "augment_pipe": run.augment_pipe})
        save_training_state(snapshot_pkl, next_state, _optimizers(run),
                            run.ada, run.world, run.batch_size)
    return _compute_metrics(run, snapshot_pkl)


def _compute_metrics(run: _Run, snapshot_pkl: str) -> dict:
    """The spec's metrics on G_ema, appended to metric-<name>.jsonl by rank 0; a missing detector is noted once."""
    from op3d.metrics.detectors import DetectorError
    from op3d.metrics.registry import MetricContext, calc_metric, report_metric

    data = {"path": run.spec["training_set_kwargs"]["path"], "xflip": run.spec["training_set_kwargs"]["xflip"]}
    results = {}
    for name in run.spec.get("metrics", []):
        ctx = MetricContext(run.G_ema, data, device=run.device, detector_dir=run.spec.get("detector_dir"),
                            num_gen=run.spec.get("metrics_num_gen"))
        try:
            result = calc_metric(name, ctx)
        except DetectorError as error:
            if not run.metric_note_shown:
                run.log.line(f"metrics skipped: {error}")
                run.metric_note_shown = True
            continue
        if run.rank == 0:
            report_metric(result, run.run_dir, snapshot_pkl)
            results.update(result["results"])
    return results


def _log_statistics(run: _Run, state: LoopState, metric_results: dict) -> None:
    """Reduce the tick's statistics over processes, warn about non-finite gradients, and log them with the metrics."""
    summary = run.stats.summary(run.device)
    # Every process computed the same metric values: they are logged once, outside the per-process statistics
    # (whose names must match on every process for the reduction).
    summary.update({f"Metrics/{key}": {"num": 1, "mean": value, "std": 0.0} for key, value in metric_results.items()})
    for name, stat in summary.items():
        if name.startswith(NONFINITE_STAT) and stat["mean"] > 0:  # every process counts the same reduced grads
            run.log.line(f"warning: {round(stat['num'] * stat['mean'] / run.world)} non-finite gradient values in "
                         f"phase {name[len(NONFINITE_STAT):]} during tick {state.cur_tick} (kimg "
                         f"{state.tick_start_nimg / 1000:.3f} to {state.cur_nimg / 1000:.3f}); replaced (NaN -> 0, "
                         f"inf -> +-1e5) as the official loop does")
    run.log.stats(summary, state.cur_nimg)
