"""Differentiable ADA augmentation of discriminator inputs and the adaptive update of its probability p
(Karras et al., "Training Generative Adversarial Networks with Limited Data", NeurIPS 2020, appendix B;
reference doc section 5.2, "Augmentation").

Implemented groups (the 'bgc' preset that EG3D / OP3D train with, all strength 1):

* pixel blitting: xflip, rotate90, xint -- exact integer index maps with mirror padding (no resampling at all);
* general geometric: isotropic scale, pre-rotation, anisotropic scale, post-rotation, xfrac -- one 3x3 matrix per
  sample, applied by the resampler below;
* colour: brightness, contrast, luma flip, hue rotation, saturation -- one 4x4 matrix per sample acting on each
  consecutive RGB triple of the channels (so a 6-channel [image, image_raw] input gets one transform per sample).

Left out: the image-space filtering ('f'), additive noise ('n') and cutout ('c') groups; no op3d / EG3D config uses
them.

Resampling (general geometric group). Like the paper: mirror-pad, upsample x2 with a low-pass filter, bilinear
lookup at the transformed positions, low-pass and decimate x2. Differences: the low-pass is a 32-tap Kaiser-windowed
sinc (beta 8, cutoff at the input's Nyquist frequency; up + down gain within 1e-4 of 1 up to 0.6 x Nyquist, stop band
below 1e-4 beyond 1.4 x Nyquist) instead of the paper's 12-tap Symlet-6 wavelet filter; mirror padding reaches as
far as the transform needs (no size limit); and samples that drew no general geometric transform skip the resampler,
so they stay bit-exact instead of being slightly low-passed. Mirror padding repeats no edge pixel (..., 1, 0, 1, ...).

Geometry conventions: a matrix G maps output pixel coordinates to the input coordinates that are sampled there,
in pixels, origin at the image centre, x to the right, y down. Every transform's distribution is symmetric, so
sampling through G or through its inverse draws the same augmentations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from op3d.networks.construction import records_init_kwargs

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

# Official --augpipe preset names -> AugmentPipe strengths (only presets made of implemented groups).
AUGMENT_PRESETS: dict[str, dict[str, float]] = {
    "blit": dict(_BLIT),
    "geom": dict(_GEOM),
    "color": dict(_COLOR),
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
}

# The luma axis of the colour transforms: v = [1, 1, 1] / sqrt(3) in RGB (mid-grey is 0 for images in [-1, 1]).
_LUMA_AXIS = (1 / math.sqrt(3),) * 3

# Low-pass used by the resampler: taps, Kaiser beta.
_LOWPASS_TAPS = 32
_LOWPASS_BETA = 8.0


def augment_pipe_kwargs(spec: str) -> dict[str, float]:
    """AugmentPipe keyword arguments for an official `--augpipe` preset name ('bgc' is the one OP3D uses)."""
    if spec not in AUGMENT_PRESETS:
        raise ValueError(f"augment pipe preset: expected one of {sorted(AUGMENT_PRESETS)}, got {spec!r} "
                         "(the filter / noise / cutout groups are not implemented)")
    return dict(AUGMENT_PRESETS[spec])


# --- 2-D geometric matrices: batched [N, 3, 3] float32 --------------------------------------------------------------

def _matrix(rows, like: torch.Tensor) -> torch.Tensor:
    """Stack rows of per-sample scalars ([N] tensors or Python numbers) into [N, len(rows), len(rows[0])]."""
    n = like.shape[0]
    cols = [torch.as_tensor(v, dtype=torch.float32, device=like.device).expand(n) for row in rows for v in row]
    return torch.stack(cols, dim=1).reshape(n, len(rows), len(rows[0]))


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Homogeneous 2-D translation by (tx, ty): [N], [N] -> [N, 3, 3]."""
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], like=tx)


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """Homogeneous 2-D scaling by (sx, sy): [N], [N] -> [N, 3, 3]."""
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], like=sx)


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """Homogeneous 2-D rotation by theta radians (x towards y): [N] -> [N, 3, 3]."""
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], like=theta)


# --- colour matrices: batched [N, 4, 4] float32 acting on homogeneous [r, g, b, 1] -----------------------------------

def _linear3d(m: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] linear map -> [N, 4, 4] homogeneous matrix with no offset."""
    out = torch.eye(4, dtype=m.dtype, device=m.device).repeat(m.shape[0], 1, 1)
    out[:, :3, :3] = m
    return out


def _luma_projector(like: torch.Tensor) -> torch.Tensor:
    """v v^T for the luma axis v: [3, 3]."""
    v = torch.tensor(_LUMA_AXIS, dtype=torch.float32, device=like.device)
    return torch.outer(v, v)


def brightness_shift(b: torch.Tensor) -> torch.Tensor:
    """Add b to every channel: [N] -> [N, 4, 4]."""
    return _matrix([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]], like=b)


def contrast_scale(c: torch.Tensor) -> torch.Tensor:
    """Scale every channel by c about mid-grey 0: [N] -> [N, 4, 4]."""
    return _matrix([[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]], like=c)


def luma_flip(flip: torch.Tensor) -> torch.Tensor:
    """Householder reflection I - 2 v v^T of the luma component where flip == 1, identity where flip == 0:
    [N] in {0, 1} -> [N, 4, 4]."""
    vv = _luma_projector(flip)
    eye = torch.eye(3, dtype=torch.float32, device=flip.device)
    return _linear3d(eye - 2 * vv * flip.float()[:, None, None])


def hue_rotation(theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta radians about the luma axis (Rodrigues): [N] -> [N, 4, 4]."""
    vv = _luma_projector(theta)
    a = _LUMA_AXIS[0]
    cross = vv.new_tensor([[0, -a, a], [a, 0, -a], [-a, a, 0]])  # [v]_x, the cross-product matrix of v
    eye = torch.eye(3, dtype=torch.float32, device=theta.device)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    return _linear3d(vv + (eye - vv) * c + cross * s)


def saturation_scale(s: torch.Tensor) -> torch.Tensor:
    """Scale the chroma (the component orthogonal to the luma axis) by s: v v^T + (I - v v^T) s. [N] -> [N, 4, 4]."""
    vv = _luma_projector(s)
    eye = torch.eye(3, dtype=torch.float32, device=s.device)
    return _linear3d(vv + (eye - vv) * s[:, None, None])


# --- resampling ------------------------------------------------------------------------------------------------------

def _lowpass_taps() -> torch.Tensor:
    """Kaiser-windowed sinc with cutoff at a quarter of the sampling rate (the Nyquist frequency of the image before
    x2 upsampling), unit DC gain. [_LOWPASS_TAPS] float32, symmetric, even length."""
    t = torch.arange(_LOWPASS_TAPS, dtype=torch.float64) - (_LOWPASS_TAPS - 1) / 2
    window = torch.special.i0(_LOWPASS_BETA * torch.sqrt(1 - (2 * t / _LOWPASS_TAPS) ** 2))
    h = torch.sinc(t / 2) * window
    return (h / h.sum()).float()


def _mirror_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Map integer indices anywhere on the line into [0, n) by mirroring about the first and last pixel
    (..., 2, 1, [0, 1, ..., n-1], n-2, ...; the edge pixel is not repeated)."""
    period = max(2 * (n - 1), 1)
    i = torch.remainder(i, period)
    return torch.where(i < n, i, period - i)


def _separable(x: torch.Tensor, h: torch.Tensor, dim: int, stride: int = 1) -> torch.Tensor:
    """Valid (unpadded) correlation of [N, C, H, W] with the 1-D filter h along dim 2 (y) or 3 (x), keeping every
    `stride`-th output along that dim."""
    c = x.shape[1]
    shape = [c, 1, h.numel(), 1] if dim == 2 else [c, 1, 1, h.numel()]
    strides = (stride, 1) if dim == 2 else (1, stride)
    return F.conv2d(x, h.to(x.dtype).reshape(1, 1, -1).expand(c, -1, -1).reshape(shape), stride=strides, groups=c)


def _upsample2x(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W]; output pixel 2i sits at input pixel i - 1/4, 2i + 1 at i + 1/4 (per axis).
    Zero insertion then the low-pass with gain 2 per axis; zero padding affects len(h) / 4 pixels at each border."""
    k = h.numel()
    for dim in (2, 3):
        x = torch.stack([x, torch.zeros_like(x)], dim=dim + 1).flatten(dim, dim + 1)
        pad = [k // 2, k // 2 - 1] if dim == 3 else [0, 0, k // 2, k // 2 - 1]
        x = _separable(F.pad(x, pad), h * 2, dim)
    return x


def _downsample2x(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Low-pass and keep every second pixel, without padding: [N, C, 2H + k - 2, 2W + k - 2] -> [N, C, H, W]
    (k = len(h)); output pixel i averages the input around pixels 2i + k/2 - 1 and 2i + k/2."""
    for dim in (2, 3):
        x = _separable(x, h, dim, stride=2)
    return x


def resample(x: torch.Tensor, matrix: torch.Tensor, lowpass: torch.Tensor | None = None) -> torch.Tensor:
    """Output pixel at centred position u takes the input at matrix @ u, with mirror padding.

    x: [N, C, H, W]; matrix: [N, 3, 3] (pixels, origin at the image centre); lowpass: [k] even-length symmetric
    filter with cutoff at a quarter of the sampling rate (default: the module's Kaiser sinc) -> [N, C, H, W].
    Differentiable w.r.t. x."""
    _, _, height, width = x.shape
    if lowpass is None:
        lowpass = _lowpass_taps().to(x.device)
    k = lowpass.numel()
    border = (k - 2) // 2  # extra output pixels (at 2x) on each side that the final valid low-pass consumes
    # Input margin: the farthest input position the extended output grid reaches, plus the bilinear footprint and
    # the upsampler's zero-padded border.
    hx, hy = width / 2 + border / 2, height / 2 + border / 2
    corners = x.new_tensor([[-hx, -hx, hx, hx], [-hy, hy, -hy, hy], [1, 1, 1, 1]], dtype=torch.float32)
    reach = (matrix.float() @ corners)[:, :2].abs().amax(dim=(0, 2))  # [2] = (x, y)
    slack = math.ceil(k / 4) + 1
    mx = max(math.ceil(reach[0].item() - width / 2), 0) + slack
    my = max(math.ceil(reach[1].item() - height / 2), 0) + slack
    rows = _mirror_index(torch.arange(-my, height + my, device=x.device), height)
    cols = _mirror_index(torch.arange(-mx, width + mx, device=x.device), width)
    x = _upsample2x(x.index_select(2, rows).index_select(3, cols), lowpass)
    # Extended output grid at 2x: pixel q in [-border, 2W + border) has centre (q + 1/2) / 2 - W / 2 (output pixels).
    gx = (torch.arange(-border, 2 * width + border, device=x.device, dtype=torch.float32) + 0.5) / 2 - width / 2
    gy = (torch.arange(-border, 2 * height + border, device=x.device, dtype=torch.float32) + 0.5) / 2 - height / 2
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    points = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1)  # [Hg, Wg, 3]
    src = torch.einsum("nij,hwj->nhwi", matrix.float(), points)[..., :2]
    # Centred input position -> grid_sample's normalised coordinates on the padded, upsampled image.
    size = torch.tensor([width + 2 * mx, height + 2 * my], device=x.device, dtype=torch.float32)
    offset = torch.tensor([width / 2 + mx, height / 2 + my], device=x.device, dtype=torch.float32)
    grid = 2 * (src + offset) / size - 1
    x = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return _downsample2x(x, lowpass)


def _blit(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Exact pixel copy through an integer matrix (flips, quarter turns, integer shifts), mirror padding.
    x: [N, C, H, W]; matrix: [N, 3, 3] mapping output to input centred pixel coordinates -> [N, C, H, W]."""
    n, c, height, width = x.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=x.device, dtype=torch.float32) + 0.5 - height / 2,
                            torch.arange(width, device=x.device, dtype=torch.float32) + 0.5 - width / 2, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)  # [H*W, 3]
    src = torch.einsum("nij,pj->npi", matrix, points)
    sx = _mirror_index(torch.round(src[..., 0] - 0.5 + width / 2).long(), width)
    sy = _mirror_index(torch.round(src[..., 1] - 0.5 + height / 2).long(), height)
    index = (sy * width + sx)[:, None, :].expand(n, c, -1)  # [N, C, H*W]
    return torch.gather(x.reshape(n, c, -1), 2, index).reshape(n, c, height, width)


# --- the pipeline ----------------------------------------------------------------------------------------------------

@records_init_kwargs
class AugmentPipe(nn.Module):
    """ADA augmentation: images [B, C, H, W] float (values nominally in [-1, 1]) -> [B, C, H, W].

    Each transform is applied to each sample independently with probability strength * p (the rotations with
    1 - sqrt(1 - strength * p) each, so that at least one happens with probability strength * p). All channels of a
    sample get the same geometric transform; colour transforms act on each consecutive RGB triple (C % 3 == 0) the
    same way. Constructor arguments are the official names; strengths are >= 0 (0 disables a transform).
    The only state is the buffer 'p' (scalar float32)."""

    def __init__(self, xflip: float = 0, rotate90: float = 0, xint: float = 0, xint_max: float = 0.125,
                 scale: float = 0, rotate: float = 0, aniso: float = 0, xfrac: float = 0, scale_std: float = 0.2,
                 rotate_max: float = 1, aniso_std: float = 0.2, xfrac_std: float = 0.125,
                 brightness: float = 0, contrast: float = 0, lumaflip: float = 0, hue: float = 0,
                 saturation: float = 0, brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1,
                 saturation_std: float = 1):
        super().__init__()
        strengths = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate, aniso=aniso,
                         xfrac=xfrac, brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue,
                         saturation=saturation)
        negative = {k: v for k, v in strengths.items() if v < 0}
        if negative:
            raise ValueError(f"AugmentPipe strengths must be >= 0, got {negative}")
        self.strengths = {k: float(v) for k, v in strengths.items()}
        self.xint_max = float(xint_max)
        self.scale_std = float(scale_std)
        self.rotate_max = float(rotate_max)
        self.aniso_std = float(aniso_std)
        self.xfrac_std = float(xfrac_std)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.hue_max = float(hue_max)
        self.saturation_std = float(saturation_std)
        self.register_buffer("p", torch.zeros([]))
        self.register_buffer("lowpass", _lowpass_taps(), persistent=False)

    def _uses(self, group: dict) -> bool:
        return any(self.strengths[name] > 0 for name in group)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"AugmentPipe: expected float images [B, C, H, W], got {images.dtype} "
                             f"{list(images.shape)}")
        p = float(self.p)
        if p == 0 or not any(s > 0 for s in self.strengths.values()):
            return images
        x = images
        if self._uses(_BLIT):
            x = self._pixel_blitting(x, p)
        if self._uses(_GEOM):
            x = self._general_geometric(x, p)
        if self._uses(_COLOR):
            x = self._colour(x, p)
        return x

    def _draw(self, name: str, p: float, values: torch.Tensor, identity: float, prob: float | None = None):
        """values where a per-sample coin with probability strength * p (or `prob`) comes up, else `identity`.
        values: [B] or [B, 2]. Returns (gated values, applied mask [B] bool)."""
        prob = self.strengths[name] * p if prob is None else prob
        applied = torch.rand(values.shape[0], device=values.device) < prob
        mask = applied.reshape([-1] + [1] * (values.ndim - 1))
        return torch.where(mask, values, torch.full_like(values, identity)), applied

    def _pixel_blitting(self, x: torch.Tensor, p: float) -> torch.Tensor:
        b, _, height, width = x.shape
        dev = x.device
        g = torch.eye(3, device=dev).repeat(b, 1, 1)
        if self.strengths["xflip"] > 0:
            flip, _ = self._draw("xflip", p, torch.randint(2, [b], device=dev).float(), 0)
            g = g @ scale2d(1 - 2 * flip, torch.ones_like(flip))
        if self.strengths["rotate90"] > 0:
            if height != width:
                raise ValueError(f"AugmentPipe rotate90 needs square images, got {height} x {width}")
            quarter, _ = self._draw("rotate90", p, torch.randint(4, [b], device=dev).float(), 0)
            g = g @ rotate2d(quarter * (math.pi / 2))
        if self.strengths["xint"] > 0:
            shift = (torch.rand([b, 2], device=dev) * 2 - 1) * self.xint_max
            shift, _ = self._draw("xint", p, shift, 0)
            g = g @ translate2d(torch.round(shift[:, 0] * width), torch.round(shift[:, 1] * height))
        return _blit(x, g)

    def _general_geometric(self, x: torch.Tensor, p: float) -> torch.Tensor:
        b, _, height, width = x.shape
        dev = x.device
        p_rot = 1 - math.sqrt(max(1 - self.strengths["rotate"] * p, 0))

        def angle() -> torch.Tensor:
            return (torch.rand(b, device=dev) * 2 - 1) * (math.pi * self.rotate_max)

        # (name, draw values, identity value, probability override, values -> [B, 3, 3]) in the paper's order.
        steps = [
            ("scale", lambda: torch.exp2(torch.randn(b, device=dev) * self.scale_std), 1, None,
             lambda s: scale2d(s, s)),
            ("rotate", angle, 0, p_rot, rotate2d),
            ("aniso", lambda: torch.exp2(torch.randn(b, device=dev) * self.aniso_std), 1, None,
             lambda s: scale2d(s, 1 / s)),
            ("rotate", angle, 0, p_rot, rotate2d),
            ("xfrac", lambda: torch.randn([b, 2], device=dev) * self.xfrac_std, 0, None,
             lambda t: translate2d(t[:, 0] * width, t[:, 1] * height)),
        ]
        g = torch.eye(3, device=dev).repeat(b, 1, 1)
        any_applied = torch.zeros(b, dtype=torch.bool, device=dev)
        for name, draw, identity, prob, to_matrix in steps:
            if self.strengths[name] > 0:
                value, applied = self._draw(name, p, draw(), identity, prob)
                g = g @ to_matrix(value)
                any_applied |= applied
        index = any_applied.nonzero()[:, 0]
        if index.numel() == 0:
            return x
        return x.index_copy(0, index, resample(x[index], g[index], self.lowpass))

    def _colour(self, x: torch.Tensor, p: float) -> torch.Tensor:
        b, c, height, width = x.shape
        if c % 3 != 0:
            raise ValueError(f"AugmentPipe colour transforms need RGB triples (C % 3 == 0), got C = {c}")
        dev = x.device
        # (name, draw values, identity value, values -> [B, 4, 4]) in the paper's order.
        steps = [
            ("brightness", lambda: torch.randn(b, device=dev) * self.brightness_std, 0, brightness_shift),
            ("contrast", lambda: torch.exp2(torch.randn(b, device=dev) * self.contrast_std), 1, contrast_scale),
            ("lumaflip", lambda: torch.randint(2, [b], device=dev).float(), 0, luma_flip),
            ("hue", lambda: (torch.rand(b, device=dev) * 2 - 1) * (math.pi * self.hue_max), 0, hue_rotation),
            ("saturation", lambda: torch.exp2(torch.randn(b, device=dev) * self.saturation_std), 1,
             saturation_scale),
        ]
        m = torch.eye(4, device=dev).repeat(b, 1, 1)
        for name, draw, identity, to_matrix in steps:
            if self.strengths[name] > 0:
                value, _ = self._draw(name, p, draw(), identity)
                m = to_matrix(value) @ m
        m = m.to(x.dtype)
        triples = x.reshape(b, c // 3, 3, height * width)
        out = torch.einsum("bij,bgjn->bgin", m[:, :3, :3], triples) + m[:, None, :3, 3:]
        return out.reshape(b, c, height, width)

    def extra_repr(self) -> str:
        enabled = ", ".join(f"{k}={v:g}" for k, v in self.strengths.items() if v > 0) or "none"
        return f"p={float(self.p):.4f}, transforms: {enabled}"


# --- adaptive p ------------------------------------------------------------------------------------------------------

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
