"""Plain-PyTorch numerical primitives of StyleGAN2: FIR resampling, resampling convolution, modulated convolution
(bias + activation, `bias_act`, lives in op3d.primitives and is re-exported here).

These are the reference computations the official checkpoints were trained with (spec section 2.7). Every op runs
on CPU, CUDA and MPS; tensors are NCHW.
"""

from __future__ import annotations

import functools
import math
import weakref

import torch
import torch.nn.functional as F

from op3d.fast_paths import FAST
from op3d.primitives import ACTIVATIONS, bias_act  # noqa: F401 (part of this module's API)

# Device types on which blocks built with use_fp16 run in float16 (as officially: CUDA only; elsewhere float32).
FP16_DEVICE_TYPES = frozenset({"cuda"})


def runs_fp16(device: torch.device) -> bool:
    """Whether fp16-built blocks compute in float16 on this device."""
    return device.type in FP16_DEVICE_TYPES


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


# id(filter) -> (weak reference to it, data pointer, version counter, taps). An entry is dropped when its filter is
# freed, so a new tensor that the allocator places at a freed filter's address never sees the old taps.
_TAPS_CACHE: dict = {}


def separable_taps(f: torch.Tensor) -> tuple[list[float], list[float]] | None:
    """(column taps, row taps) as Python floats with outer(col, row) == f exactly, or None if f is not separable.

    The answer is remembered for the filter tensor itself while its storage and version counter are unchanged, so
    a CUDA filter costs one sync per tensor (and per in-place change). A meta tensor has no values to inspect:
    None (the plain path, which never reads them)."""
    if f.device.type == "meta":
        return None
    entry = _TAPS_CACHE.get(id(f))
    if entry is not None and entry[0]() is f and entry[1:3] == (f.data_ptr(), f._version):
        return entry[3]
    taps = _read_separable_taps(f)
    key = id(f)
    _TAPS_CACHE[key] = (weakref.ref(f, lambda _, key=key: _TAPS_CACHE.pop(key, None)), f.data_ptr(), f._version,
                        taps)
    return taps


def _read_separable_taps(f: torch.Tensor) -> tuple[list[float], list[float]] | None:
    g = f.detach().double().cpu()
    if g.ndim != 2 or g.sum() == 0:
        return None
    col, row = g.sum(1), g.sum(0) / g.sum()
    if not torch.equal(torch.outer(col, row).to(f.dtype), f.detach().cpu()):
        return None
    return col.tolist(), row.tolist()


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


def fir_padding(f: torch.Tensor | None, up: int = 1, down: int = 1, padding: int = 0) -> list[int]:
    """[x0, x1, y0, y1]: `padding` on every side plus what x`up` / /`down` resampling with the FIR `f` needs on
    each axis for an exact output size (H * up, or H / down).

    Along an axis of t taps, up-sampling (zeros inserted after each sample) needs (t + up - 1) // 2 before and
    (t - up) // 2 after; down-sampling (the kept samples are the first of each group) needs (t - down + 1) // 2
    before and (t - down) // 2 after."""
    taps = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    pads = []
    for t in taps:  # x axis (filter width), then y axis (filter height)
        before = after = padding
        if up > 1:
            before, after = before + (t + up - 1) // 2, after + (t - up) // 2
        if down > 1:
            before, after = before + (t - down + 1) // 2, after + (t - down) // 2
        pads += [before, after]
    return pads


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Exact x`up` upsampling with the FIR `f` (output H*up x W*up)."""
    return upfirdn2d(x, f, up=up, padding=fir_padding(f, up=up), gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """Exact /`down` downsampling after low-pass filtering with `f`."""
    return upfirdn2d(x, f, down=down, padding=fir_padding(f, down=down))


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
    """2-D convolution with optional x`up` upsampling / /`down` downsampling through the FIR `f`, in the order
    StyleGAN2 computes it (spec 2.7): up-sampling is a transposed stride-`up` convolution followed by the FIR;
    down-sampling is the FIR followed by a stride-`down` convolution.

    x: [N, C_in, H, W]; w: [C_out, C_in / groups, kh, kw]; padding: symmetric int."""
    pads = fir_padding(f, up, down, padding)
    pointwise = w.shape[-2:] == (1, 1)
    if up == 1 and down == 1:
        return _plain_conv(x, w, pads, groups, flip_weight)
    if up == 1:
        return _downsampling_conv(x, w, f, down, pads, groups, flip_weight, pointwise)
    if pointwise and down == 1:  # a 1x1 kernel commutes with the resampling: convolve the small image
        return upfirdn2d(_conv(x, w, groups=groups, flip_weight=flip_weight), f, up=up, padding=pads, gain=up * up)
    return _upsampling_conv(x, w, f, up, down, pads, groups, flip_weight)


def _plain_conv(x, w, pads, groups, flip_weight):
    """No resampling: the convolution pads by itself when the padding is symmetric and not a crop."""
    x0, x1, y0, y1 = pads
    if min(pads) >= 0 and x0 == x1 and y0 == y1:
        return _conv(x, w, padding=[y0, x0], groups=groups, flip_weight=flip_weight)
    return _conv(upfirdn2d(x, None, padding=pads), w, groups=groups, flip_weight=flip_weight)


def _downsampling_conv(x, w, f, down, pads, groups, flip_weight, pointwise):
    """Low-pass first. A 1x1 kernel is applied after the FIR has decimated; a larger one decimates by its stride."""
    if pointwise:
        return _conv(upfirdn2d(x, f, down=down, padding=pads), w, groups=groups, flip_weight=flip_weight)
    return _conv(upfirdn2d(x, f, padding=pads), w, stride=down, groups=groups, flip_weight=flip_weight)


def _transposed_kernel(w: torch.Tensor, groups: int) -> torch.Tensor:
    """[C_out, C_in / g, kh, kw] -> the [C_in, C_out / g, kh, kw] layout conv_transpose2d expects, per group."""
    c_out, c_in_per_group = w.shape[:2]
    per_group = w.reshape(groups, c_out // groups, c_in_per_group, *w.shape[2:]).transpose(1, 2)
    return per_group.reshape(groups * c_in_per_group, c_out // groups, *w.shape[2:])


def _upsampling_conv(x, w, f, up, down, pads, groups, flip_weight):
    """Transposed stride-`up` convolution, then the FIR (gain up^2), then an optional FIR decimation.

    The transposed convolution itself spans k - 1 samples before and k - up after each input along an axis of k
    taps; that span is taken off the FIR padding, and the part the convolution can absorb symmetrically (the
    smaller deficit) becomes its own padding."""
    kernel = w.transpose(0, 1) if groups == 1 else _transposed_kernel(w, groups)
    fir_pads, conv_pads = [], []
    for (before, after), k in zip((pads[:2], pads[2:]), (w.shape[3], w.shape[2])):
        before, after = before - (k - 1), after - (k - up)
        absorbed = max(min(-before, -after), 0)
        conv_pads.append(absorbed)
        fir_pads += [before + absorbed, after + absorbed]
    x = _conv(x, kernel, stride=up, padding=conv_pads[::-1], groups=groups, transpose=True,
              flip_weight=not flip_weight)
    x = upfirdn2d(x, f, padding=fir_pads, gain=up * up)
    return x if down == 1 else upfirdn2d(x, f, down=down)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution (spec 2.7).

    x: [N, C_in, H, W]; weight: [C_out, C_in, k, k]; styles: [N, C_in]; noise broadcastable to the output.
    fused_modconv=True runs one grouped convolution with per-sample weights; False scales the activations
    before and after a shared convolution (the official training-mode path). Both compute the same function."""
    if fused_modconv and x.shape[0] > 1 and FAST.channels_last and x.is_contiguous(memory_format=torch.channels_last):
        fused_modconv = False  # a shared channels-last convolution beats a grouped one; the same function
    if demodulate and x.dtype == torch.float16:
        weight, styles = _fp16_prenormalised(weight, styles)
    conv = functools.partial(conv2d_resample, f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
    run = _modconv_per_sample if fused_modconv else _modconv_shared
    return run(x, weight, styles, noise, demodulate, conv)


def _fp16_prenormalised(weight, styles):
    """Weight and styles divided by their largest magnitudes (the weight also by sqrt(fan_in)), which keeps fp16
    activations in range; demodulation cancels the scale."""
    fan_in = weight[0].numel()
    weight = weight * (1 / math.sqrt(fan_in) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
    return weight, styles / styles.norm(float("inf"), dim=1, keepdim=True)


def _demodulation(styled: torch.Tensor) -> torch.Tensor:
    """1 / sqrt(sum of squares + 1e-8) of each output filter: styled [N, C_out, C_in, kh, kw] -> [N, C_out]."""
    return (styled.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()


def _modconv_shared(x, weight, styles, noise, demodulate, conv):
    """Inputs scaled by the styles, one convolution with the shared weight, outputs scaled by the demodulation
    coefficients (one fused multiply-add with the noise)."""
    n = x.shape[0]
    coefs = _demodulation(weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)) if demodulate else None
    out = conv(x * styles.to(x.dtype).reshape(n, -1, 1, 1), weight.to(x.dtype))
    if coefs is None:
        return out if noise is None else out.add_(noise.to(out.dtype))
    coefs = coefs.to(out.dtype).reshape(n, -1, 1, 1)
    return out * coefs if noise is None else torch.addcmul(noise.to(out.dtype), out, coefs)


def _modconv_per_sample(x, weight, styles, noise, demodulate, conv):
    """Each sample's own styled (and demodulated) kernel; the batch runs as one grouped convolution with a group
    per sample (a single sample runs ungrouped: reshaping it would drop a channels-last layout)."""
    n = x.shape[0]
    styled = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        styled = styled * _demodulation(styled).reshape(n, -1, 1, 1, 1)
    kernels = styled.reshape(-1, *weight.shape[1:]).to(x.dtype)
    if n == 1:
        out = conv(x, kernels)
    else:
        out = conv(x.reshape(1, -1, *x.shape[2:]), kernels, groups=n)
        out = out.reshape(n, -1, *out.shape[2:])
    return out if noise is None else out.add_(noise)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / RMS(x) along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
