"""From PARE (body-pose estimator) output to a pose-conditioned training dataset (spec 4.5): the work behind
``train_scripts/export_pose.py`` and ``train_scripts/export_data.py``.

Input: one PARE output file per image (``.pkl`` / ``.pickle`` / ``.joblib``, joblib or plain pickle), read with
:mod:`op3d.smpl.pose_files`: stock PARE image-folder output (``pred_pose`` [N, 24, 3, 3], ``pred_shape`` [N, 10],
``pred_cam``, ``orig_cam``, ``smpl_vertices``, ..., N detected people), the customised SMPL-output files of the
official scripts, or model-ready pose files. Stock PARE files hold SMPL parameters only, so they need an SMPL body
model.

Camera label of an image (export_data): the person's root rotation R (full_pose[0], in PARE's OpenCV-style camera
frame) and a camera at distance camera_radius: world2cam = T @ [[R, 0], [0, 1]] with T a translation by
camera_radius along +z, so cam2world = (T @ R)^-1, and normalized intrinsics [[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]].
World coordinates are then the body's own rest frame (y up, facing +z): an upright person (R close to R_x(pi)) gives
a camera on the +z axis looking at the origin. The official script read R from the root axis-angle vector as if it
were XYZ Euler angles (``euler_angles_to_matrix``), which is a different rotation for any non-trivial pose; op3d uses
the rotation itself (Rodrigues' formula when the file holds axis-angle).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import PIL.Image
from tqdm import tqdm

from op3d.datasets import LABELS_FILE, DatasetError, ImageFiles, dataset_writer, png_bytes, refuse_existing
from op3d.datasets.conditional import POSE_DIR
from op3d.safe_pickle import UnsafePickleError
from op3d.smpl.body_model import SMPLModel, SMPLModelError, load_smpl_model
from op3d.smpl.pose_files import PoseFileError, load_pose_condition, pose_condition_bytes

__all__ = ["EXPORT_ERRORS", "PARE_EXTENSIONS", "ExportSummary", "camera_label_from_root", "export_data", "export_pose",
           "optional_smpl_model", "pare_files"]

PARE_EXTENSIONS = (".pkl", ".pickle", ".joblib")
"""Extensions of PARE output files (PARE writes ``<image name>.pkl``)."""
EXPORT_ERRORS = (DatasetError, PoseFileError, SMPLModelError, UnsafePickleError, FileNotFoundError)
"""What the exports raise for bad input (the scripts turn these into one-line errors)."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    dest: str
    count: int
    resolution: int | None = None

    def __str__(self):
        size = f", {self.resolution}x{self.resolution} images" if self.resolution else ""
        return f"{self.dest}: {self.count} pose conditions{size}"


def pare_files(folder: str | os.PathLike) -> list[str]:
    """Sorted paths of the PARE output files directly in `folder` (DatasetError if there are none or two share a
    base name)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: PARE output folder not found (--smpl_folder)")
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(PARE_EXTENSIONS))
    if not names:
        raise DatasetError(f"{folder}: expected PARE output files ({', '.join(PARE_EXTENSIONS)}), found none")
    stems = [os.path.splitext(name)[0] for name in names]
    for a, b in zip(stems, stems[1:]):
        if a == b:
            raise DatasetError(f"{folder}: two PARE files share the base name {a!r}; keep one")
    return [os.path.join(folder, name) for name in names]


def optional_smpl_model(path: str | os.PathLike | None = None) -> SMPLModel | None:
    """The SMPL body model at `path` (a file or folder, see :func:`op3d.smpl.body_model.find_smpl_file`), else in
    $OP3D_SMPL_DIR if that is set, else None (files with SMPL-output keys need no model)."""
    if path is None and not os.environ.get("OP3D_SMPL_DIR"):
        return None
    return load_smpl_model(path)


def camera_label_from_root(root_rotmat, camera_radius: float, focal_length: float) -> np.ndarray:
    """Camera label float64 [25] of an image whose person has root rotation root_rotmat [3, 3] (camera frame):
    cam2world = (T @ [[R, 0], [0, 1]])^-1 = [[R^T, -R^T t], [0, 1]] with t = (0, 0, camera_radius), then the
    normalized intrinsics [[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]] (see the module docstring)."""
    rotation = np.asarray(root_rotmat, np.float64)
    cam2world = np.eye(4)
    cam2world[:3, :3] = rotation.T
    cam2world[:3, 3] = -rotation.T @ np.array([0.0, 0.0, camera_radius])
    intrinsics = np.array([[focal_length, 0, 0.5], [0, focal_length, 0.5], [0, 0, 1]])
    return np.concatenate([cam2world.reshape(16), intrinsics.reshape(9)])


def _check_count(count: int | None, what: str):
    if count is not None and count < 1:
        raise ValueError(f"{what}: expected None or an int >= 1, found {count}")


def export_pose(smpl_folder: str | os.PathLike, output_folder: str | os.PathLike, n_poses: int | None = None,
                model: SMPLModel | None = None, person: int = 0, progress: bool = False) -> ExportSummary:
    """Write ``<name>.pickle`` (the five arrays of spec 4.2, float32) for each of the first `n_poses` PARE files
    ``<name>.pkl`` of `smpl_folder` (sorted), for the `person`-th detected person.

    `output_folder` must be new or empty; it appears only if every file was converted. `model` is needed for files
    that hold SMPL parameters only (stock PARE).
    """
    _check_count(n_poses, "n_poses")
    output_folder = os.fspath(output_folder)
    files = pare_files(smpl_folder)[:n_poses]
    refuse_existing(output_folder)
    with dataset_writer(output_folder) as put:
        for file in tqdm(files, desc=f"writing {output_folder}", disable=not progress):
            name = os.path.splitext(os.path.basename(file))[0] + ".pickle"
            put(name, pose_condition_bytes(load_pose_condition(file, model, person), name))
    return ExportSummary(output_folder, len(files))


def _pair(images: list[str], pare: list[str], image_folder: str, smpl_folder: str) -> None:
    """DatasetError if the sorted images and PARE files cannot be paired one to one."""
    if len(images) == len(pare):
        return
    image_stems = {os.path.splitext(os.path.basename(n))[0] for n in images}
    pare_stems = {os.path.splitext(os.path.basename(p))[0] for p in pare}
    hints = []
    if image_stems - pare_stems:
        hints.append(f"first image without a same-named PARE file: {sorted(image_stems - pare_stems)[0]!r}")
    if pare_stems - image_stems:
        hints.append(f"first PARE file without a same-named image: {sorted(pare_stems - image_stems)[0]!r}")
    raise DatasetError(f"{image_folder} has {len(images)} images but {smpl_folder} has {len(pare)} PARE files; "
                       f"they are paired in sorted order, so the counts must match (PARE skips images where it finds "
                       f"nobody; remove those images)" + (f"; {'; '.join(hints)}" if hints else ""))


def export_data(image_folder: str | os.PathLike, smpl_folder: str | os.PathLike, output: str | os.PathLike,
                n_images: int | None = None, focal_length: float = 4.2647, camera_radius: float = 2.7,
                model: SMPLModel | None = None, person: int = 0, resolution: int | None = None,
                progress: bool = False) -> ExportSummary:
    """Write a pose-conditioned dataset from images and their PARE outputs, paired in sorted order.

    Output (a new or empty folder, or a .zip): ``{i:06d}.png``, ``dataset.json`` with the camera label of each image
    (:func:`camera_label_from_root`) and ``processed_pose_cond/{i:06d}.pickle`` (the pose condition), i.e. what
    :class:`op3d.datasets.conditional.ConditionalImageDataset` reads. Images must be square and of one size, or are
    resized to `resolution` (which keeps normalized intrinsics). Nothing is written unless every image converts.
    """
    _check_count(n_images, "n_images")
    image_folder, smpl_folder, output = os.fspath(image_folder), os.fspath(smpl_folder), os.fspath(output)
    images = ImageFiles(image_folder)
    if images.is_zip:
        raise DatasetError(f"{image_folder}: expected a folder of images (--image_folder), found a file")
    pare = pare_files(smpl_folder)
    _pair(images.names, pare, image_folder, smpl_folder)
    pairs = list(zip(images.names, pare))[:n_images]
    refuse_existing(output)
    labels, size, mode = [], None, None
    with dataset_writer(output) as put:
        for i, (image_name, pare_file) in enumerate(tqdm(pairs, desc=f"writing {output}", disable=not progress)):
            condition = load_pose_condition(pare_file, model, person)
            image = images.read_image(image_name)
            width, height = image.size
            if width != height:
                raise DatasetError(f"{image_folder}: {image_name}: expected a square image, found {width}x{height} "
                                   "(pad or crop the person images to squares before running PARE)")
            if resolution is not None and width != resolution:
                image = image.resize((resolution, resolution), PIL.Image.LANCZOS)
            if size is None:
                size, mode = image.size[0], image.mode
            elif (image.size[0], image.mode) != (size, mode):
                raise DatasetError(f"{image_folder}: {image_name}: expected {size}x{size} {mode} like "
                                   f"{pairs[0][0]!r}, found {image.size[0]}x{image.size[0]} {image.mode}; pass a "
                                   "resolution (--resolution) to resize all images to one size")
            name = f"{i:06d}"
            put(f"{name}.png", png_bytes(np.asarray(image), image_name))
            put(f"{POSE_DIR}/{name}.pickle", pose_condition_bytes(condition))
            labels.append([f"{name}.png", camera_label_from_root(condition["full_pose"][0], camera_radius,
                                                                 focal_length).tolist()])
        put(LABELS_FILE, json.dumps({"labels": labels}).encode())
    images.close()
    return ExportSummary(output, len(pairs), size)
