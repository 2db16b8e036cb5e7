"""Read official OP3D / EG3D snapshot pickles without executing any code from them.

Official snapshots are written with the "persistence" mechanism: every persistent network class is pickled as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` carries the full Python source of the
defining module. The official loader executes that source. This module's one job is to read such files with a
restricted unpickler instead: only the globals listed in :data:`ALLOWED_GLOBALS` are resolved, the embedded source is
ignored (never compiled, executed or imported), and network objects come back as inert records
(:class:`PersistentRecord`, :class:`GlobalRecord`) holding their pickled state (``_init_kwargs``, ``_parameters``,
``_buffers``, ``_modules``, plain attributes). Tensors are rebuilt as real ``torch.Tensor`` objects.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import types
import warnings

import numpy as np
import torch
import torch._utils

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

__all__ = ["UnsafePickleError", "EasyDict", "PersistentRecord", "GlobalRecord", "NetworkRecord", "ALLOWED_GLOBALS",
           "load_pickle"]


class EasyDict(dict):
    """A dict whose keys are also attributes: what official pickles store constructor arguments in, under the name
    ``dnnlib.util.EasyDict``. That name resolves here, so reading a pickle needs no importable ``dnnlib`` package."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


class UnsafePickleError(pickle.UnpicklingError):
    """Raised when a pickle asks for something outside op3d's allow-list (a global or a persistent id)."""


class PersistentRecord:
    """Inert stand-in for an object of an official ``@persistent_class`` (e.g. ``TriMultiPlaneGenerator``).

    Attributes: ``class_name`` (bare class name, the defining module is not recorded by the format), ``state`` (the
    object's pickled ``__dict__``), ``version`` (persistence format version, 6 in known files) and
    ``module_src_present`` (whether the pickle carried embedded source; it is never used).
    """

    def __init__(self, class_name: str, state: dict, version=None, module_src_present: bool = False):
        self.class_name = class_name
        self.state = state
        self.version = version
        self.module_src_present = module_src_present

    def __repr__(self):
        return f"PersistentRecord({self.class_name!r}, state keys={sorted(self.state)})"


class GlobalRecord:
    """Inert stand-in for a plain (non-persistent) module object pickled by global name, e.g. ``OSGDecoder``.

    ``qualname`` is the full pickled name (``'training.orthoplanes.OSGDecoder'``), ``state`` the dict given to BUILD.
    Each allowed name gets its own subclass (see :func:`_record_class`), so ``type(obj)`` also tells them apart.
    """

    qualname: str = ""

    def __new__(cls, *args, **kwargs):  # constructor arguments from NEWOBJ are ignored
        self = super().__new__(cls)
        self.state = {}
        return self

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise ValueError(f"{self.qualname}: expected a dict state, got {type(state).__name__}")
        self.state.update(state)

    def __repr__(self):
        return f"GlobalRecord({self.qualname!r}, state keys={sorted(self.state)})"


class NetworkRecord:
    """One network in an op3d snapshot: op3d class name, constructor kwargs, tensors by official name, plain
    attributes (e.g. rendering_kwargs) and the train/eval flag. Inert data; op3d.checkpoints builds the module."""

    def __init__(self, class_name: str, init_kwargs: dict, state_dict: dict, attributes: dict, training: bool):
        self.class_name = class_name
        self.init_kwargs = init_kwargs
        self.state_dict = state_dict
        self.attributes = attributes
        self.training = training

    def __reduce__(self):
        return NetworkRecord, (self.class_name, self.init_kwargs, self.state_dict, self.attributes, self.training)

    def __repr__(self):
        return f"NetworkRecord({self.class_name!r}, {len(self.state_dict)} tensors)"


_record_classes: dict[str, type] = {}


def _record_class(qualname: str) -> type:
    """Return the (cached) :class:`GlobalRecord` subclass standing in for ``qualname``."""
    if qualname not in _record_classes:
        name = qualname.rpartition(".")[2]
        _record_classes[qualname] = type(name, (GlobalRecord,), {"qualname": qualname, "__module__": __name__})
    return _record_classes[qualname]


def _reconstruct_persistent(meta):
    """Replacement for ``torch_utils.persistence._reconstruct_persistent_obj``: wrap ``meta`` without running it."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError("persistent object meta must be a dict with type 'class'")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise UnsafePickleError("persistent object meta needs a str 'class_name' and a dict 'state'")
    return PersistentRecord(class_name, state, meta.get("version"), bool(meta.get("module_src")))


def _load_storage_bytes(data):
    """Replacement for ``torch.storage._load_from_bytes``: read one storage from a legacy ``torch.save`` stream.

    The blob is read with ``torch.load(weights_only=True)`` (torch's own restricted unpickler, which handles the
    legacy non-zip format) and mapped to the CPU.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"storage blob must be bytes, got {type(data).__name__}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.TypedStorage):
        raise UnsafePickleError(f"storage blob holds a {type(storage).__name__}, expected a torch storage")
    return storage


def _numpy_scalar(dtype, data):
    """Replacement for ``numpy.core.multiarray.scalar``: build a numpy scalar from its dtype and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"numpy scalar needs a non-object dtype, got {dtype!r}")
    if isinstance(data, str):  # Python 2 era pickles store the bytes as a latin-1 str
        data = data.encode("latin-1")
    return np.frombuffer(data, dtype)[0]


_PLAIN_TRAINING_MODULES = (
    "training.orthoplanes", "training.trimultiplane", "training.trimultiplane_large", "training.triplane",
    "training.kaolin_version", "training.orthoplanes_smpl_cond", "training.volumetric_rendering.renderer",
    "training.volumetric_rendering.ray_marcher", "training.volumetric_rendering.ray_sampler",
    "training.superresolution", "training.networks_stylegan2", "training.networks_stylegan2_origin",
    "training.network_stylegan2_multiplane", "training.dual_discriminator", "training.augment",
)
_PLAIN_TRAINING_CLASSES = (
    "OSGDecoder", "TriImportanceRenderer", "ImportanceRenderer", "MipRayMarcher2", "RaySampler",
    "Sdf2DensityRayMarcher", "DeformationDecoder", "LaplaceDensity", "Density", "BiImportanceRenderer",
    "BImportanceRenderer",
)
_PLAIN_TORCH_NAMES = (
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict", "torch.nn.modules.activation.Softplus",
    "torch.nn.modules.activation.LeakyReLU", "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.activation.Sigmoid", "torch.nn.modules.linear.Identity",
)
_STORAGE_NAMES = ("Float", "Half", "Double", "Long", "Int", "Bool", "Byte", "BFloat16")

_plain_names = [f"{m}.{c}" for m in _PLAIN_TRAINING_MODULES for c in _PLAIN_TRAINING_CLASSES]
_plain_names += ["training.augment.AugmentPipe", *_PLAIN_TORCH_NAMES]

ALLOWED_GLOBALS: types.MappingProxyType = types.MappingProxyType({
    # persistence: inert record, embedded source ignored
    "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent,
    # plain module classes: GlobalRecord stubs, never the real classes
    **{name: _record_class(name) for name in _plain_names},
    # containers
    "dnnlib.util.EasyDict": EasyDict,
    "dnnlib.EasyDict": EasyDict,
    "op3d.safe_pickle.EasyDict": EasyDict,
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    # numpy
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "numpy.dtype": np.dtype,
    "numpy.ndarray": np.ndarray,
    "numpy.core.multiarray._reconstruct": _np_reconstruct,
    "numpy._core.multiarray._reconstruct": _np_reconstruct,
    # torch tensors and storages
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
    "torch.Size": torch.Size,
    **{f"torch.{n}Storage": getattr(torch, f"{n}Storage") for n in _STORAGE_NAMES},
    "torch.storage._load_from_bytes": _load_storage_bytes,
    # op3d's own snapshots
    "op3d.safe_pickle.NetworkRecord": NetworkRecord,
})
"""Every global a pickle may reference (``'module.name'``) and the object it resolves to; all others are refused."""


class AllowListMixin:
    """The two hooks of a restricted unpickler: only the globals in `allowed` ('module.name' -> object) resolve,
    persistent ids never do. `refusal` says where the name is missing ("is not allowed in a pose file"), `hint`
    is added to that error. Mix in before pickle.Unpickler (or the pure-Python pickle._Unpickler)."""

    allowed: dict = {}
    refusal = "is not on op3d's allow-list"
    hint = ""

    def find_class(self, module, name):
        try:
            return self.allowed[f"{module}.{name}"]
        except KeyError:
            raise UnsafePickleError(
                f"global '{module}.{name}' {self.refusal} and was not executed{self.hint}") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"persistent ids {self.refusal.replace('is ', 'are ', 1)} and were not resolved")


class _RestrictedUnpickler(AllowListMixin, pickle.Unpickler):
    allowed = ALLOWED_GLOBALS


def load_pickle(path_or_file: str | os.PathLike | io.BufferedIOBase) -> object:
    """Load an official snapshot pickle from a path or binary file object, executing no code from it.

    Returns the unpickled object (for snapshots a dict such as ``{'G_ema': PersistentRecord, ...}``).
    Raises ``FileNotFoundError`` for a missing path, :class:`UnsafePickleError` when the file references anything
    outside :data:`ALLOWED_GLOBALS`, and ``pickle.UnpicklingError`` for any other unreadable content; the messages
    name the file (its path, the file object's ``name``, or ``'<stream>'``).
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        path = os.fspath(path_or_file)
        with open(path, "rb") as file:
            return _load(file, path)
    return _load(path_or_file, getattr(path_or_file, "name", "<stream>"))


def _load(file, source) -> object:
    try:
        return _RestrictedUnpickler(file).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{source}: {exc}") from None
    except Exception as exc:
        raise pickle.UnpicklingError(f"{source}: cannot read pickle ({type(exc).__name__}: {exc})") from exc
