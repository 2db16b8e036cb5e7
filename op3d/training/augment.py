"""The adaptive update of the ADA augmentation probability p during training (Karras et al. 2020; reference doc
section 5.2). The augmentation itself is op3d.augmentation; its names are re-exported here for existing imports.
"""

from __future__ import annotations

import torch

from op3d.augmentation import (AUGMENT_PRESETS, AugmentPipe, augment_pipe_kwargs, brightness_shift, contrast_scale,
                               hue_rotation, luma_flip, resample, rotate2d, saturation_scale, scale2d, translate2d)

__all__ = ["AUGMENT_PRESETS", "AdaptiveAugment", "AugmentPipe", "augment_pipe_kwargs", "brightness_shift",
           "contrast_scale", "hue_rotation", "luma_flip", "resample", "rotate2d", "saturation_scale", "scale2d",
           "translate2d"]


class AdaptiveAugment:
    """The ADA heuristic: every `interval` iterations, p += sign(E[sign(D(real))] - target) * batch * interval /
    (kimg * 1000), clamped at 0. There is no upper clamp: once strength * p >= 1 that transform is simply always drawn.

    `accum` ([2] float32: sum of sign(D(real)), number of logits) is a plain tensor so several processes can sum it:

        ada.accumulate(real_logits)                  # in every D step on real images
        if ada.is_due(iterations_done):              # iterations_done counts completed iterations (1, 2, ...)
            torch.distributed.all_reduce(ada.accum)  # multi-process training only
            ada.update(augment_pipe, batch_size)     # batch_size = total over all processes

    Counts are exact while below 2**24 logits per interval. Defaults: target 0.6 (--target), interval 4,
    kimg 500 (the official loop default; OP3D's train script uses 200 when resuming)."""

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 500, device: torch.device | str = "cpu"):
        if interval < 1 or kimg <= 0:
            raise ValueError(f"AdaptiveAugment: need interval >= 1 and kimg > 0, got {interval}, {kimg}")
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.accum = torch.zeros(2, dtype=torch.float32, device=device)

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add the signs of D's logits on real images ([N, 1] or any shape)."""
        logits = real_logits.detach().to(self.accum.device)
        self.accum += torch.stack([logits.sign().sum().float(), logits.new_tensor(logits.numel()).float()])

    def is_due(self, iterations_done: int) -> bool:
        """Whether p is updated after this many completed iterations."""
        return iterations_done % self.interval == 0

    def step_size(self, batch_size: int) -> float:
        """|change of p| per update: batch_size * interval / (kimg * 1000)."""
        return batch_size * self.interval / (self.kimg * 1000)

    def update(self, pipe: AugmentPipe, batch_size: int) -> None:
        """Move pipe.p by one step towards the target and reset the accumulator. No change if nothing was
        accumulated (the mean sign of zero logits is undefined)."""
        total, count = self.accum.tolist()
        self.accum.zero_()
        if count == 0:
            return
        mean_sign = total / count
        direction = (mean_sign > self.target) - (mean_sign < self.target)
        adjust = direction * self.step_size(batch_size)
        pipe.p.copy_((pipe.p + adjust).clamp_min(0))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{'accum': [2]} (p itself is in the AugmentPipe's state dict)."""
        return {"accum": self.accum.detach().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the accumulator saved by state_dict() (exact resume mid-interval)."""
        if set(state) != {"accum"} or tuple(state["accum"].shape) != (2,):
            raise ValueError(f"AdaptiveAugment state: expected {{'accum': [2] tensor}}, got keys {sorted(state)}")
        self.accum.copy_(state["accum"])

