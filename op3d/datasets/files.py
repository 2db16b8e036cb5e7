"""The files of an image dataset: a folder or .zip of images and its root dataset.json, listed, read and decoded with
errors that name the file.

Layout (EG3D's): images anywhere under the root, any extension PIL knows, ordered by relative path (forward slashes);
labels in ``dataset.json`` at the root, ``{"labels": [[relative_name, label], ...]}`` or ``{"labels": null}``. A camera
label is 25 floats: the row-major 4x4 cam2world (OpenCV axes, world units) then the row-major 3x3 intrinsics normalized
by the image size (fx, skew, cx in image widths, fy, cy in image heights; fx = fy = 4.2647, cx = cy = 0.5 for FFHQ).
"""

from __future__ import annotations

import functools
import json
import os
import zipfile

import PIL.Image

LABELS_FILE = "dataset.json"

# PIL modes decoded into 'L' or 'RGB' (a palette with transparency becomes 'RGBA' and is rejected as 4 channels).
_MODE_CONVERSIONS = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError)


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; the message names the dataset path (and the file inside it), what was
    expected and what was found."""


@functools.cache
def _image_extensions() -> frozenset[str]:
    """Lowercase file extensions PIL knows ('.png', '.jpg', ...)."""
    return frozenset(ext.lower() for ext in PIL.Image.registered_extensions())


def short_repr(value) -> str:
    """repr of a JSON value, cut to fit in an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_json(data: bytes, where: str):
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
            return parse_json(file.read(), f"{self.path}: {LABELS_FILE}")

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
