"""The random numbers of one loss call (`LossDraws`): recorded tensors in call order for parity replays, or torch's
global RNG with the official calls, order and shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from op3d.rendering.renderer import RendererDraws


class LossDraws:
    """Source of the random numbers of one `accumulate_gradients` call.

    recorded: tensors in call order (a sequence, or a mapping whose insertion order is the call order, e.g. the
    '<phase>_rng<j>_<fn>' entries of a fixture); None = draw from torch's global RNG with the official calls.
    Recorded draws, in official order: the label-swap draw (G phases and Dmain, when gpc_reg_prob is set: [B, 1]
    per sample, [] in Greg); style mixing (when style_mixing_prob > 0): the cutoff [], the apply draw [] and the
    z [B, z_dim]; the renderer's stratified jitter [B, M, S, 1] and importance u [B * M, N]; in Greg the points
    [B, n, 3], their perturbation [B, n, 3] (l1 only) and the unused ray directions [B, 2n, 3].
    Network noise (noise_mode 'random') is not part of them: it always comes from the global RNG."""

    def __init__(self, recorded: Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | None = None):
        if isinstance(recorded, Mapping):
            recorded = list(recorded.values())
        self._recorded = None if recorded is None else [torch.as_tensor(t) for t in recorded]
        self._next = 0

    def _take(self, shape, what: str, device, dtype=torch.float32) -> torch.Tensor:
        if self._next >= len(self._recorded):
            raise ValueError(f"recorded draws exhausted: needed {what} of shape {list(shape)} as draw "
                             f"#{self._next}, but only {len(self._recorded)} were given")
        t = self._recorded[self._next]
        if list(t.shape) != list(shape):
            raise ValueError(f"recorded draw #{self._next}: expected {what} of shape {list(shape)}, got "
                             f"{list(t.shape)}")
        self._next += 1
        return t.to(device=device, dtype=dtype)

    def uniform(self, shape, device, what: str) -> torch.Tensor:
        """U[0, 1) float32 of `shape` (torch.rand)."""
        if self._recorded is None:
            return torch.rand(shape, device=device)
        return self._take(shape, what, device)

    def normal(self, shape, device, what: str) -> torch.Tensor:
        """N(0, 1) float32 of `shape` (torch.randn)."""
        if self._recorded is None:
            return torch.randn(shape, device=device)
        return self._take(shape, what, device)

    def integer(self, low: int, high: int, device, what: str) -> int:
        """Uniform integer in [low, high) (a 0-d int64 tensor's random_)."""
        if self._recorded is None:
            return int(torch.empty([], dtype=torch.int64, device=device).random_(low, high))
        return int(self._take([], what, device, dtype=torch.int64))

    def renderer(self, n_batch: int, n_rays: int, settings, device) -> RendererDraws | None:
        """The renderer's draws for one synthesis call (None: the renderer draws them itself, in the same order)."""
        if self._recorded is None:
            return None
        stratified = self._take([n_batch, n_rays, settings.depth_resolution, 1], "stratified depth jitter", device)
        importance = None
        if settings.depth_resolution_importance > 0:
            importance = self._take([n_batch * n_rays, settings.depth_resolution_importance],
                                    "importance-sampling u", device)
        return RendererDraws(stratified, importance)

    def check_consumed(self) -> None:
        if self._recorded is not None and self._next != len(self._recorded):
            raise ValueError(f"{len(self._recorded) - self._next} recorded draw(s) left unused (used {self._next} "
                             f"of {len(self._recorded)}): the recording does not match this loss configuration")
