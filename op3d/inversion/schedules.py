"""The step schedules of the StyleGAN2 latent projector (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", appendix D), as functions of the optimisation progress t = step / num_steps in [0, 1).

Learning rate: ramped up linearly from zero over the first `rampup` fraction of the steps and down to zero with a
half cosine over the last `rampdown` fraction (published: 0.05 and 0.25, i.e. 50 and 250 of 1000 steps; peak 0.1):

    lr(t) = base_lr * (1/2 - 1/2 cos(pi * min(1, (1 - t) / rampdown))) * min(1, t / rampup)

Latent noise: during the first `noise_ramp` fraction (published: 0.75) Gaussian noise of standard deviation

    sigma(t) = w_std * initial_noise * max(0, 1 - t / noise_ramp)^2        (published initial_noise: 0.05)

is added to w when the loss is evaluated; w_std is the spread of W: sqrt(E ||w - w_avg||^2) over mapped samples.
"""

from __future__ import annotations

import math

LR_RAMPUP = 0.05
LR_RAMPDOWN = 0.25
INITIAL_NOISE = 0.05
NOISE_RAMP = 0.75


def learning_rate(t: float, base_lr: float, rampup: float = LR_RAMPUP, rampdown: float = LR_RAMPDOWN) -> float:
    """The learning rate at progress t (see the module docstring). rampup = 0 or rampdown = 0 switch that ramp off."""
    down = 1.0 if rampdown <= 0 else min(1.0, (1.0 - t) / rampdown)
    up = 1.0 if rampup <= 0 else min(1.0, t / rampup)
    return base_lr * (0.5 - 0.5 * math.cos(math.pi * down)) * up


def latent_noise_scale(t: float, w_std: float, initial_noise: float = INITIAL_NOISE,
                       noise_ramp: float = NOISE_RAMP) -> float:
    """Standard deviation of the noise added to w at progress t (see the module docstring); 0 from t = noise_ramp."""
    if noise_ramp <= 0:
        return 0.0
    return w_std * initial_noise * max(0.0, 1.0 - t / noise_ramp) ** 2


def progress(step: int, num_steps: int) -> float:
    """t = step / num_steps for step = 0 .. num_steps - 1."""
    return step / max(num_steps, 1)
