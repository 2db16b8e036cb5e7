"""Image distances of the inversion: LPIPS with the official VGG16 detector file, MSE, PSNR, and the noise-map
regulariser of the StyleGAN2 projector.

Images are [B, 3, H, W] in [-1, 1] (the generator's range). LPIPS follows the StyleGAN2 projector: both images go to
[0, 255], are resized to 256 x 256 (area averaging when larger, bilinear when smaller), and the distance is the sum
of squared differences of the features that `vgg16.pkl` returns when called with resize_images=False,
return_lpips=True (unit-normalised, channel-weighted VGG16 activations: the LPIPS distance). The file is looked up
like the metrics' detectors (op3d.metrics.detectors) and never downloaded."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from op3d.metrics import detectors

LPIPS_RESOLUTION = 256
LOSS_KINDS = ("lpips", "mse", "lpips+mse")


def mse(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error on the [-1, 1] scale: [B, C, H, W] x2 -> [B]."""
    return (images - target).square().flatten(1).mean(dim=1)


def psnr(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB with the images mapped to [0, 1] (clamped): 10 log10(1 / MSE) -> [B]."""
    a, b = (images.clamp(-1, 1) + 1) / 2, (target.clamp(-1, 1) + 1) / 2
    return 10 * torch.log10(1 / (a - b).square().flatten(1).mean(dim=1).clamp_min(1e-12))


def to_lpips_input(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> [0, 255] float at 256 x 256, the detector's LPIPS input."""
    x = (images + 1) * 127.5
    if x.shape[-1] == LPIPS_RESOLUTION and x.shape[-2] == LPIPS_RESOLUTION:
        return x
    mode = "area" if x.shape[-1] > LPIPS_RESOLUTION else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=(LPIPS_RESOLUTION, LPIPS_RESOLUTION), mode=mode, **kwargs)


class Lpips:
    """LPIPS distance with a loaded VGG16 detector module (see the module docstring)."""

    def __init__(self, detector: torch.nn.Module, source: str = "vgg16.pkl"):
        self.detector = detector
        self.source = source

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, D] LPIPS features (differentiable)."""
        out = self.detector(to_lpips_input(images), resize_images=False, return_lpips=True)
        if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != images.shape[0]:
            shape = list(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise detectors.DetectorError(f"{self.source}: expected [N, D] LPIPS features for {images.shape[0]} "
                                          f"images, got {shape}")
        return out.float()

    @staticmethod
    def distance(features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        """Sum of squared feature differences per image -> [B]."""
        return (features - target_features).square().sum(dim=1)


def load_lpips(detector_dir=None, device="cpu") -> Lpips:
    """Find and load vgg16.pkl (detector_dir, $OP3D_DETECTOR_DIR, the dnnlib cache) and check that it returns LPIPS
    features. Raises DetectorError (one line: which file, where it was looked for, what is wrong)."""
    path = detectors.find_detector(detectors.VGG16, detector_dir)
    module = detectors.load_detector(path, device)
    lpips = Lpips(module, str(path))
    try:
        with torch.no_grad():
            lpips.features(torch.zeros(1, 3, 8, 8, device=device))
    except detectors.DetectorError:
        raise
    except Exception as error:  # not the StyleGAN VGG16 program: say so in one line
        raise detectors.DetectorError(f"{path}: does not compute LPIPS features (called with resize_images=False, "
                                      f"return_lpips=True: {type(error).__name__}: {str(error).splitlines()[0]}); "
                                      "expected the official StyleGAN vgg16.pkl") from None
    return lpips


@dataclasses.dataclass
class ImageLoss:
    """loss = LPIPS (kind 'lpips'), MSE (kind 'mse') or LPIPS + mse_weight * MSE ('lpips+mse'), per image.

    `lpips` is required for the kinds with LPIPS. Call `set_target(target)` once, then `loss(images)`."""
    kind: str
    lpips: Lpips | None = None
    mse_weight: float = 1.0

    def __post_init__(self):
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"--loss: expected one of {', '.join(LOSS_KINDS)}, got {self.kind!r}")
        if self.uses_lpips and self.lpips is None:
            raise ValueError(f"--loss={self.kind} needs the VGG16 detector (vgg16.pkl)")
        self._target = self._target_features = None

    @property
    def uses_lpips(self) -> bool:
        return self.kind != "mse"

    def set_target(self, target: torch.Tensor) -> None:
        """target [B, 3, H, W] in [-1, 1] (its LPIPS features are computed once)."""
        self._target = target
        if self.uses_lpips:
            with torch.no_grad():
                self._target_features = self.lpips.features(target)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """images [B, 3, H, W] -> (loss [B], {'lpips': [B], 'mse': [B]} of the parts computed)."""
        parts = {"mse": mse(images, self._target)}
        total = parts["mse"] * (self.mse_weight if self.kind == "lpips+mse" else 1.0)
        if self.uses_lpips:
            parts["lpips"] = Lpips.distance(self.lpips.features(images), self._target_features)
            total = parts["lpips"] + (total if self.kind == "lpips+mse" else 0)
        return total, parts


def noise_regularization(noise_maps) -> torch.Tensor:
    """The StyleGAN2 projector's noise regulariser: for each noise map n ([H, W], or [1, 1, H, W]) and each of its
    2x2-average-pooled versions down to 8 x 8, the squared mean of n times n shifted by one pixel (cyclically)
    along x plus the same along y. Small when the maps carry no spatial correlation, so they cannot smuggle image
    content. Returns a scalar."""
    total = None
    for noise in noise_maps:
        n = noise.reshape(1, 1, *noise.shape[-2:])
        while True:
            term = (n * torch.roll(n, shifts=1, dims=3)).mean().square() + \
                   (n * torch.roll(n, shifts=1, dims=2)).mean().square()
            total = term if total is None else total + term
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, kernel_size=2)
    return total if total is not None else torch.zeros(())


def normalize_noise_(noise_maps) -> None:
    """Set each noise map to zero mean and unit variance in place (after every projector step)."""
    with torch.no_grad():
        for noise in noise_maps:
            noise.sub_(noise.mean())
            noise.div_(noise.square().mean().sqrt().clamp_min(1e-8))


__all__ = ["LOSS_KINDS", "ImageLoss", "Lpips", "load_lpips", "mse", "psnr", "noise_regularization",
           "normalize_noise_", "to_lpips_input"]
