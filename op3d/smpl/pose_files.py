"""Pose-condition files: read the per-image SMPL files of the conditional pipeline and turn them into the five arrays
the conditional generator needs (spec 4.2), without executing anything from the files.

Files read (:func:`read_pose_file`):

* ``.pickle`` / ``.pkl`` / ``.joblib``: a plain pickle or a joblib pickle (joblib writes each numpy array as a small
  header object followed by the raw bytes; zlib, gzip, bz2 and xz compressed joblib files are decompressed first).
  The unpickler resolves only numpy arrays and scalars, torch tensors and ``OrderedDict``; any other global is an
  :class:`~op3d.safe_pickle.UnsafePickleError`, and arrays of Python objects are refused.
* ``.npz`` (``np.load`` with pickles disabled).

Contents understood (:func:`pose_record` then :func:`pose_condition_from_record`), one person per file or a
``person`` index into a leading axis:

* model-ready: ``vertices`` [V, 3], ``fk_matrices`` [24, 4, 4] (canonical frame), ``lbs_weights`` [V, 24],
  ``full_pose`` [24, 3, 3] and ``body_shape`` [10] (what :func:`save_pose_condition` and op3d's export scripts write);
* SMPL output (the released SHHQ-40K-SMPL pickles and the customised PARE output of the official export_pose.py):
  ``tpose_vertices``, ``fk_matrices`` (the relative joint transforms A_j), ``lbs_weights``, ``full_pose`` or
  ``global_orient`` + ``body_pose``, ``betas``; extra keys such as ``joints_shaped`` or ``vertices`` are ignored;
* SMPL parameters only, which need an SMPL body model: stock PARE (``pred_pose`` [N, 24, 3, 3], ``pred_shape``
  [N, 10]) or PARE's video format (``{track: {'pose': [F, 72], 'betas': [F, 10], ...}}``).

Poses may be rotation matrices or axis-angle vectors. The canonical frame is spec 4.2's: fk'_j = cano @ A_j with
cano = [[R_x(pi) R_root^T, 0], [0, 1]], vertices = LBS of the shaped rest vertices (no pose blend shapes) with fk'.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np
import torch

from op3d.atomic import atomic_output
from op3d.safe_pickle import ALLOWED_GLOBALS, AllowListMixin, UnsafePickleError
from op3d.smpl.body_model import NUM_JOINTS, SMPL_PICKLE_GLOBALS, SMPLModel
from op3d.smpl.lbs import axis_angle_to_matrix, canonical_frame, pose_condition, skin

__all__ = ["NUM_BETAS", "POSE_CONDITION_KEYS", "POSE_FILE_EXTENSIONS", "PoseFileError", "load_pose_condition",
           "pose_condition_bytes", "pose_condition_from_record", "pose_record", "read_pose_file",
           "save_pose_condition"]

POSE_CONDITION_KEYS = ("vertices", "fk_matrices", "lbs_weights", "full_pose", "body_shape")
"""The keys the conditional generator reads (spec 4.2)."""
POSE_FILE_EXTENSIONS = (".pickle", ".pkl", ".joblib", ".npz")
NUM_BETAS = 10
"""Shape coefficients the conditional networks take (``body_shape`` [10])."""

_ROTATION_TOLERANCE = 1e-3  # max |R^T R - I| accepted for a rotation matrix read from a file
_CANONICAL_ROOT = np.diag([1.0, -1.0, -1.0])  # rotation part of fk'_0 in the canonical frame

# Trailing shapes each understood key may have (None = any size); one more leading axis is a person axis.
_POSE_TAILS = ((NUM_JOINTS, 3, 3), (NUM_JOINTS, 3), (3 * NUM_JOINTS,))
_TAILS = {
    "full_pose": _POSE_TAILS, "pred_pose": _POSE_TAILS, "pose": _POSE_TAILS,
    "global_orient": ((1, 3, 3), (3, 3), (1, 3), (3,)),
    "body_pose": ((NUM_JOINTS - 1, 3, 3), (NUM_JOINTS - 1, 3), (3 * NUM_JOINTS - 3,)),
    "body_shape": ((None,),), "betas": ((None,),), "pred_shape": ((None,),),
    "fk_matrices": ((NUM_JOINTS, 4, 4),), "lbs_weights": ((None, NUM_JOINTS),),
    "vertices": ((None, 3),), "tpose_vertices": ((None, 3),),
}
_POSE_KEYS = ("full_pose", "pred_pose", "pose")  # any one of these, or global_orient + body_pose
_BETAS_KEYS = ("body_shape", "betas", "pred_shape")
_EXPECTED = ("a pose-condition file needs either vertices, fk_matrices, lbs_weights, full_pose (or global_orient + "
             "body_pose) and body_shape (or betas); or the SMPL-output keys tpose_vertices, fk_matrices, lbs_weights, "
             "full_pose (or global_orient + body_pose) and betas; or SMPL parameters (pred_pose / pose / full_pose "
             "and pred_shape / betas) together with an SMPL body model")


class PoseFileError(ValueError):
    """A pose file that cannot be read or turned into a pose condition; the message names the file."""


# ----------------------------------------------------------------------------------------------------------------------
# Reading files without executing code.


class _JoblibArrayHeader:
    """Inert stand-in for joblib's array header object (``joblib.numpy_pickle.NumpyArrayWrapper``): its pickled state
    gives dtype, shape, memory order and alignment of the raw array bytes that follow it in the stream."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError(f"joblib array header: expected a dict state, found {type(state).__name__}")
        self.state = state


_POSE_GLOBALS = {name: value for name, value in ALLOWED_GLOBALS.items()
                 if name.startswith(("numpy.", "collections.", "torch._utils.", "torch.storage."))
                 or (name.startswith("torch.") and name.endswith(("Storage", ".Size")))}
_POSE_GLOBALS["_codecs.encode"] = SMPL_PICKLE_GLOBALS["_codecs.encode"]  # bytes in protocol-2 pickles (latin-1 only)
_POSE_GLOBALS["joblib.numpy_pickle.NumpyArrayWrapper"] = _JoblibArrayHeader


class _PoseUnpickler(AllowListMixin, pickle._Unpickler):
    """Restricted unpickler (pure Python, so that joblib's raw array bytes can be read from the stream in place)."""

    allowed = _POSE_GLOBALS
    refusal = "is not allowed in a pose file"
    hint = " (pose files hold numpy arrays, numbers, strings, lists and dicts)"
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file):
        super().__init__(file)
        self._stream = file

    def _build(self):
        pickle._Unpickler.load_build(self)
        if isinstance(self.stack[-1], _JoblibArrayHeader):
            self.stack[-1] = self._joblib_array(self.stack[-1].state)

    dispatch[pickle.BUILD[0]] = _build

    def _joblib_array(self, state: dict) -> np.ndarray:
        """Read the raw bytes of the array whose header state was just built: optional alignment (one byte giving
        the padding length, then the padding), then prod(shape) items in C or Fortran order."""
        dtype, shape, order = state.get("dtype"), state.get("shape"), state.get("order", "C")
        if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple) or order not in ("C", "F"):
            raise UnsafePickleError(f"joblib array header with dtype {dtype!r}, shape {shape!r}, order {order!r}")
        if dtype.hasobject:
            raise UnsafePickleError("joblib array of Python objects (dtype object) refused: reading it would "
                                    "unpickle arbitrary objects")
        if state.get("subclass", np.ndarray) is not np.ndarray:
            raise UnsafePickleError(f"joblib array of class {state['subclass']!r} refused (only numpy.ndarray)")
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self._stream.read(1)
            if len(padding) != 1 or len(self._stream.read(padding[0])) != padding[0]:
                raise EOFError("joblib array padding cut short")
        count = int(np.prod(shape, dtype=np.int64))
        data = self._stream.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise EOFError(f"joblib array data cut short ({len(data)} of {count * dtype.itemsize} bytes)")
        array = np.frombuffer(data, dtype).copy()
        array = array.reshape(shape[::-1]).T if order == "F" else array.reshape(shape)
        return array.astype(dtype.newbyteorder("=")) if not dtype.isnative else array


_DECOMPRESSORS = ((b"\x1f\x8b", gzip.decompress), (b"\x78", zlib.decompress), (b"BZh", bz2.decompress),
                  (b"\xfd7zXZ", lzma.decompress), (b"\x5d\x00\x00", lzma.decompress))
_UNSUPPORTED_COMPRESSION = ((b"\x04\x22\x4d\x18", "lz4"), (b"ZF", "joblib < 0.10 zfile"))


def read_pose_file(path: str | os.PathLike, data: bytes | None = None) -> object:
    """The content of a pose file (a dict for every understood file) with numpy arrays, never executing code.

    ``data``: the file's bytes when they do not come from ``path`` (e.g. a .zip member; ``path`` then only names
    it and gives the extension). Raises :class:`PoseFileError` (or :class:`~op3d.safe_pickle.UnsafePickleError` for a
    refused global) naming the file.
    """
    source = os.fspath(path)
    if data is None:
        try:
            with open(source, "rb") as file:
                data = file.read()
        except OSError as err:
            raise PoseFileError(f"{source}: cannot read the pose file ({err.strerror or err})") from None
    if source.lower().endswith(".npz"):
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                return {key: arrays[key] for key in arrays.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise PoseFileError(f"{source}: cannot read as .npz ({type(err).__name__}: {err})") from None
    for magic, what in _UNSUPPORTED_COMPRESSION:
        if data.startswith(magic):
            raise PoseFileError(f"{source}: {what}-compressed joblib file; op3d reads plain pickles and uncompressed, "
                                f"zlib, gzip, bz2 or xz joblib files: re-save it with joblib.dump(value, path)")
    for magic, decompress in _DECOMPRESSORS:
        if data.startswith(magic):
            try:
                data = decompress(data)
            except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as err:
                raise PoseFileError(f"{source}: looks compressed but cannot be decompressed ({err})") from None
            break
    try:
        return _PoseUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{source}: {err}") from None
    except Exception as err:  # any malformed stream
        raise PoseFileError(f"{source}: cannot read as a pickle ({type(err).__name__}: {err})") from None


# ----------------------------------------------------------------------------------------------------------------------
# One person's arrays.


def _as_array(value, key: str, source: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PoseFileError(f"{source}: {key!r} is not an array of numbers (found {type(value).__name__})") from None
    if not np.isfinite(array).all():
        raise PoseFileError(f"{source}: {key!r} holds non-finite values")
    return array


def _select_person(array: np.ndarray, key: str, person: int, source: str) -> np.ndarray:
    """``array`` without its person axis, if it has one (one more leading axis than its longest matching tail)."""
    tails = _TAILS[key]
    for tail in sorted(tails, key=len, reverse=True):
        extra = array.ndim - len(tail)
        if extra in (0, 1) and all(t is None or s == t for s, t in zip(array.shape[extra:], tail)):
            if extra == 0:
                return array
            if not 0 <= person < array.shape[0]:
                raise PoseFileError(f"{source}: {key!r} has {array.shape[0]} people (shape {list(array.shape)}), "
                                    f"person index {person} is out of range")
            return array[person]
    text = " or ".join("[" + ", ".join("*" if t is None else str(t) for t in tail) + "]" for tail in tails)
    raise PoseFileError(f"{source}: {key!r} has shape {list(array.shape)}, expected {text} (optionally with a "
                        "leading person axis)")


def pose_record(content: object, source: str, person: int = 0) -> dict[str, np.ndarray]:
    """The understood arrays of one person (float64, person axis removed) from a pose file's content.

    ``content``: a dict of arrays, or PARE's video-format dict of per-track dicts (then ``person`` picks the track,
    in file order, and the first frame is used). Unknown keys are dropped.
    """
    if not isinstance(content, Mapping):
        raise PoseFileError(f"{source}: expected a dict of arrays, found {type(content).__name__}; {_EXPECTED}")
    if not any(key in content for key in _TAILS):
        tracks = [value for value in content.values() if isinstance(value, Mapping)]
        if tracks and len(tracks) == len(content):
            if not 0 <= person < len(tracks):
                raise PoseFileError(f"{source}: {len(tracks)} tracks (people), person index {person} is out of range")
            return pose_record(tracks[person], f"{source} [track {list(content)[person]!r}]", 0)
    return {key: _select_person(_as_array(content[key], key, source), key, person, source)
            for key in _TAILS if key in content}


# ----------------------------------------------------------------------------------------------------------------------
# The five arrays.


def _rotations(record: dict, key: str, joints: int, source: str) -> np.ndarray:
    """record[key] as rotation matrices [joints, 3, 3] (from matrices or axis-angle), checked."""
    value = record[key]
    if value.shape[-2:] == (3, 3):
        rotmats = value.reshape(joints, 3, 3)
    else:
        rotmats = axis_angle_to_matrix(torch.from_numpy(value.reshape(joints, 3))).numpy()
    error = np.abs(rotmats.transpose(0, 2, 1) @ rotmats - np.eye(3)).max()
    if error > _ROTATION_TOLERANCE or (np.linalg.det(rotmats) <= 0).any():
        raise PoseFileError(f"{source}: {key!r} holds matrices that are not rotations (|R^T R - I| up to {error:.2g}, "
                            f"or a reflection)")
    return rotmats


def _full_pose(record: dict, source: str) -> np.ndarray | None:
    for key in _POSE_KEYS:
        if key in record:
            return _rotations(record, key, NUM_JOINTS, source)
    if "global_orient" in record and "body_pose" in record:
        return np.concatenate([_rotations(record, "global_orient", 1, source),
                               _rotations(record, "body_pose", NUM_JOINTS - 1, source)])
    return None


def _missing_error(source: str, record: dict, missing: list[str]) -> PoseFileError:
    found = ", ".join(sorted(record)) or "none of the understood keys"
    return PoseFileError(f"{source}: cannot build the pose condition: missing {', '.join(missing)} (found {found}); "
                         f"{_EXPECTED}")


def pose_condition_from_record(record: dict, source: str, model: SMPLModel | None = None) -> dict[str, np.ndarray]:
    """The five arrays of spec 4.2 (float32 numpy: vertices [V, 3], fk_matrices [24, 4, 4], lbs_weights [V, 24],
    full_pose [24, 3, 3], body_shape [10]) from one person's arrays (:func:`pose_record`).

    Rules, in order:
    * full_pose from full_pose / pred_pose / pose or global_orient + body_pose; body_shape from body_shape / betas /
      pred_shape (10 values).
    * With fk_matrices and lbs_weights in the record, fk_matrices are recognised by their root rotation: canonical if
      it is diag(1, -1, -1) (kept as they are, with the record's vertices if present), the SMPL relative transforms
      A_j if it is full_pose[0] (then fk' = cano @ A_j, and vertices are recomputed from tpose_vertices: the
      ``vertices`` of an SMPL output are posed with pose blend shapes in the camera frame, not what the model needs).
      When R_root = R_x(pi) the two readings coincide.
    * Otherwise, with an SMPL ``model``, everything follows from full_pose and body_shape
      (:func:`op3d.smpl.lbs.pose_condition`).
    Anything else is a :class:`PoseFileError` naming the file and the missing keys.
    """
    full_pose = _full_pose(record, source)
    betas_key = next((key for key in _BETAS_KEYS if key in record), None)
    missing = (["full_pose (or global_orient + body_pose, pred_pose, pose)"] if full_pose is None else []) + \
              (["body_shape (or betas, pred_shape)"] if betas_key is None else [])
    if missing:
        raise _missing_error(source, record, missing)
    betas = record[betas_key]
    if betas.shape != (NUM_BETAS,):
        raise PoseFileError(f"{source}: {betas_key!r} has {betas.shape[0]} shape coefficients, the conditional "
                            f"networks take {NUM_BETAS}")

    if "fk_matrices" in record and "lbs_weights" in record:
        fk, weights = torch.from_numpy(record["fk_matrices"]), torch.from_numpy(record["lbs_weights"])
        root = record["fk_matrices"][0, :3, :3]
        canonical = np.abs(root - _CANONICAL_ROOT).max() < _ROTATION_TOLERANCE
        if not canonical:
            if np.abs(root - full_pose[0]).max() >= _ROTATION_TOLERANCE:
                raise PoseFileError(f"{source}: the root rotation of 'fk_matrices' is neither the canonical "
                                    "diag(1, -1, -1) nor the root of the pose (full_pose[0]), so the frame of "
                                    "fk_matrices is unknown")
            fk = canonical_frame(torch.from_numpy(full_pose[0])) @ fk
        if canonical and "vertices" in record:
            vertices = torch.from_numpy(record["vertices"])
        elif "tpose_vertices" not in record:
            raise _missing_error(source, record, ["tpose_vertices (the shaped rest vertices, to pose with "
                                                  "fk_matrices)"])
        else:
            vertices = skin(torch.from_numpy(record["tpose_vertices"]), weights, fk)
        if vertices.shape[0] != weights.shape[0]:
            raise PoseFileError(f"{source}: {vertices.shape[0]} vertices but lbs_weights for {weights.shape[0]}")
        condition = {"vertices": vertices, "fk_matrices": fk, "lbs_weights": weights}
    elif model is not None:
        condition = pose_condition(model, torch.from_numpy(betas), torch.from_numpy(full_pose))
    else:
        needed = [key for key in ("fk_matrices", "lbs_weights") if key not in record]
        raise _missing_error(source, record, [f"{', '.join(needed)} (or an SMPL body model to compute them from the "
                                              "pose and shape)"])
    condition["full_pose"], condition["body_shape"] = torch.from_numpy(full_pose), torch.from_numpy(betas)
    return {key: condition[key].numpy().astype(np.float32) for key in POSE_CONDITION_KEYS}


def load_pose_condition(path: str | os.PathLike, model: SMPLModel | None = None, person: int = 0,
                        data: bytes | None = None) -> dict[str, np.ndarray]:
    """:func:`read_pose_file`, :func:`pose_record` and :func:`pose_condition_from_record` in one call."""
    source = os.fspath(path)
    return pose_condition_from_record(pose_record(read_pose_file(source, data), source, person), source, model)


def pose_condition_bytes(condition: Mapping[str, np.ndarray], name: str = ".pickle") -> bytes:
    """File content of a pose condition: a plain pickle (protocol 4) of a dict of float32 numpy arrays, which the
    official loader reads too, or an ``.npz`` if ``name`` ends with .npz."""
    missing = [key for key in POSE_CONDITION_KEYS if key not in condition]
    if missing:
        raise ValueError(f"pose condition: missing {', '.join(missing)}")
    arrays = {key: np.asarray(condition[key], np.float32) for key in POSE_CONDITION_KEYS}
    if name.lower().endswith(".npz"):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()
    return pickle.dumps(arrays, protocol=4)


def save_pose_condition(condition: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write :func:`pose_condition_bytes` to ``path`` atomically."""
    with atomic_output(path) as tmp, open(tmp, "wb") as file:
        file.write(pose_condition_bytes(condition, os.fspath(path)))
