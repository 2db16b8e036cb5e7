"""ImageFolderDataset: the training and evaluation images [C, H, W] uint8 with their float32 labels, from a folder or
.zip with dataset.json (see op3d.datasets.files), validated with errors that name the file."""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm import tqdm

from op3d.datasets.files import LABELS_FILE, DatasetError, ImageFiles
from op3d.datasets.labels import label_array, label_table, mirror_camera_label


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
        return label_array(label_table(obj, where), self._files.names, where, label_dim)

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
