"""Labels of an image dataset: reading dataset.json's label table into float32 arrays (checked, with the file's
name in every error), and the camera-label transforms that go with mirroring and cropping images.

A camera label is 25 floats: the row-major 4x4 cam2world (OpenCV axes, world units) then the row-major 3x3 intrinsics
normalized by the image size (fx, skew, cx in image widths, fy, cy in image heights).
"""

from __future__ import annotations

import numpy as np
import torch

from op3d.datasets.files import DatasetError, short_repr

CAMERA_LABEL_DIM = 25

# Mirroring a camera label flips these signs: cam2world R[0,1], R[0,2], t_x, R[1,0], R[2,0]; intrinsics skew.
_MIRROR_SIGNS = np.ones(CAMERA_LABEL_DIM)
_MIRROR_SIGNS[[1, 2, 3, 4, 8, 17]] = -1
_CX = 18  # index of the normalized principal point x in a camera label


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


def label_table(obj, where: str, allow_mapping: bool = False) -> dict | None:
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
            raise DatasetError(f'{where}: expected {expected}, found "labels": {short_repr(entries)}')
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DatasetError(f"{where}: expected {expected}, found the entry {short_repr(entry)}")
    elif allow_mapping and isinstance(obj, dict):
        entries = list(obj.items())
    else:
        raise DatasetError(f"{where}: expected {expected}, found {short_repr(obj)}")
    table = {}
    for name, label in entries:
        key = name.replace("\\", "/")
        if key in table:
            raise DatasetError(f"{where}: expected one label per image, found {key!r} twice")
        table[key] = label
    return table


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def label_array(table: dict | None, names: list[str], where: str, label_dim: int | None) -> tuple[np.ndarray, bool]:
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
                                       f"as the label of {name!r}, found {short_repr(value)}")
                if len(value) != len(raw[0]):
                    raise DatasetError(f"{where}: expected labels of one length, found {len(raw[0])} numbers for "
                                       f"{names[0]!r} and {len(value)} for {name!r}")
            with np.errstate(over="ignore"):  # float32 overflow becomes inf, reported below
                labels = np.array(raw, np.float64).reshape(len(raw), len(raw[0])).astype(np.float32)
            finite = np.isfinite(labels).all(axis=1)
            if not finite.all():
                name = names[int(np.argmin(finite))]
                raise DatasetError(f"{where}: expected finite float32 labels, found {short_repr(table[name])} for {name!r}")
    if label_dim is not None and labels.shape[1] != label_dim:
        kind = "camera labels (16 cam2world + 9 intrinsics)" if label_dim == CAMERA_LABEL_DIM else "labels"
        found = ("one-hot classes" if one_hot else "numbers") if table is not None else '(labels are null)'
        raise DatasetError(f"{where}: expected {label_dim}-float {kind}, found {labels.shape[1]} {found} "
                           f"for {names[0]!r}")
    return labels, labels.shape[1] == CAMERA_LABEL_DIM and not one_hot


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
