"""The SMPL body model as plain data, read from the user's own model file; op3d never ships SMPL data.

Two file formats are read, with smplx's array names (``v_template``, ``shapedirs``, ``J_regressor``, ``weights``,
``kintree_table``, ``f``):

* ``SMPL_NEUTRAL.pkl`` as distributed (a Python 2 pickle holding chumpy objects and a scipy sparse joint regressor),
  read **without chumpy** and without executing anything from the file: a restricted unpickler resolves only numpy
  arrays, chumpy ``Ch`` values (the array a ``Ch`` wraps), chumpy ``Select`` / ``Reshape`` / ``Transpose`` of those,
  and scipy ``csc_matrix`` / ``csr_matrix`` (turned into dense arrays). Any other global is refused.
* ``SMPL_NEUTRAL.npz`` (``np.load`` with pickles disabled).

The file is an explicit path, or ``SMPL_NEUTRAL.npz`` / ``SMPL_NEUTRAL.pkl`` in a folder given by a flag or by
``$OP3D_SMPL_DIR`` (also in its ``smpl/`` subfolder, smplx's layout). Pose blend shapes (``posedirs``) are not read:
op3d's canonical frame (spec 4.2) poses the shaped template without them.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import pickle

import numpy as np
import scipy.sparse
import torch

from op3d.safe_pickle import ALLOWED_GLOBALS, AllowListMixin, UnsafePickleError

__all__ = ["SMPL_FILE_NAMES", "SMPL_PICKLE_GLOBALS", "SMPLModel", "SMPLModelError", "find_smpl_file", "load_smpl_model",
           "read_smpl_pickle", "smpl_candidates"]

SMPL_FILE_NAMES = ("SMPL_NEUTRAL.npz", "SMPL_NEUTRAL.pkl")
"""File names looked for in an SMPL folder, in this order."""

NUM_JOINTS = 24
REQUIRED_KEYS = ("v_template", "shapedirs", "J_regressor", "weights", "kintree_table", "f")


class SMPLModelError(ValueError):
    """An SMPL model file is missing keys, has wrongly shaped arrays or cannot be read (the message names the file)."""


@dataclasses.dataclass(frozen=True)
class SMPLModel:
    """SMPL model data (V vertices, 24 joints, B shape directions); float tensors are float64 on the CPU until ``to``.

    ``v_template``: [V, 3] rest vertices; ``shapedirs``: [V, 3, B] shape blend shapes; ``J_regressor``: [24, V]
    (dense); ``weights``: [V, 24] skinning weights; ``parents``: parent joint of each joint, -1 for the root, every
    parent before its child; ``faces``: [F, 3] int64; ``source``: where the data came from (for messages).
    """
    v_template: torch.Tensor
    shapedirs: torch.Tensor
    J_regressor: torch.Tensor
    weights: torch.Tensor
    parents: tuple[int, ...]
    faces: torch.Tensor
    source: str = "<arrays>"

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[-1]

    def to(self, device=None, dtype: torch.dtype | None = None) -> SMPLModel:
        """A copy with the float tensors in ``dtype`` and every tensor on ``device``."""
        floats = {name: getattr(self, name).to(device=device, dtype=dtype)
                  for name in ("v_template", "shapedirs", "J_regressor", "weights")}
        return dataclasses.replace(self, faces=self.faces.to(device), **floats)

    @classmethod
    def from_arrays(cls, arrays: dict, source: str = "<arrays>") -> SMPLModel:
        """Build a model from smplx-named arrays (numpy or nested lists), checking keys, shapes and values.

        Raises :class:`SMPLModelError` naming ``source``, the array and what was expected.
        """
        missing = [key for key in REQUIRED_KEYS if key not in arrays]
        if missing:
            found = ", ".join(sorted(map(str, arrays))) or "nothing"
            raise SMPLModelError(f"{source}: missing {', '.join(missing)} (an SMPL model needs "
                                 f"{', '.join(REQUIRED_KEYS)}; found {found})")
        a = {key: _as_array(arrays[key], key, source) for key in REQUIRED_KEYS}
        num_v = _check_shape(a, "v_template", source, (None, 3))[0]
        num_j = _check_shape(a, "J_regressor", source, (None, num_v), "[joints, V]")[0]
        if num_j != NUM_JOINTS:
            raise SMPLModelError(f"{source}: J_regressor has {num_j} joints, expected {NUM_JOINTS} (SMPL); SMPL-H and "
                                 "SMPL-X model files are not supported")
        _check_shape(a, "shapedirs", source, (num_v, 3, None))
        _check_shape(a, "weights", source, (num_v, NUM_JOINTS))
        _check_shape(a, "kintree_table", source, (2, NUM_JOINTS))
        _check_shape(a, "f", source, (None, 3))
        for key in ("v_template", "shapedirs", "J_regressor", "weights"):
            if not np.issubdtype(a[key].dtype, np.number) or not np.isfinite(a[key]).all():
                raise SMPLModelError(f"{source}: {key} must hold finite numbers (dtype {a[key].dtype})")
        faces = a["f"]
        if not np.issubdtype(faces.dtype, np.integer) or not faces.size or faces.min() < 0 or faces.max() >= num_v:
            found = f"values in [{faces.min()}, {faces.max()}]" if faces.size else "no faces"
            raise SMPLModelError(f"{source}: f must hold triangles of vertex indices in [0, {num_v}), found "
                                 f"{faces.dtype} {found}")
        return cls(v_template=torch.from_numpy(a["v_template"].astype(np.float64)),
                   shapedirs=torch.from_numpy(a["shapedirs"].astype(np.float64)),
                   J_regressor=torch.from_numpy(a["J_regressor"].astype(np.float64)),
                   weights=torch.from_numpy(a["weights"].astype(np.float64)),
                   parents=_parents(a["kintree_table"], source),
                   faces=torch.from_numpy(faces.astype(np.int64)),
                   source=source)


def _as_array(value, key: str, source: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise SMPLModelError(f"{source}: {key} is not an array ({type(value).__name__}: {exc})") from None


def _check_shape(arrays: dict, key: str, source: str, expected: tuple, description: str = "") -> tuple:
    """Shape of ``arrays[key]`` after checking it against ``expected`` (None = any size)."""
    shape = arrays[key].shape
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        text = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise SMPLModelError(f"{source}: {key} has shape {list(shape)}, expected {text} {description}".rstrip())
    return shape


def _parents(kintree_table: np.ndarray, source: str) -> tuple[int, ...]:
    """Parents from SMPL's kinematic tree table (row 0 parents, row 1 joint ids 0..23; the root's parent is -1 or
    4294967295 as in the original file)."""
    if not np.issubdtype(kintree_table.dtype, np.integer) or not (kintree_table[1] == np.arange(NUM_JOINTS)).all():
        raise SMPLModelError(f"{source}: kintree_table row 1 must be the joint ids 0..{NUM_JOINTS - 1}")
    parents = [int(p) for p in kintree_table[0]]
    if any(not 0 <= parents[j] < j for j in range(1, NUM_JOINTS)):
        raise SMPLModelError(f"{source}: kintree_table row 0 must give each joint j >= 1 a parent in [0, j), "
                             f"found {parents}")
    return (-1, *parents[1:])


# ----------------------------------------------------------------------------------------------------------------------
# Finding and reading files.


def smpl_candidates(path: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """The files looked for, in order: ``path`` itself if it is a file (or named ``*.pkl`` / ``*.npz``), else the
    SMPL file names in the folder ``path`` (``$OP3D_SMPL_DIR`` when ``path`` is None) and in its ``smpl/`` subfolder."""
    if path is None:
        if not os.environ.get("OP3D_SMPL_DIR"):
            return []
        path = os.environ["OP3D_SMPL_DIR"]
    path = pathlib.Path(path)
    if path.is_file() or path.suffix in (".pkl", ".npz"):
        return [path]
    return [folder / name for folder in (path, path / "smpl") for name in SMPL_FILE_NAMES]


def find_smpl_file(path: str | os.PathLike | None = None) -> pathlib.Path:
    """The first existing :func:`smpl_candidates` entry; FileNotFoundError saying where it looked otherwise."""
    places = smpl_candidates(path)
    for place in places:
        if place.is_file():
            return place
    where = ", ".join(map(str, places)) if places else "nowhere: no path given and $OP3D_SMPL_DIR is not set"
    raise FileNotFoundError(f"SMPL model not found (looked in {where}); op3d does not ship SMPL data: register at "
                            "https://smpl.is.tue.mpg.de, download the neutral model as SMPL_NEUTRAL.pkl and pass its "
                            "file or folder (or set $OP3D_SMPL_DIR)")


def load_smpl_model(path: str | os.PathLike | None = None) -> SMPLModel:
    """Load the SMPL model found by :func:`find_smpl_file` (a ``.npz`` or a chumpy-era ``.pkl``)."""
    file = find_smpl_file(path)
    source = str(file)
    if file.suffix == ".npz":
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError) as exc:
            raise SMPLModelError(f"{source}: cannot read as .npz ({type(exc).__name__}: {exc})") from None
    else:
        arrays = read_smpl_pickle(file)
        if not isinstance(arrays, dict):
            raise SMPLModelError(f"{source}: expected a pickled dict of arrays, found {type(arrays).__name__}")
    return SMPLModel.from_arrays(arrays, source)


def read_smpl_pickle(path: str | os.PathLike) -> object:
    """Unpickle an SMPL model file (Python 2 era, latin-1 strings) without chumpy and without executing code.

    chumpy objects and scipy sparse matrices come back as numpy arrays. Raises :class:`UnsafePickleError` for any
    global outside the allow-list and :class:`SMPLModelError` for unreadable content.
    """
    try:
        with open(path, "rb") as file:
            loaded = _SMPLUnpickler(file, encoding="latin1").load()
        return _resolve(loaded)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except SMPLModelError as exc:
        raise SMPLModelError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise SMPLModelError(f"{path}: cannot read SMPL pickle ({type(exc).__name__}: {exc})") from None


class _PickledObject:
    """Inert record of a chumpy or scipy object: the pickled class name and state; :func:`_resolve` evaluates it."""
    qualname = ""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{self.qualname}: expected a dict state, got {type(state).__name__}")
        self.state = state


def _record(qualname: str) -> type:
    return type(qualname.rpartition(".")[2], (_PickledObject,), {"qualname": qualname, "__module__": __name__})


def _reconstructor(cls, base, state):
    """Safe stand-in for ``copy_reg._reconstructor`` (protocol 0/1 pickles): only op3d's inert records."""
    if not (isinstance(cls, type) and issubclass(cls, _PickledObject)) or base is not object or state is not None:
        raise UnsafePickleError("copy_reg._reconstructor is allowed only for chumpy/scipy records")
    return cls.__new__(cls)


def _latin1_bytes(text, encoding):
    """Safe stand-in for ``_codecs.encode``, which Python 3 protocol-2 pickles use for bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode is allowed only as encode(str, 'latin1')")
    return text.encode("latin-1")


_CHUMPY = ("chumpy.ch.Ch", "chumpy.reordering.Select", "chumpy.reordering.Reshape", "chumpy.reordering.Transpose")
_SPARSE = ("scipy.sparse.csc.csc_matrix", "scipy.sparse._csc.csc_matrix", "scipy.sparse.csr.csr_matrix",
           "scipy.sparse._csr.csr_matrix")
_NUMPY = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype", "numpy.ndarray",
          "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")

SMPL_PICKLE_GLOBALS = {
    **{name: ALLOWED_GLOBALS[name] for name in _NUMPY},
    **{name: _record(name) for name in _CHUMPY + _SPARSE},
    "copy_reg._reconstructor": _reconstructor,
    "copyreg._reconstructor": _reconstructor,
    "__builtin__.object": object,
    "builtins.object": object,
    "_codecs.encode": _latin1_bytes,
}
"""Every global an SMPL pickle may reference and what it resolves to; all others are refused."""


class _SMPLUnpickler(AllowListMixin, pickle.Unpickler):
    allowed = SMPL_PICKLE_GLOBALS
    refusal = "is not allowed in an SMPL model file"


def _resolve(value):
    """Replace every record inside ``value`` (dicts, lists, tuples) by the numpy array it stands for."""
    if isinstance(value, dict):
        return {key: _resolve(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(item) for item in value)
    if not isinstance(value, _PickledObject):
        return value
    state, kind = getattr(value, "state", {}), value.qualname.rpartition(".")[2]

    def need(*keys):
        if any(key not in state for key in keys):
            raise SMPLModelError(f"{value.qualname} object without {'/'.join(keys)} (has {sorted(state)}): cannot "
                                 "evaluate it without chumpy; convert the file to .npz with chumpy installed")
        return [_resolve(state[key]) for key in keys]

    if kind == "Ch":
        return np.asarray(need("x")[0])
    if kind == "Select":
        a, idxs = need("a", "idxs")
        out = np.asarray(a).ravel()[np.asarray(idxs)]
        return out.reshape(state["preferred_shape"]) if "preferred_shape" in state else out
    if kind == "Reshape":
        a, shape = need("a", "newshape")
        return np.asarray(a).reshape(shape)
    if kind == "Transpose":
        a, axes = need("a", "axes")
        return np.transpose(np.asarray(a), axes)
    data, indices, indptr, shape = need("data", "indices", "indptr", "_shape" if "_shape" in state else "shape")
    matrix_class = scipy.sparse.csc_matrix if kind == "csc_matrix" else scipy.sparse.csr_matrix
    return matrix_class((np.asarray(data), np.asarray(indices), np.asarray(indptr)), shape=shape).toarray()
