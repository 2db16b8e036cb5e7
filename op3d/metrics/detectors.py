"""Feature detectors for the image metrics: find the local file, load it, call it.

op3d never downloads. The detectors are the files the official tools download (StyleGAN3/EG3D metrics):

    inception-2015-12-05.pkl   Inception-v3 (2048-d pool features for FID/KID, class probabilities for IS)
    vgg16.pkl                  VGG16 features for precision/recall

They are looked up, in order, in `--detector-dir`, in `$OP3D_DETECTOR_DIR`, and in the dnnlib download cache the
official tools fill (`$DNNLIB_CACHE_DIR/downloads` or `~/.cache/dnnlib/downloads`, where a file is stored as
`<md5 of its URL>_<name>`), so users can reuse the files they already have.

A detector pickle holds a TorchScript program: loading it means trusting that file (it is read with the standard
pickle module, unlike network snapshots, which op3d reads without executing anything)."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import pathlib
import pickle

import torch

_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics"


@dataclasses.dataclass(frozen=True)
class Detector:
    """A detector file: its official file name, official download URL, and how the metrics call it."""
    file_name: str
    url: str


INCEPTION = Detector("inception-2015-12-05.pkl", f"{_NGC}/inception-2015-12-05.pkl")
VGG16 = Detector("vgg16.pkl", f"{_NGC}/vgg16.pkl")


class DetectorError(FileNotFoundError):
    """A detector file is missing or is not a usable detector (message: which file, where, what to do)."""


def dnnlib_cache_dir() -> pathlib.Path:
    """Where dnnlib.util.open_url caches downloads."""
    if os.environ.get("DNNLIB_CACHE_DIR"):
        return pathlib.Path(os.environ["DNNLIB_CACHE_DIR"]) / "downloads"
    return pathlib.Path.home() / ".cache" / "dnnlib" / "downloads"


def candidate_paths(detector: Detector, detector_dir: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """The places searched for a detector, in order (patterns for the dnnlib cache)."""
    places = []
    if detector_dir:
        places.append(pathlib.Path(detector_dir) / detector.file_name)
    if os.environ.get("OP3D_DETECTOR_DIR"):
        places.append(pathlib.Path(os.environ["OP3D_DETECTOR_DIR"]) / detector.file_name)
    url_md5 = hashlib.md5(detector.url.encode("utf-8")).hexdigest()
    places.append(dnnlib_cache_dir() / f"{url_md5}_{detector.file_name}")
    places.append(dnnlib_cache_dir() / detector.file_name)
    return places


def find_detector(detector: Detector, detector_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The first existing candidate path; DetectorError listing every place searched otherwise."""
    places = candidate_paths(detector, detector_dir)
    for place in places:
        matches = sorted(glob.glob(str(place)))
        if matches:
            return pathlib.Path(matches[0])
    searched = ", ".join(str(p) for p in places)
    raise DetectorError(f"detector {detector.file_name} not found (looked in: {searched}); download it from "
                        f"{detector.url} on a machine with network access and pass its folder with --detector-dir "
                        "or $OP3D_DETECTOR_DIR")


def load_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Unpickle a detector file (trusted) and move it to device, in eval mode."""
    try:
        with open(path, "rb") as f:
            module = pickle.load(f)
    except Exception as error:  # a corrupt or foreign file: say which and why, in one line
        raise DetectorError(f"{path}: could not be loaded as a detector pickle ({type(error).__name__}: {error})")
    if not isinstance(module, torch.nn.Module):
        raise DetectorError(f"{path}: expected a pickled torch module, found {type(module).__name__}")
    return module.to(device).eval()


def detect(detector: torch.nn.Module, images: torch.Tensor, source: str = "detector", **kwargs) -> torch.Tensor:
    """images [N, C, H, W] uint8 (C = 1 is repeated to 3) -> detector output [N, D] float32 (features or class
    probabilities depending on kwargs, e.g. return_features=True or no_output_bias=True)."""
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    with torch.no_grad():
        out = detector(images, **kwargs)
    if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != images.shape[0]:
        shape = list(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise DetectorError(f"{source}: expected [N, D] outputs for {images.shape[0]} images, got {shape}")
    return out.float()
