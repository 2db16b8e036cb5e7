"""Feature detectors for the image metrics: find the local file, load it, call it.

op3d never downloads. The detectors are the files the official tools download (StyleGAN3/EG3D metrics):

    inception-2015-12-05.pkl   Inception-v3 (2048-d pool features for FID/KID, class probabilities for IS)
    vgg16.pkl                  VGG16 features for precision/recall

They are looked up, in order, in `--detector-dir`, in `$OP3D_DETECTOR_DIR`, and in the dnnlib download cache the
official tools fill (`$DNNLIB_CACHE_DIR/downloads` or `~/.cache/dnnlib/downloads`, where a file is stored as
`<md5 of its URL>_<name>`), so users can reuse the files they already have.

Detector pickles are read with a restricted unpickler (`load_detector`): it rebuilds torch modules and tensors and
calls no function the file names beyond the tensor, storage and container rebuilders of op3d.safe_pickle's
allow-list. A module class is looked up by name (which imports its defining module, never a standard-library one)
and is created without running its constructor; everything else (os.system, eval, a constructor call, ...) is
refused with an error naming the global and the file."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib
import importlib.util
import os
import pathlib
import pickle
import sys

import torch

from op3d.safe_pickle import ALLOWED_GLOBALS, AllowListMixin, UnsafePickleError

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


# What a pickled torch module calls while it is rebuilt: tensor, parameter and storage rebuilders and containers.
_REBUILDERS = ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor", "torch._utils._rebuild_parameter",
               "torch._utils._rebuild_parameter_with_state", "torch.storage._load_from_bytes", "torch.Size",
               "collections.OrderedDict", "builtins.set", "builtins.frozenset", "numpy.dtype",
               "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.core.multiarray._reconstruct",
               "numpy._core.multiarray._reconstruct")
DETECTOR_CALLABLES = {name: ALLOWED_GLOBALS[name] for name in _REBUILDERS}


def _module_class(module: str, name: str):
    """The torch.nn.Module subclass `module.name`, or None. A module not imported yet is imported, unless it is part
    of the standard library (some have import side effects) or not installed."""
    if module not in sys.modules:
        if module.partition(".")[0] in sys.stdlib_module_names or importlib.util.find_spec(module) is None:
            return None
        importlib.import_module(module)
    obj = sys.modules[module]
    for part in name.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and issubclass(obj, torch.nn.Module) else None


class _DetectorUnpickler(AllowListMixin, pickle._Unpickler):
    """Resolves the rebuilders above and torch module classes; REDUCE may only call a rebuilder, so a module class
    is only ever created by NEWOBJ (cls.__new__, no constructor) and filled by BUILD (its __setstate__)."""

    allowed = DETECTOR_CALLABLES
    refusal = "is not allowed in a detector pickle"

    def find_class(self, module, name):
        found = self.allowed.get(f"{module}.{name}") or _module_class(module, name)
        if found is None:
            return super().find_class(module, name)  # raises, naming the global
        return found

    def load_reduce(self):
        func = self.stack[-2]
        if not any(func is allowed for allowed in self.allowed.values()):
            raise UnsafePickleError(f"calling {getattr(func, '__qualname__', func)!r} {self.refusal} and was not "
                                    "executed (only tensor and container rebuilders are called)")
        super().load_reduce()

    def _instantiate(self, klass, args):  # the protocol-0/1 INST and OBJ opcodes: no constructor calls either
        if args or not (isinstance(klass, type) and issubclass(klass, torch.nn.Module)):
            raise UnsafePickleError(f"calling {getattr(klass, '__qualname__', klass)!r} {self.refusal} and was not "
                                    "executed")
        self.append(klass.__new__(klass))

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = load_reduce


def load_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Read a detector pickle with the restricted unpickler and move the module to device, in eval mode."""
    try:
        with open(path, "rb") as f:
            module = _DetectorUnpickler(f).load()
    except UnsafePickleError as error:
        raise DetectorError(f"{path}: refused: {error}") from None
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
