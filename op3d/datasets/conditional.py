"""Pose-conditioned image datasets (spec 4.4): the images and camera labels of :mod:`op3d.datasets` plus one
SMPL pose-condition file per image, for the conditional generator and discriminator.

Layout: the image dataset (folder or .zip with dataset.json) and a folder of pose files named after the image's base
name, ``<image basename without extension>.pickle`` (or ``.pkl``, ``.joblib``, ``.npz``), as read by
:mod:`op3d.smpl.pose_files` (model-ready files, or the released SHHQ-40K-SMPL / SMPL-output pickles). The folder is
``pose_dir`` if given, else the first of: ``processed_pose_cond/`` inside the dataset (what export_data.py writes),
``processed_pose_cond/`` beside it, ``./processed_pose_cond`` (the official location, relative to the working
directory).

Items are (image uint8 [C, H, W], label float32 [label_dim], conditions), conditions being a dict of float32
tensors: vertices [V, 3], fk_matrices [24, 4, 4], lbs_weights [V, 24], full_pose [24, 3, 3], body_shape [10].
:func:`collate_conditional` batches them (a leading batch axis on every tensor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from op3d.datasets.files import DatasetError
from op3d.datasets.image_folder import ImageFolderDataset
from op3d.safe_pickle import UnsafePickleError
from op3d.smpl.pose_files import POSE_CONDITION_KEYS, POSE_FILE_EXTENSIONS, PoseFileError, load_pose_condition

__all__ = ["POSE_DIR", "ConditionalImageDataset", "collate_conditional", "stack_pose_conditions"]

POSE_DIR = "processed_pose_cond"
"""Default name of the pose-condition folder."""


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]


def _by_stem(names: Sequence[str]) -> dict[str, str]:
    """{file stem: file name} of the pose files among `names`, preferring extensions in POSE_FILE_EXTENSIONS order."""
    table: dict[str, str] = {}
    for ext in reversed(POSE_FILE_EXTENSIONS):
        table.update({_stem(name): name for name in names if name.lower().endswith(ext)})
    return table


class ConditionalImageDataset(ImageFolderDataset):
    """:class:`~op3d.training.dataset.ImageFolderDataset` whose items also carry the image's pose condition.

    pose_dir: folder of pose files (default: see the module docstring). Every kept image must have a pose file; the
    first one is read at construction, the others when their item is read. xflip is refused: mirroring the image
    would need a mirrored body, which needs SMPL's left/right vertex correspondence.
    """

    def __init__(self, path: str | os.PathLike, resolution: int | None = None, max_size: int | None = None,
                 use_labels: bool = True, xflip: bool = False, random_seed: int = 0, label_dim: int | None = None,
                 pose_dir: str | os.PathLike | None = None):
        if xflip:
            raise DatasetError(f"{os.fspath(path)}: xflip (--mirror) is not supported for pose-conditioned data: a "
                               "mirrored image needs a mirrored SMPL body, which needs SMPL's left/right vertex map")
        super().__init__(path, resolution=resolution, max_size=max_size, use_labels=use_labels, xflip=False,
                         random_seed=random_seed, label_dim=label_dim)
        self._pose_source, self._pose_files = self._find_pose_files(pose_dir)
        kept = [self._files.names[i] for i in self._raw_idx]
        stems: dict[str, str] = {}
        for name in kept:
            if _stem(name) in stems:
                raise DatasetError(f"{self._path}: images {stems[_stem(name)]!r} and {name!r} share the base name "
                                   f"{_stem(name)!r}, so their pose files ({_stem(name)}.pickle) would be the same")
            stems[_stem(name)] = name
        missing = [name for name in kept if _stem(name) not in self._pose_files]
        if missing:
            more = f" (and {len(missing) - 1} more of {len(kept)} images)" if len(missing) > 1 else ""
            raise DatasetError(f"{self._pose_source}: expected a pose file {_stem(missing[0])}.pickle (or .pkl, "
                               f".joblib, .npz) for the image {missing[0]!r} of {self._path}, found none{more}")
        self.get_conditions(0)

    def _find_pose_files(self, pose_dir) -> tuple[str, dict[str, str]]:
        """(description of the pose folder, {image stem: pose file path or dataset member name})."""
        if pose_dir is not None:
            pose_dir = os.fspath(pose_dir)
            if not os.path.isdir(pose_dir):
                raise DatasetError(f"{pose_dir}: pose-condition folder not found (pose_dir / --pose-dir)")
            return pose_dir, {stem: os.path.join(pose_dir, name)
                              for stem, name in _by_stem(sorted(os.listdir(pose_dir))).items()}
        inside = self._files.names_in(POSE_DIR)
        if inside:
            return f"{self._path}: {POSE_DIR}/", {stem: ("member", name) for stem, name in _by_stem(inside).items()}
        places = [os.path.join(os.path.dirname(os.path.abspath(self._path)), POSE_DIR), os.path.abspath(POSE_DIR)]
        for place in places:
            if os.path.isdir(place):
                return place, {stem: os.path.join(place, name) for stem, name in _by_stem(os.listdir(place)).items()}
        raise DatasetError(f"{self._path}: no pose-condition folder found (looked for {POSE_DIR}/ inside the dataset, "
                           f"{places[0]} and {places[1]}); pass pose_dir (--pose-dir), or make one with "
                           "train_scripts/export_pose.py or export_data.py")

    @property
    def pose_source(self) -> str:
        """Where the pose files are read from."""
        return self._pose_source

    def pose_file(self, idx: int) -> str:
        """Path (or '<dataset>: <member>') of the pose file of item `idx`."""
        entry = self._pose_files[_stem(self.image_name(idx))]
        return f"{self._path}: {entry[1]}" if isinstance(entry, tuple) else entry

    def get_conditions(self, idx: int) -> dict[str, torch.Tensor]:
        """Pose condition of item `idx`: the five float32 tensors (see the module docstring)."""
        entry = self._pose_files[_stem(self.image_name(idx))]
        try:
            if isinstance(entry, tuple):
                arrays = load_pose_condition(self.pose_file(idx), data=self._files.read_bytes(entry[1]))
            else:
                arrays = load_pose_condition(entry)
        except (PoseFileError, UnsafePickleError) as err:
            raise DatasetError(f"{err} (pose condition of image {self.image_name(idx)!r}; stock PARE output needs "
                               "train_scripts/export_pose.py first)") from None
        return {key: torch.from_numpy(arrays[key]) for key in POSE_CONDITION_KEYS}

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray, dict[str, torch.Tensor]]:
        """(image uint8 [C, H, W], label float32 [label_dim], pose condition) of item `idx`."""
        image, label = super().__getitem__(idx)
        return image, label, self.get_conditions(idx)


def stack_pose_conditions(conditions: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Batch pose conditions: B dicts of the five tensors -> one dict of [B, ...] tensors (extra keys dropped)."""
    if not conditions:
        raise ValueError("pose conditions: expected at least one item to batch, found none")
    batch = {}
    for key in POSE_CONDITION_KEYS:
        values = []
        for i, item in enumerate(conditions):
            if key not in item:
                raise KeyError(f"pose conditions: item {i} has no {key!r} (found {sorted(item)})")
            values.append(torch.as_tensor(item[key]))
            if values[-1].shape != values[0].shape:
                raise ValueError(f"pose conditions: {key!r} of item {i} has shape {list(values[-1].shape)}, item 0 "
                                 f"has {list(values[0].shape)}")
        batch[key] = torch.stack(values)
    return batch


def collate_conditional(items: Sequence[tuple]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """DataLoader collate_fn for :class:`ConditionalImageDataset`: (images uint8 [B, C, H, W], labels float32
    [B, label_dim], pose conditions {key: [B, ...]})."""
    images = torch.stack([torch.as_tensor(item[0]) for item in items])
    labels = torch.stack([torch.as_tensor(item[1]) for item in items])
    return images, labels, stack_pose_conditions([item[2] for item in items])
