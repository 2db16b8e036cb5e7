"""Tiny stand-in feature detectors with the official detectors' call conventions, for metric tests on CPU.

They are importable by module name (this folder is on sys.path under pytest), so pickles of them load in the test
process and in processes it spawns. Features are a fixed random projection of a 4x4 colour thumbnail: cheap, and
sensitive to image content, which is all the tests need. Called like the VGG16 file for LPIPS (float [0, 255]
images, resize_images=False, return_lpips=True), they return unit-normalised features of a fixed random 3x3
convolution of an 8x-pooled image, differentiable, so that the inversion's LPIPS path runs on CPU."""

from __future__ import annotations

import pickle

import torch
import torch.nn.functional as F


class TinyDetector(torch.nn.Module):
    """images [N, 3, H, W] uint8 -> features [N, dim] (return_features=True) or class probabilities [N, classes]
    (otherwise; no_output_bias drops the classifier bias, as the official Inception call for IS)."""

    def __init__(self, dim: int = 16, classes: int = 10, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(48, dim, generator=gen) / 48 ** 0.5)
        self.register_buffer("classifier", torch.randn(dim, classes, generator=gen))
        self.register_buffer("bias", torch.randn(classes, generator=gen))
        self.register_buffer("lpips_kernel", torch.randn(8, 3, 3, 3, generator=gen))

    def forward(self, images, return_features: bool = False, no_output_bias: bool = False,
                resize_images: bool = True, return_lpips: bool = False):
        if return_lpips:
            assert images.dtype == torch.float32 and images.shape[1] == 3 and not resize_images
            features = F.conv2d(F.avg_pool2d(images / 127.5 - 1, 8), self.lpips_kernel, padding=1)
            features = features / features.norm(dim=1, keepdim=True).clamp_min(1e-8)
            return features.flatten(1) / (features.shape[2] * features.shape[3]) ** 0.5
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        thumb = F.adaptive_avg_pool2d(images.float() / 127.5 - 1, 4).flatten(1)
        features = thumb @ self.projection
        if return_features:
            return features
        logits = features @ self.classifier * 4
        if not no_output_bias:
            logits = logits + self.bias
        return torch.softmax(logits, dim=1)


def write_detectors(folder) -> None:
    """Pickle stand-ins under the official file names (inception-2015-12-05.pkl, vgg16.pkl) into folder."""
    for name, seed in (("inception-2015-12-05.pkl", 0), ("vgg16.pkl", 1)):
        with open(f"{folder}/{name}", "wb") as f:
            pickle.dump(TinyDetector(seed=seed), f)
