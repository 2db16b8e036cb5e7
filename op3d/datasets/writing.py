"""Writing image datasets: a new .zip or folder of PNGs plus dataset.json, written atomically, and the conversion of a
folder of photos with camera labels into one (center-crop with adjusted intrinsics, resizing)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass

import numpy as np
import PIL.Image
from tqdm import tqdm

from op3d.atomic import atomic_output
from op3d.datasets.files import LABELS_FILE, DatasetError, ImageFiles, parse_json, short_repr
from op3d.datasets.labels import CAMERA_LABEL_DIM, crop_camera_intrinsics, label_array, label_table

TRANSFORMS = ("none", "center-crop")


def refuse_existing(path: str):
    """DatasetError unless `path` is new, or an empty folder that a folder dataset may replace."""
    if os.path.isdir(path) and not path.lower().endswith(".zip") and not os.listdir(path):
        return
    if os.path.lexists(path):
        raise DatasetError(f"{path}: expected a new destination (or an empty folder for a folder dataset), found an "
                           f"existing {'folder' if os.path.isdir(path) else 'file'}; refusing to overwrite")


@contextlib.contextmanager
def dataset_writer(path: str):
    """Yield put(relative_name, data: bytes) writing into a new .zip or folder that appears at `path` only if the
    block succeeds."""
    if path.lower().endswith(".zip"):
        with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
            yield archive.writestr
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    os.makedirs(tmp)

    def put(name, data):
        file = os.path.join(tmp, name)
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with open(file, "wb") as out:
            out.write(data)

    try:
        yield put
        if os.path.isdir(path):
            os.rmdir(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def png_bytes(image, name: str) -> bytes:
    """PNG file content of a uint8 [H, W], [H, W, 1] or [H, W, 3] array."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"{name}: expected a uint8 [H, W], [H, W, 1] or [H, W, 3] array, "
                         f"found {image.dtype} {list(image.shape)}")
    buffer = io.BytesIO()
    PIL.Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image).save(buffer, "PNG")
    return buffer.getvalue()


def write_image_dataset(path: str | os.PathLike, images, labels=None, names: list[str] | None = None) -> int:
    """Write a dataset that ImageFolderDataset reads: PNGs plus dataset.json, in a .zip if `path` ends with .zip, else
    in a folder. Atomic: nothing appears at `path` unless everything was written. Returns the number of images N.

    images: N uint8 arrays [H, W, C] (C = 1 or 3) or [H, W] (a list, an array or any iterable, e.g. a generator);
    labels: [N, D] numbers, [N] integer class indices, or None ({"labels": null});
    names: N unique relative names ending in .png (default img00000000.png, img00000001.png, ...).
    `path` must be new or an empty folder.
    """
    path = os.fspath(path)
    refuse_existing(path)
    if names is not None:
        names = list(names)
        bad = [n for n in names if not n.lower().endswith(".png") or n == LABELS_FILE]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"names: expected unique relative names ending in .png, found {short_repr(bad or names)}")
    if labels is not None:
        labels = np.asarray(labels)
        if not (labels.ndim == 2 or (labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer))):
            raise ValueError(f"labels: expected [N, D] numbers or [N] class indices, found {labels.dtype} "
                             f"{list(labels.shape)}")
    written = []
    with dataset_writer(path) as put:
        for i, image in enumerate(images):
            if names is not None and i >= len(names):
                raise ValueError(f"names: expected one per image, found {len(names)} for more images")
            name = f"img{i:08d}.png" if names is None else names[i]
            put(name, png_bytes(image, name))
            written.append(name)
        for what, values in (("names", names), ("labels", labels)):
            if values is not None and len(values) != len(written):
                raise ValueError(f"{what}: expected one per image ({len(written)}), found {len(values)}")
        entries = None if labels is None else [[name, label] for name, label in zip(written, labels.tolist())]
        put(LABELS_FILE, json.dumps({"labels": entries}).encode())
    return len(written)


@dataclass(frozen=True)
class ConversionSummary:
    """What convert_dataset wrote."""

    dest: str
    num_images: int
    resolution: int
    channels: int
    has_labels: bool

    def __str__(self):
        return (f"{self.dest}: {self.num_images} images, {self.resolution}x{self.resolution}, {self.channels} "
                f"channel(s), camera labels: {'yes' if self.has_labels else 'no'}")


def convert_dataset(source: str | os.PathLike, dest: str | os.PathLike, labels: str | os.PathLike | None = None,
                    use_labels: bool = True, transform: str = "none", resolution: int | None = None,
                    max_images: int | None = None, progress: bool = False) -> ConversionSummary:
    """Write the images of `source` (folder or .zip) as a training dataset at `dest` (.zip or new folder) with
    `write_image_dataset`: names img%08d.png in source order, all images of one square size.

    labels: a JSON file of 25-float camera labels, in the dataset.json format or {relative_name: label}; default: the
    source's dataset.json. use_labels=False writes {"labels": null} instead.
    transform: 'none' (images must be square) or 'center-crop' (crop to the largest centred square). The crop changes
    the normalized intrinsics (see `crop_camera_intrinsics`: fx, fy scale by original size / crop size along each
    axis, cx, cy shift by the crop offset); the labels are adjusted so that 3D points keep projecting onto the same
    content. resolution: then resize to resolution x resolution with PIL LANCZOS, which leaves normalized intrinsics
    of a square image unchanged. max_images: keep the first images (sorted by name).
    Every check (sizes, labels) runs before writing; an image that fails to decode while writing leaves no output.
    """
    source, dest = os.fspath(source), os.fspath(dest)
    if transform not in TRANSFORMS:
        raise ValueError(f"transform: expected one of {', '.join(TRANSFORMS)}, found {transform!r}")
    for what, value in (("resolution", resolution), ("max_images", max_images)):
        if value is not None and value < 1:
            raise ValueError(f"{what}: expected None or an int >= 1, found {value}")
    refuse_existing(dest)
    files = ImageFiles(source)
    names = files.names[:max_images]
    camera = None
    if use_labels:
        if labels is not None:
            labels = os.fspath(labels)
            if not os.path.isfile(labels):
                raise DatasetError(f"{labels}: labels file not found (expected a JSON file of camera labels)")
            with open(labels, "rb") as file:
                table = label_table(parse_json(file.read(), labels), labels, allow_mapping=True)
            where = labels
        else:
            obj = files.read_json()
            if obj is None:
                raise DatasetError(f"{source}: camera labels are required but there is no {LABELS_FILE} at its root "
                                   f"and no labels file was given; pass one (--labels), or use_labels=False "
                                   f"(--no-labels)")
            where = f"{source}: {LABELS_FILE}"
            table = label_table(obj, where)
        camera, _ = label_array(table, names, where, CAMERA_LABEL_DIM)

    boxes, size = [], None
    for i, name in enumerate(names):
        width, height = files.image_size(name)
        if transform == "none" and width != height:
            raise DatasetError(f"{source}: {name}: expected a square image, found {width}x{height}; "
                               f"crop it with transform 'center-crop' (--transform=center-crop)")
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        if camera is not None:
            camera[i] = crop_camera_intrinsics(camera[i], width, height, left, top, side)
        boxes.append((left, top, left + side, top + side))
        if size is None:
            size = resolution or side
        elif (resolution or side) != size:
            raise DatasetError(f"{source}: {name}: expected {size}x{size} like {names[0]!r}, found {side}x{side}; "
                               f"pass a resolution (--resolution) to resize all images to one size")

    channels = []

    def images():
        for name, box in zip(names, boxes):
            image = files.read_image(name)
            if image.size != (box[2] - box[0], box[3] - box[1]):
                image = image.crop(box)
            if image.size != (size, size):
                image = image.resize((size, size), PIL.Image.LANCZOS)
            channels.append(len(image.getbands()))
            if channels[-1] != channels[0]:
                raise DatasetError(f"{source}: {name}: expected {channels[0]} channel(s) like {names[0]!r}, "
                                   f"found {channels[-1]}")
            yield np.asarray(image)

    write_image_dataset(dest, tqdm(images(), total=len(names), desc=f"writing {dest}", disable=not progress),
                        labels=camera)
    files.close()
    return ConversionSummary(dest, len(names), size, channels[0], camera is not None)
