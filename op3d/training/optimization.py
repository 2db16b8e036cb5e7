"""Optimizer phases with lazy regularisation, gradient averaging over processes, and G's moving average (spec 5.3)."""

from __future__ import annotations

import dataclasses

import torch

from op3d.distributed import rank_and_world

D_REG_INTERVAL = 16


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


HYPER_PARAMETERS = ("lr", "betas", "eps")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> list[str]:
    """Load a saved optimizer state but keep this run's hyper-parameters (lr, betas, eps): torch's load_state_dict
    would bring back the saved run's, silently overriding a changed --glr / --dlr. The Adam moments and step counts
    are kept. Returns one line per hyper-parameter that differs from the saved one."""
    current = [{key: group[key] for key in HYPER_PARAMETERS} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    changes = []
    for group, wanted in zip(optimizer.param_groups, current):
        for key, value in wanted.items():
            if _floats(group[key]) != _floats(value):
                changes.append(f"{key} {_show(group[key])} -> {_show(value)}")
            group[key] = value
    return changes


def _floats(value) -> tuple[float, ...]:
    """A hyper-parameter (a number, or a sequence such as betas) as a tuple of floats."""
    return tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else (float(value),)


def _show(value) -> str:
    text = ", ".join(f"{v:.6g}" for v in _floats(value))
    return f"({text})" if isinstance(value, (tuple, list)) else text


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


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if rank_and_world()[1] > 1:
        for tensor in list(module.parameters()) + list(module.buffers()):
            torch.distributed.broadcast(tensor.data, src=0)


def ema_beta(cur_nimg: int, batch_size: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """How much of G_ema survives one batch of batch_size images: the average's half-life is ema_kimg thousand
    images, shortened during the ramp-up to ema_rampup times the images seen so far (no ramp-up: ema_rampup None)."""
    half_life = ema_kimg * 1000
    if ema_rampup is not None:
        half_life = min(half_life, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """Move G_ema towards G: each parameter becomes lerp(G's, G_ema's, beta) (beta from ema_beta); buffers,
    the neural rendering resolution and the rendering settings are taken from G as they are."""
    params = dict(G.named_parameters())
    for name, averaged in G_ema.named_parameters():
        averaged.copy_(torch.lerp(params[name], averaged, beta))
    buffers = dict(G.named_buffers())
    for name, kept in G_ema.named_buffers():
        kept.copy_(buffers[name])
    G_ema.neural_rendering_resolution = G.neural_rendering_resolution
    G_ema.rendering_kwargs = dict(G.rendering_kwargs)
