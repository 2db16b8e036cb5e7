"""Reading the inversion's inputs, with one-line errors before any work: target images and camera labels.

A camera label is the 25 floats EG3D-family models take: the 4x4 cam2world matrix (row-major; OpenCV axes: x
right, y down, z forward; world units) followed by the 3x3 intrinsics normalised by the image size (row-major).
Accepted files:
* `.npy`: an array of 25 floats ([25] or [1, 25]);
* `.json`: a list of 25 numbers, {"label": [...]} (op3d's camera.json), or a dataset.json
  ({"labels": [[file name, [25 floats]], ...]}), whose entry is picked by the target image's file name.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import torch


class InputError(ValueError):
    """A target image or camera file that cannot be used (the message names the file and what was expected)."""


def read_target(path: str | os.PathLike):
    """Open and check a target image file -> PIL image (RGB, square, any size). InputError naming the file for an
    unreadable, non-RGB or non-square image. Needs no model, so the pipeline checks every target before loading one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            pixels = image.copy()
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(f"--target: cannot read {path} as an image ({type(error).__name__}: {error})") from None
    if pixels.mode != "RGB":
        raise InputError(f"--target: {path} is a {pixels.mode} image; expected an RGB image (convert it to RGB first)")
    width, height = pixels.size
    if width != height:
        raise InputError(f"--target: {path} is {width}x{height}; expected a square image at the model's resolution "
                         "(e.g. 512x512), cropped like its training data")
    return pixels


def target_tensor(pixels, path: str | os.PathLike, resolution: int) -> tuple[torch.Tensor, str | None]:
    """A checked image (read_target) -> ([1, 3, R, R] float32 in [-1, 1], note). An image of another size is resized
    (Lanczos) to R x R and the note says so."""
    from PIL import Image

    note = None
    if pixels.size[0] != resolution:
        note = f"{path}: resized from {pixels.size[0]}x{pixels.size[1]} to the model's {resolution}x{resolution}"
        pixels = pixels.resize((resolution, resolution), Image.LANCZOS)
    array = np.asarray(pixels, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1, note


def _label_from_json(data, path, target) -> object:
    if isinstance(data, dict) and "labels" in data:
        labels = data["labels"]
        entries = dict(labels) if isinstance(labels, list) and all(
            isinstance(e, (list, tuple)) and len(e) == 2 for e in labels) else labels
        if not isinstance(entries, dict):
            raise InputError(f"--camera: {path}: 'labels' must be a list of [file name, label] pairs")
        name = pathlib.Path(target).name
        matches = [v for k, v in entries.items() if k == name or pathlib.PurePosixPath(k).name == name]
        if len(matches) != 1:
            found = "no entry" if not matches else f"{len(matches)} entries"
            raise InputError(f"--camera: {path} has {found} for the target {name} (dataset.json entries are "
                             "matched by the image's file name)")
        return matches[0]
    if isinstance(data, dict) and "label" in data:
        return data["label"]
    return data


def load_camera(path: str | os.PathLike, target: str | os.PathLike = "") -> np.ndarray:
    """A camera file (see the module docstring) -> float32 [25]. Checks: 25 values, all finite, the cam2world
    bottom row (0, 0, 0, 1), positive focal lengths. Raises InputError naming the file."""
    path = os.fspath(path)
    suffix = pathlib.Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix == ".json":
            with open(path, encoding="utf-8") as f:
                data = _label_from_json(json.load(f), path, target)
        else:
            raise InputError(f"--camera: {path}: expected a .npy or .json file with a 25-float camera label")
        label = np.asarray(data, dtype=np.float64)
    except InputError:
        raise
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"--camera: cannot read {path} ({type(error).__name__}: {str(error).splitlines()[0]})") \
            from None
    return check_label(label, path)


def check_label(label: np.ndarray, source: str) -> np.ndarray:
    """Validate one label (any shape holding exactly 25 numbers) -> float32 [25]; InputError naming source."""
    if label.size != 25 or label.ndim > 2 or (label.ndim == 2 and label.shape[0] != 1):
        raise InputError(f"--camera: {source}: expected 25 numbers (16 cam2world + 9 intrinsics), found shape "
                         f"{list(label.shape)}")
    label = label.reshape(25)
    if not np.isfinite(label).all():
        raise InputError(f"--camera: {source}: the label has non-finite values (NaN or inf)")
    if not np.allclose(label[12:16], (0, 0, 0, 1), atol=1e-4):
        raise InputError(f"--camera: {source}: the cam2world bottom row is {label[12:16].tolist()}; expected "
                         "[0, 0, 0, 1] (is the label 16 cam2world values, row-major, then 9 intrinsics?)")
    if not (label[16] > 0 and label[20] > 0):
        raise InputError(f"--camera: {source}: the focal lengths (label[16], label[20]) must be positive, found "
                         f"{label[16]:g}, {label[20]:g}")
    return label.astype(np.float32)
