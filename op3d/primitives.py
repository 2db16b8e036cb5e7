"""Primitives shared by networks/ and representation/: bias + activation (StyleGAN2's bias_act) and the
equalized-learning-rate dense layer (spec section 2.7). Lowest layer above fast_paths: imports nothing else of op3d.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from op3d.fast_paths import FAST

# Activation name -> (function taking x, default gain).
ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
    "sigmoid": (torch.sigmoid, 1.0),
    "softplus": (F.softplus, 1.0),
}


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, dim: int = 1, overwrite: bool = False) -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp); `b` is broadcast along `dim`. gain None = the activation's
    default gain (sqrt(2) for lrelu/relu, 1 otherwise). overwrite=True: x is a fresh intermediate the caller no
    longer needs, which the in-place fast path may reuse for the result."""
    func, default_gain = ACTIVATIONS[act]
    gain = default_gain if gain is None else float(gain)
    clamp = clamp if clamp is not None and clamp >= 0 else None
    if FAST.inplace_act and not (torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))):
        return _bias_act_inplace(x, b, act, gain, clamp, dim, overwrite)
    if b is not None:
        shape = [-1 if i == dim else 1 for i in range(x.ndim)]
        x = x + b.reshape(shape)
    x = func(x)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


_INPLACE_ACTIVATIONS = {"linear": lambda x: x, "relu": F.relu_, "lrelu": lambda x: F.leaky_relu_(x, 0.2)}


def _bias_act_inplace(x, b, act, gain, clamp, dim, overwrite):
    """bias_act without recorded gradients: the first step makes the one new tensor (none if x may be
    overwritten), the others run in place."""
    if b is not None:
        b = b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        x = x.add_(b) if overwrite else x + b
    elif not overwrite and (act in ("relu", "lrelu") or gain != 1 or clamp is not None):
        x = x.clone(memory_format=torch.preserve_format)
    x = _INPLACE_ACTIVATIONS[act](x) if act in _INPLACE_ACTIVATIONS else ACTIVATIONS[act][0](x)
    if gain != 1:
        x = x.mul_(gain)
    if clamp is not None:
        x = x.clamp_(-clamp, clamp)
    return x


class FullyConnectedLayer(nn.Module):
    """Equalized FC (spec 2.7): x [N, in_features] -> [N, out_features].

    Stored: weight = randn / lr_multiplier, bias = bias_init. Applied: each parameter times its gain, weight_gain =
    lr_multiplier / sqrt(in_features) and bias_gain = lr_multiplier, so every layer learns at the same rate."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def applied(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight [out, in], bias [out] or None) as the layer applies them, in `dtype`. A gain of 1 is skipped
        (multiplying by 1 is exact)."""
        def scaled(param, gain):
            param = param.to(dtype)
            return param if gain == 1 else param * gain
        return scaled(self.weight, self.weight_gain), None if self.bias is None else scaled(self.bias, self.bias_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.applied(x.dtype)
        if bias is None or self.activation != "linear":
            return bias_act(x.matmul(weight.t()), bias, act=self.activation, overwrite=True)
        return torch.addmm(bias.unsqueeze(0), x, weight.t())  # linear: bias added inside the product

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
