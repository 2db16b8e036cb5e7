"""Image datasets with camera labels: read a folder or .zip of images and its dataset.json, validated with errors that
name the file; write and convert such datasets.

Layout (EG3D's): images anywhere under the root, any extension PIL knows, ordered by relative path (forward slashes);
labels in ``dataset.json`` at the root, ``{"labels": [[relative_name, label], ...]}`` or ``{"labels": null}``. A camera
label is 25 floats: the row-major 4x4 cam2world (OpenCV axes, world units) then the row-major 3x3 intrinsics normalized
by the image size (fx, skew, cx in image widths, fy, cy in image heights; fx = fy = 4.2647, cx = cy = 0.5 for FFHQ).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from tqdm import tqdm

from op3d.atomic import atomic_output

CAMERA_LABEL_DIM = 25
LABELS_FILE = "dataset.json"
TRANSFORMS = ("none", "center-crop")

# PIL modes decoded into 'L' or 'RGB' (a palette with transparency becomes 'RGBA' and is rejected as 4 channels).
_MODE_CONVERSIONS = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError)

# Mirroring a camera label flips these signs: cam2world R[0,1], R[0,2], t_x, R[1,0], R[2,0]; intrinsics skew.
_MIRROR_SIGNS = np.ones(CAMERA_LABEL_DIM)
_MIRROR_SIGNS[[1, 2, 3, 4, 8, 17]] = -1
_CX = 18  # index of the normalized principal point x in a camera label


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; the message names the dataset path (and the file inside it), what was
    expected and what was found."""


def mirror_camera_label(c):
    """Camera labels of the mirrored image: c [..., 25] (numpy array or torch tensor) -> same type, shape and dtype.

    Reflects the world through the plane x = 0 and flips the camera's x axis: with S = diag(-1, 1, 1), the cam2world
    rotation R becomes S R S and the camera position t becomes S t; in the normalized intrinsics cx becomes 1 - cx and
    the skew changes sign (fx, fy, cy unchanged). With this, rendering the x-mirrored scene (X -> S X) from the mirrored
    camera gives the horizontally flipped image: a point seen at normalized pixel (u, v) is seen at (1 - u, v).
    Mirroring twice gives the label back.
    """
    if c.shape[-1] != CAMERA_LABEL_DIM:
        raise ValueError(f"expected camera labels [..., {CAMERA_LABEL_DIM}], found shape {list(c.shape)}")
    if isinstance(c, torch.Tensor):
        signs = torch.as_tensor(_MIRROR_SIGNS, dtype=c.dtype, device=c.device)
    else:
        signs = _MIRROR_SIGNS.astype(c.dtype)
    mirrored = c * signs
    mirrored[..., _CX] = 1 - c[..., _CX]
    return mirrored


@functools.cache
def _image_extensions() -> frozenset[str]:
    """Lowercase file extensions PIL knows ('.png', '.jpg', ...)."""
    return frozenset(ext.lower() for ext in PIL.Image.registered_extensions())


def _short(value) -> str:
    """repr of a JSON value, cut to fit in an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_json(data: bytes, where: str):
    try:
        return json.loads(data)
    except ValueError as err:
        raise DatasetError(f"{where}: expected valid JSON, found a parse error: {err}") from None


class ImageFiles:
    """The files of a folder (walked recursively) or a .zip: sorted image names, decoding, and the root dataset.json.

    Names are relative with forward slashes. A .zip is opened lazily in each process (never pickled, reopened after a
    fork), so DataLoader workers each read through their own handle.
    """

    def __init__(self, path: str | os.PathLike):
        self._zipfile = None
        self._zip_pid = None
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise DatasetError(f"{self.path}: not found (expected a folder or a .zip of images)")
        self.is_zip = not os.path.isdir(self.path)
        if not self.is_zip:
            members = [os.path.relpath(os.path.join(root, file), self.path).replace(os.sep, "/")
                       for root, _dirs, files in os.walk(self.path) for file in files]
        elif self.path.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(self.path) as archive:
                    members = [info.filename for info in archive.infolist() if not info.is_dir()]
            except (OSError, zipfile.BadZipFile) as err:
                raise DatasetError(f"{self.path}: expected a readable .zip, found: {err}") from None
        else:
            raise DatasetError(f"{self.path}: expected a folder or a .zip of images, found another kind of file")
        self._members = {name.replace("\\", "/"): name for name in members}
        self.names = sorted(name for name in self._members if os.path.splitext(name)[1].lower() in _image_extensions())
        if not self.names:
            raise DatasetError(f"{self.path}: expected image files (.png, .jpg, ... anything PIL reads), "
                               f"found none among {len(members)} files")

    def _open(self, name: str):
        """Binary file object of the file `name` (a relative name with forward slashes)."""
        if not self.is_zip:
            return open(os.path.join(self.path, self._members[name]), "rb")
        if self._zipfile is None or self._zip_pid != os.getpid():
            self.close()
            self._zipfile = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zipfile.open(self._members[name])

    def names_in(self, folder: str) -> list[str]:
        """Relative names (forward slashes) of the files directly inside the relative folder `folder`, sorted."""
        prefix = folder.strip("/") + "/"
        return sorted(name for name in self._members if name.startswith(prefix) and "/" not in name[len(prefix):])

    def read_bytes(self, name: str) -> bytes:
        """Content of the file `name` (a relative name with forward slashes)."""
        with self._open(name) as file:
            return file.read()

    def read_json(self):
        """The parsed dataset.json at the root, or None if there is none."""
        if LABELS_FILE not in self._members:
            return None
        with self._open(LABELS_FILE) as file:
            return _parse_json(file.read(), f"{self.path}: {LABELS_FILE}")

    def image_size(self, name: str) -> tuple[int, int]:
        """(width, height) of image `name`, read from its header only."""
        try:
            with self._open(name) as file:
                return PIL.Image.open(file).size
        except _DECODE_ERRORS as err:
            raise DatasetError(f"{self.path}: {name}: expected a readable image, found: {err}") from None

    def read_image(self, name: str) -> PIL.Image.Image:
        """Image `name` decoded to mode 'L' (1 channel) or 'RGB' (3 channels); other channel counts are errors."""
        try:
            with self._open(name) as file:
                image = PIL.Image.open(file)
                image.load()
        except _DECODE_ERRORS as err:
            raise DatasetError(f"{self.path}: {name}: expected a readable image, found: {err}") from None
        target = "RGBA" if image.mode == "P" and "transparency" in image.info else _MODE_CONVERSIONS.get(image.mode)
        if target is not None:
            image = image.convert(target)
        if image.mode not in ("L", "RGB"):
            raise DatasetError(f"{self.path}: {name}: expected 1 (grayscale) or 3 (RGB) channels of 8 bits, found "
                               f"{len(image.getbands())} channel(s) (PIL mode {image.mode})")
        return image

    def close(self):
        if self._zipfile is not None:
            self._zipfile.close()
        self._zipfile = None

    def __getstate__(self):
        return dict(self.__dict__, _zipfile=None, _zip_pid=None)

    def __del__(self):
        self.close()


def _label_table(obj, where: str, allow_mapping: bool = False) -> dict | None:
    """{image name: raw JSON label} from parsed label JSON, or None for {"labels": null}.

    Reads the dataset.json format {"labels": [[relative_name, label], ...]}, and with `allow_mapping` also
    {relative_name: label}. Backslashes in names become forward slashes.
    """
    expected = '{"labels": [[relative_name, label], ...]}' + (" or {relative_name: label}" if allow_mapping else "")
    if isinstance(obj, dict) and "labels" in obj:
        entries = obj["labels"]
        if entries is None:
            return None
        if not isinstance(entries, list):
            raise DatasetError(f'{where}: expected {expected}, found "labels": {_short(entries)}')
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DatasetError(f"{where}: expected {expected}, found the entry {_short(entry)}")
    elif allow_mapping and isinstance(obj, dict):
        entries = list(obj.items())
    else:
        raise DatasetError(f"{where}: expected {expected}, found {_short(obj)}")
    table = {}
    for name, label in entries:
        key = name.replace("\\", "/")
        if key in table:
            raise DatasetError(f"{where}: expected one label per image, found {key!r} twice")
        table[key] = label
    return table


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _label_array(table: dict | None, names: list[str], where: str, label_dim: int | None) -> tuple[np.ndarray, bool]:
    """Labels of `names` as float32 [N, D], and whether they are camera labels (25 floats, not one-hot).

    A plain int per image is a class index and becomes a one-hot vector; otherwise each label must be a flat list of
    finite numbers, all of one length. A None table ({"labels": null}) gives [N, 0].
    """
    one_hot = False
    if table is None:
        labels = np.zeros([len(names), 0], np.float32)
    else:
        missing = [name for name in names if name not in table]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DatasetError(f"{where}: expected a label for every image, found none for {missing[0]!r}{more}")
        raw = [table[name] for name in names]
        one_hot = all(isinstance(value, int) and not isinstance(value, bool) for value in raw)
        if one_hot:
            for name, value in zip(names, raw):
                if value < 0:
                    raise DatasetError(f"{where}: expected class indices >= 0, found {value} for {name!r}")
            labels = np.zeros([len(raw), max(raw) + 1], np.float32)
            labels[np.arange(len(raw)), raw] = 1
        else:
            for name, value in zip(names, raw):
                if not (isinstance(value, list) and all(_is_number(x) for x in value)):
                    raise DatasetError(f"{where}: expected a flat list of numbers (or a class index for every image) "
                                       f"as the label of {name!r}, found {_short(value)}")
                if len(value) != len(raw[0]):
                    raise DatasetError(f"{where}: expected labels of one length, found {len(raw[0])} numbers for "
                                       f"{names[0]!r} and {len(value)} for {name!r}")
            with np.errstate(over="ignore"):  # float32 overflow becomes inf, reported below
                labels = np.array(raw, np.float64).reshape(len(raw), len(raw[0])).astype(np.float32)
            finite = np.isfinite(labels).all(axis=1)
            if not finite.all():
                name = names[int(np.argmin(finite))]
                raise DatasetError(f"{where}: expected finite float32 labels, found {_short(table[name])} for {name!r}")
    if label_dim is not None and labels.shape[1] != label_dim:
        kind = "camera labels (16 cam2world + 9 intrinsics)" if label_dim == CAMERA_LABEL_DIM else "labels"
        found = ("one-hot classes" if one_hot else "numbers") if table is not None else '(labels are null)'
        raise DatasetError(f"{where}: expected {label_dim}-float {kind}, found {labels.shape[1]} {found} "
                           f"for {names[0]!r}")
    return labels, labels.shape[1] == CAMERA_LABEL_DIM and not one_hot


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images [C, H, W] uint8 (C = 1 or 3, square) with float32 labels [label_dim] from a folder or .zip.

    With `max_size`, a larger dataset keeps a seeded random subset of its images (sorted). With `xflip`, items
    n .. 2n-1 repeat items 0 .. n-1 mirrored horizontally, with 25-float camera labels mirrored by
    `mirror_camera_label` (the official code kept the camera unchanged, contradicting the flipped image).
    Labels and the first image are checked at construction, the other images when read or by `validate()`.
    """

    def __init__(self, path: str | os.PathLike, resolution: int | None = None, max_size: int | None = None,
                 use_labels: bool = True, xflip: bool = False, random_seed: int = 0, label_dim: int | None = None):
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size: expected None or an int >= 1, found {max_size}")
        self._files = ImageFiles(path)
        self._path = self._files.path
        self._name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        names = self._files.names
        self._raw_idx = np.arange(len(names))
        if max_size is not None and len(names) > max_size:
            np.random.RandomState(random_seed % (1 << 31)).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])
        self._raw_labels, self._camera_labels = self._load_labels(use_labels, label_dim)

        first = names[self._raw_idx[0]]
        self._image_shape = list(self._read_chw(self._raw_idx[0]).shape)
        _, height, width = self._image_shape
        if height != width:
            raise DatasetError(f"{self._path}: {first}: expected square images, found {width}x{height} "
                               f"(width x height)")
        if resolution is not None and height != resolution:
            raise DatasetError(f"{self._path}: {first}: expected {resolution}x{resolution} images (resolution "
                               f"argument), found {width}x{height}")

        n = len(self._raw_idx)
        self._item_raw = np.concatenate([self._raw_idx, self._raw_idx]) if xflip else self._raw_idx
        self._item_flip = np.arange(len(self._item_raw)) >= n

    def _load_labels(self, use_labels: bool, label_dim: int | None) -> tuple[np.ndarray, bool]:
        """Labels of all images [N, D] float32 (D = 0 without labels), and whether they are camera labels."""
        if not use_labels:
            return np.zeros([len(self._files.names), 0], np.float32), False
        obj = self._files.read_json()
        if obj is None:
            raise DatasetError(f"{self._path}: camera labels are required but there is no {LABELS_FILE} at its root "
                               f'(expected {{"labels": [[relative_name, [25 floats]], ...]}}); add one, '
                               f"or pass use_labels=False")
        where = f"{self._path}: {LABELS_FILE}"
        return _label_array(_label_table(obj, where), self._files.names, where, label_dim)

    def _read_chw(self, raw_i: int) -> np.ndarray:
        """Raw image `raw_i` as uint8 [C, H, W]."""
        image = np.asarray(self._files.read_image(self._files.names[raw_i]))
        return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)

    def _load_image(self, raw_i: int) -> np.ndarray:
        """Raw image `raw_i` as uint8 [C, H, W], checked against image_shape."""
        image = self._read_chw(raw_i)
        if list(image.shape) != self._image_shape:
            raise DatasetError(f"{self._path}: {self._files.names[raw_i]}: expected shape {self._image_shape} "
                               f"[C, H, W] like the first image, found {list(image.shape)}")
        return image

    @property
    def name(self) -> str:
        """Base name of the dataset path without extension."""
        return self._name

    @property
    def path(self) -> str:
        """The dataset folder or .zip."""
        return self._path

    @property
    def xflip(self) -> bool:
        """Whether mirrored copies follow the original items."""
        return bool(self._item_flip.any())

    @property
    def image_shape(self) -> list[int]:
        """[C, H, W] of every image."""
        return list(self._image_shape)

    @property
    def num_channels(self) -> int:
        return self._image_shape[0]

    @property
    def resolution(self) -> int:
        return self._image_shape[1]

    @property
    def label_shape(self) -> list[int]:
        return [self._raw_labels.shape[1]]

    @property
    def label_dim(self) -> int:
        return self._raw_labels.shape[1]

    @property
    def has_labels(self) -> bool:
        return self.label_dim > 0

    def __len__(self) -> int:
        return len(self._item_raw)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 [C, H, W] contiguous, label float32 [label_dim]) of item `idx`."""
        image = self._load_image(self._item_raw[idx])
        if self._item_flip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        """Label float32 [label_dim] of item `idx` (mirrored for mirrored items with camera labels)."""
        label = self._raw_labels[self._item_raw[idx]]
        return mirror_camera_label(label) if self._item_flip[idx] and self._camera_labels else label.copy()

    def get_label_std(self) -> np.ndarray:
        """Per-dimension std float32 [label_dim] of the raw labels of the kept images."""
        return self._raw_labels[self._raw_idx].std(axis=0).astype(np.float32)

    def image_name(self, idx: int) -> str:
        """Relative name (forward slashes) of the image file of item `idx`."""
        return self._files.names[self._item_raw[idx]]

    def validate(self, progress: bool = False):
        """Decode every kept image and check its channels and shape (labels were checked at construction); raises
        DatasetError on the first problem."""
        for raw_i in tqdm(self._raw_idx, desc=f"validating {self._name}", disable=not progress):
            self._load_image(raw_i)

    def close(self):
        """Close the open .zip handle, if any (it reopens on the next read)."""
        self._files.close()


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
            raise ValueError(f"names: expected unique relative names ending in .png, found {_short(bad or names)}")
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


def crop_camera_intrinsics(label: np.ndarray, width: int, height: int, left: int, top: int, side: int) -> np.ndarray:
    """Camera label [25] of the `side` x `side` crop at pixel (left, top) of a width x height image.

    Normalized intrinsics measure fx, skew, cx in image widths and fy, cy in image heights, so K becomes
    diag(1/side, 1/side, 1) [[1, 0, -left], [0, 1, -top], [0, 0, 1]] diag(width, height, 1) K: fx and skew scale by
    width / side, fy by height / side, cx -> (cx width - left) / side, cy -> (cy height - top) / side. Every 3D point
    then projects onto the same image content. The cam2world part is unchanged.
    """
    to_crop = np.array([[1 / side, 0, -left / side], [0, 1 / side, -top / side], [0, 0, 1]])
    intrinsics = to_crop @ np.diag([width, height, 1.0]) @ np.asarray(label[16:], np.float64).reshape(3, 3)
    return np.concatenate([label[:16], intrinsics.reshape(9).astype(label.dtype)])


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
                table = _label_table(_parse_json(file.read(), labels), labels, allow_mapping=True)
            where = labels
        else:
            obj = files.read_json()
            if obj is None:
                raise DatasetError(f"{source}: camera labels are required but there is no {LABELS_FILE} at its root "
                                   f"and no labels file was given; pass one (--labels), or use_labels=False "
                                   f"(--no-labels)")
            where = f"{source}: {LABELS_FILE}"
            table = _label_table(obj, where)
        camera, _ = _label_array(table, names, where, CAMERA_LABEL_DIM)

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
