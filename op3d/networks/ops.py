"""Plain-PyTorch numerical primitives of StyleGAN2: bias + activation, FIR resampling, resampling convolution,
modulated convolution.

These are the reference computations the official checkpoints were trained with (spec section 2.7). Every op runs
on CPU, CUDA and MPS; tensors are NCHW.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from op3d.fast_paths import FAST

# Device types on which blocks built with use_fp16 run in float16 (as officially: CUDA only; elsewhere float32).
FP16_DEVICE_TYPES = frozenset({"cuda"})


def runs_fp16(device: torch.device) -> bool:
    """Whether fp16-built blocks compute in float16 on this device."""
    return device.type in FP16_DEVICE_TYPES


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


def setup_filter(taps=(1, 3, 3, 1), device=None) -> torch.Tensor:
    """Separable low-pass FIR as a 2-D kernel: outer product of `taps`, normalised to sum 1. [k, k] float32."""
    f = torch.as_tensor(taps, dtype=torch.float32, device=device)
    f = torch.outer(f, f)
    return f / f.sum()


def _pad4(padding) -> list[int]:
    if isinstance(padding, int):
        return [padding] * 4
    if len(padding) == 2:
        return [padding[0], padding[0], padding[1], padding[1]]
    return list(padding)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1, padding=0,
              flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Upsample by zero insertion, pad (or crop, when negative), filter with the 2-D FIR `f`, then decimate.

    padding: int or [x0, x1, y0, y1]. The filter is scaled by `gain` and flipped unless `flip_filter`
    (filtering is a true convolution). Separable filters take the fast path (`FAST.fir`) when it is on."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    px0, px1, py0, py1 = _pad4(padding)
    if FAST.fir and up == 1 and x.ndim == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return _filter_depthwise(x, f, down, px0, px1, py0, py1, flip_filter, gain)
    if FAST.fir and (up == 1 or down == 1):
        taps = separable_taps(f)
        if taps is not None:
            col, row = taps
            if up == 2 and down == 1 and [px0, px1, py0, py1] == [2, 1, 2, 1] and not flip_filter \
                    and [t * gain / 2 for t in row] == _BILINEAR_TAPS and [t * 2 for t in col] == _BILINEAR_TAPS:
                return _upsample2x_bilinear(x)
            flip = not flip_filter
            x = _fir_1d(x, [t * gain for t in (row[::-1] if flip else row)], 3, up, down, px0, px1)
            return _fir_1d(x, list(col[::-1] if flip else col), 2, up, down, py0, py1)
    return _upfirdn2d_reference(x, f, up, down, px0, px1, py0, py1, flip_filter, gain)


_TAPS_CACHE: dict = {}


def separable_taps(f: torch.Tensor) -> tuple[list[float], list[float]] | None:
    """(column taps, row taps) as Python floats with outer(col, row) == f exactly, or None if f is not separable.

    The answer is cached per filter tensor (device, storage, version), so CUDA filters cost one sync per filter.
    A meta tensor has no values to inspect: None (the plain path, which never reads them)."""
    if f.device.type == "meta":
        return None
    key = (f.device, f.data_ptr(), f._version, tuple(f.shape))
    if key not in _TAPS_CACHE:
        g, taps = f.detach().double().cpu(), None
        if g.ndim == 2 and g.sum() != 0:
            col, row = g.sum(1), g.sum(0) / g.sum()
            if torch.equal(torch.outer(col, row).to(f.dtype), f.detach().cpu()):
                taps = (col.tolist(), row.tolist())
        _TAPS_CACHE[key] = taps
    return _TAPS_CACHE[key]


# [1, 3, 3, 1] / 8 per axis times the per-axis x2 upsampling gain 2: the filter upsample2d uses.
_BILINEAR_TAPS = [0.25, 0.75, 0.75, 0.25]


def _upsample2x_bilinear(x: torch.Tensor) -> torch.Tensor:
    """upsample2d with the [1, 3, 3, 1] filter: half-pixel bilinear interpolation in the interior (output 2i reads
    x[i - 1], x[i] with weights 1/4, 3/4); the FIR's zero padding, where bilinear clamps, leaves 3/4 of the value
    on the outermost rows and columns."""
    out = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    for dim in (2, 3):
        out.narrow(dim, 0, 1).mul_(0.75)
        out.narrow(dim, out.shape[dim] - 1, 1).mul_(0.75)
    return out


def _axis_slice(x: torch.Tensor, dim: int, start: int, length: int, step: int = 1) -> torch.Tensor:
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, start + (length - 1) * step + 1, step)
    return x[tuple(index)]


def _fir_1d(x: torch.Tensor, taps: list[float], dim: int, up: int, down: int, pad0: int, pad1: int) -> torch.Tensor:
    """One axis of a separable upfirdn2d (up == 1 or down == 1): out[o] = sum_t taps[t] * y[o * down + t], y the
    zero-stuffed, padded input. With up > 1 each output phase reads only the real samples (strided slices), so
    the inserted zeros are never built."""
    n, k = x.shape[dim], len(taps)
    out_len = n * up + pad0 + pad1 - k + 1
    if out_len < 1:
        raise ValueError(f"upfirdn2d: padding {pad0, pad1} leaves no output for {n} samples and {k} taps")
    if up == 1:
        pad = [0, 0] * (x.ndim - 1 - dim) + [pad0, pad1]
        y = torch.nn.functional.pad(x, pad) if pad0 or pad1 else x
        count = (out_len + down - 1) // down
        out = _axis_slice(y, dim, 0, count, down) * taps[0]
        for t in range(1, k):
            out = out.add_(_axis_slice(y, dim, t, count, down), alpha=taps[t])
        return out
    # Output o = up * q + phase reads y[o + t] = x[(o + t - pad0) / up] when that is an integer in range.
    phases = []
    for phase in range(up):
        count = (out_len - phase + up - 1) // up
        reads = [(t, (phase + t - pad0) // up) for t in range(k) if (phase + t - pad0) % up == 0]
        phases.append((count, reads))
    lo = max(0, -min(e for _, reads in phases for _, e in reads))
    hi = max(0, max(count + e for count, reads in phases for _, e in reads) - n)
    y = torch.nn.functional.pad(x, [0, 0] * (x.ndim - 1 - dim) + [lo, hi])
    outs = []
    for count, reads in phases:
        (t0, e0), rest = reads[0], reads[1:]
        out = _axis_slice(y, dim, lo + e0, count) * taps[t0]
        for t, e in rest:
            out = out.add_(_axis_slice(y, dim, lo + e, count), alpha=taps[t])
        outs.append(out)
    if all(o.shape[dim] == outs[0].shape[dim] for o in outs):
        return torch.stack(outs, dim=dim + 1).flatten(dim, dim + 1)
    shape = list(x.shape)
    shape[dim] = out_len
    result = x.new_empty(shape)
    for phase, out in enumerate(outs):
        index = [slice(None)] * x.ndim
        index[dim] = slice(phase, None, up)
        result[tuple(index)] = out
    return result


def _filter_depthwise(x, f, down, px0, px1, py0, py1, flip_filter, gain):
    """upfirdn2d without up-sampling as one strided depthwise convolution (the reference's kernel and padding, no
    zero-stuffed copy), for channels-last x: oneDNN runs it in that layout directly."""
    c = x.shape[1]
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f.view(1, 1, *f.shape[-2:]).expand(c, 1, -1, -1)
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, f, stride=down, padding=[py0, px0], groups=c)
    return F.conv2d(F.pad(x, [px0, px1, py0, py1]), f, stride=down, groups=c)


def _upfirdn2d_reference(x, f, up, down, px0, px1, py0, py1, flip_filter, gain):
    """The plain upfirdn2d: zero-stuffed copy, pad, depthwise 2-D convolution, decimation."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([c, 1] + [1] * f.ndim)
    x = F.conv2d(x, f, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Exact x`up` upsampling with the FIR `f` (output H*up x W*up)."""
    k = f.shape[-1]
    p0, p1 = (k + up - 1) // 2, (k - up) // 2
    return upfirdn2d(x, f, up=up, padding=[p0, p1, p0, p1], gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """Exact /`down` downsampling after low-pass filtering with `f`."""
    k = f.shape[-1]
    p0, p1 = (k - down + 1) // 2, (k - down) // 2
    return upfirdn2d(x, f, down=down, padding=[p0, p1, p0, p1])


def filter2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Same-size filtering with the FIR `f`."""
    kh, kw = f.shape[0], f.shape[-1]
    return upfirdn2d(x, f, padding=[kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2])


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    # F.conv2d is a correlation; flip_weight=False turns it into a true convolution.
    if not flip_weight and (w.shape[-1] > 1 or w.shape[-2] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding: int = 0, groups: int = 1, flip_weight: bool = True) -> torch.Tensor:
    """2-D convolution with optional x`up` upsampling / /`down` downsampling through the FIR `f`, computed as
    StyleGAN2 does it (transposed stride-2 conv then FIR for up; FIR then stride-2 conv for down).

    x: [N, C_in, H, W]; w: [C_out, C_in / groups, kh, kw]; padding: symmetric int."""
    c_out, c_in_g, kh, kw = w.shape
    fk = f.shape[-1] if f is not None else 1
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        px0 += (fk + up - 1) // 2
        px1 += (fk - up) // 2
        py0 += (fk + up - 1) // 2
        py1 += (fk - up) // 2
    if down > 1:
        px0 += (fk - down + 1) // 2
        px1 += (fk - down) // 2
        py0 += (fk - down + 1) // 2
        py1 += (fk - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, c_out // groups, c_in_g, kh, kw).transpose(1, 2)
            w = w.reshape(groups * c_in_g, c_out // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2)
        if down > 1:
            x = upfirdn2d(x, f, down=down)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return _conv(x, w, groups=groups, flip_weight=flip_weight)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    x: [N, C_in, H, W]; weight: [C_out, C_in, k, k]; styles: [N, C_in]; noise broadcastable to the output.
    fused_modconv=True runs one grouped convolution with per-sample weights; False scales the activations
    before and after a shared convolution (the official training-mode path). Both compute the same function."""
    n = x.shape[0]
    c_out, c_in, kh, kw = weight.shape
    if fused_modconv and n > 1 and FAST.channels_last and x.is_contiguous(memory_format=torch.channels_last):
        fused_modconv = False  # a shared channels-last convolution beats a grouped one; the same function
    if x.dtype == torch.float16 and demodulate:
        # Keep fp16 activations in range: pre-normalise weight and styles (the normalisation cancels out).
        weight = weight * (1 / math.sqrt(c_in * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        elif noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x

    if n > 1:  # one grouped convolution, a group per sample (a reshape of one sample would drop channels-last)
        x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, c_in, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding, groups=n,
                        flip_weight=flip_weight)
    if n > 1:
        x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / RMS(x) along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
