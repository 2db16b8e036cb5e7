"""The transforms of op3d's ADA augmentation (see op3d.augmentation.pipe): 2D pixel-coordinate matrices, 4x4
colour matrices, the low-pass resampler of the general geometric group and the exact integer pixel blitting.

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

# The luma axis of the colour transforms: v = [1, 1, 1] / sqrt(3) in RGB (mid-grey is 0 for images in [-1, 1]).
_LUMA_AXIS = (1 / math.sqrt(3),) * 3

# Low-pass used by the resampler: taps, Kaiser beta.
_LOWPASS_TAPS = 32
_LOWPASS_BETA = 8.0



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

def lowpass_taps() -> torch.Tensor:
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
        lowpass = lowpass_taps().to(x.device)
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


def blit(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
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

