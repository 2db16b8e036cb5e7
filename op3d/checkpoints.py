"""Network checkpoints: official OP3D / EG3D snapshot pickles (read without executing code), op3d's own
snapshots in the same dict-of-modules layout, and plain weights in safetensors under the official names.

    snapshot = op3d.load_network_pkl('op3d-ffhq-512-128-withc-7plane.pkl')
    G = snapshot['G_ema']          # an op3d OrthoPlanesGenerator, eval mode, on the CPU

Official persistent objects are rebuilt from their pickled constructor arguments (`_init_kwargs`) as op3d modules,
then given their tensors by name (strict: a missing or unexpected tensor is an error naming the file).
"""

from __future__ import annotations

import json
import os
import pickle

import torch
from torch import nn

from op3d.atomic import atomic_output
from op3d.augmentation import AugmentPipe
from op3d.networks.conditional import ConditionalOrthoPlanesGenerator
from op3d.networks.discriminator import DualDiscriminator, DualDiscriminatorWithWarping
from op3d.networks.generator import OrthoPlanesGenerator, TriPlaneGenerator
from op3d.safe_pickle import GlobalRecord, NetworkRecord, PersistentRecord, UnsafePickleError, load_pickle

SNAPSHOT_NETWORK_KEYS = ("G", "D", "G_ema")
# Plain attributes of generators that live in the pickled state, not in the constructor arguments.
_GENERATOR_ATTRIBUTES = ("neural_rendering_resolution", "rendering_kwargs")


class CheckpointError(ValueError):
    """A checkpoint that cannot be turned into op3d networks; the message names the file and the problem."""


# op3d network classes by the name stored in op3d snapshots; the official names map onto the same classes.
NETWORK_CLASSES = {cls.__name__: cls for cls in (OrthoPlanesGenerator, TriPlaneGenerator, DualDiscriminator,
                                                  ConditionalOrthoPlanesGenerator, DualDiscriminatorWithWarping,
                                                  AugmentPipe)}


def flatten_record_state(record, prefix: str = "") -> dict:
    """All persistent parameters and buffers of a pickled module tree, by official dotted name."""
    state = record.state
    out = {}
    skip = set(state.get("_non_persistent_buffers_set", ()))
    for name, tensor in state.get("_parameters", {}).items():
        if tensor is not None:
            out[prefix + name] = tensor
    for name, tensor in state.get("_buffers", {}).items():
        if tensor is not None and name not in skip:
            out[prefix + name] = tensor
    for name, child in state.get("_modules", {}).items():
        if child is not None:
            out.update(flatten_record_state(child, prefix + name + "."))
    return out


def _child(record, *path):
    for name in path:
        record = record.state.get("_modules", {}).get(name) if record is not None else None
    return record


def _official_generator_kwargs(record, source: str) -> tuple[type, dict]:
    """Constructor arguments of the op3d class for an official generator record."""
    state = record.state
    kwargs = dict(state.get("_init_kwargs", {}))
    if state.get("_init_args"):
        raise CheckpointError(f"{source}: {record.class_name} was built with positional arguments "
                              f"{state['_init_args']!r}; expected keyword arguments only")
    if record.class_name == "TriMultiPlaneGenerator":
        if _child(record, "density_func") is not None:
            return ConditionalOrthoPlanesGenerator, _official_conditional_kwargs(record, kwargs, source)
        # Older official modules (training.trimultiplane[_large]) hard-coded K and L instead of taking arguments:
        # the pickled attributes say what the network really is.
        kwargs.pop("planes", None)
        kwargs["per_dir_plane_number"] = state.get("n_planes_per_axis", kwargs.get("per_dir_plane_number"))
        kwargs["fourier_L"] = state.get("L", kwargs.get("fourier_L"))
        if kwargs["per_dir_plane_number"] is None or kwargs["fourier_L"] is None:
            raise CheckpointError(f"{source}: the OrthoPlanes generator records neither n_planes_per_axis/L "
                                  "attributes nor per_dir_plane_number/fourier_L arguments")
        return OrthoPlanesGenerator, kwargs
    if record.class_name == "TriPlaneGenerator":
        # EG3D's class and OP3D's "large tri-plane" baseline share the name and the constructor arguments;
        # their decoders tell them apart (32 -> 64 -> 33 vs 128 -> 128 -> 128 -> 128 -> 33).
        decoder = flatten_record_state(_child(record, "decoder"))
        fc_weights = [k for k in decoder if k.startswith("net.") and k.endswith(".weight")]
        hidden, plane_channels = decoder["net.0.weight"].shape
        kwargs.update(plane_channels=plane_channels, decoder_hidden_dim=hidden,
                      decoder_hidden_layers=len(fc_weights) - 1)
        return TriPlaneGenerator, kwargs
    raise CheckpointError(f"{source}: unknown generator class {record.class_name!r}")


def _official_conditional_kwargs(record, kwargs: dict, source: str) -> dict:
    """The SMPL-conditional generator (training.kaolin_version / orthoplanes_smpl_cond): K from the pickled
    attribute, and the two non-state values the official objects carry as plain attributes: the body mesh faces
    (renderer.face_idx) and the density's beta_min."""
    renderer, density = _child(record, "renderer"), _child(record, "density_func")
    faces = renderer.state.get("face_idx") if renderer is not None else None
    if faces is None:
        raise CheckpointError(f"{source}: the conditional generator's renderer carries no face_idx (body mesh faces)")
    kwargs["planes"] = record.state.get("n_planes_per_axis", kwargs.get("planes", 9))
    kwargs["faces"] = faces
    if "beta_min" in density.state:
        kwargs["beta_min"] = float(density.state["beta_min"])
    return kwargs


def network_from_record(record, source: str) -> nn.Module:
    """Build the op3d module for an official persistent network record and load its tensors by name."""
    if not isinstance(record, PersistentRecord):
        raise CheckpointError(f"{source}: expected a network object, found {type(record).__name__}")
    if record.class_name == "DualDiscriminator":
        cls, kwargs = DualDiscriminator, dict(record.state.get("_init_kwargs", {}))
    elif record.class_name == "DualDiscriminatorWithWarping":
        cls, kwargs = DualDiscriminatorWithWarping, dict(record.state.get("_init_kwargs", {}))
    else:
        cls, kwargs = _official_generator_kwargs(record, source)
    try:
        module = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: cannot build {record.class_name} from its pickled arguments: {err}") from err
    attributes = {k: record.state[k] for k in _GENERATOR_ATTRIBUTES if k in record.state}
    if "rendering_kwargs" in attributes:
        attributes["rendering_kwargs"] = dict(attributes["rendering_kwargs"])
    return _finish(module, flatten_record_state(record), attributes, bool(record.state.get("training", False)),
                   source)


def _finish(module: nn.Module, state_dict: dict, attributes: dict, training: bool, source: str) -> nn.Module:
    for name, value in attributes.items():
        setattr(module, name, value)
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"{source}: {type(module).__name__} does not match the checkpoint: {err}") from err
    problems = []
    if result.missing_keys:
        problems.append(f"missing tensors {result.missing_keys}")
    if result.unexpected_keys:
        problems.append(f"unexpected tensors {result.unexpected_keys}")
    if problems:
        raise CheckpointError(f"{source}: {type(module).__name__} does not match the checkpoint: "
                              + "; ".join(problems))
    module.train(training)
    module.requires_grad_(False)
    return module


# --- op3d's own snapshots ------------------------------------------------------------------------------------------

def _network_payload(module: nn.Module) -> tuple:
    attributes = {}
    if hasattr(module, "settings"):
        attributes = {"neural_rendering_resolution": module.neural_rendering_resolution,
                      "rendering_kwargs": module.settings.to_kwargs()}
    return (type(module).__name__, dict(module.init_kwargs), {k: v.detach().cpu() for k, v in
                                                                 module.state_dict().items()},
            attributes, module.training)


class _SnapshotPickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, nn.Module) and type(obj).__name__ in NETWORK_CLASSES:
            return NetworkRecord, _network_payload(obj)
        if isinstance(obj, nn.Module):
            raise pickle.PicklingError(f"cannot save {type(obj).__name__}: only {sorted(NETWORK_CLASSES)} are "
                                       "snapshot networks")
        return NotImplemented


def save_network_pkl(path: str | os.PathLike, snapshot: dict) -> None:
    """Write a snapshot dict (e.g. G, D, G_ema, training_set_kwargs) atomically (temp file + rename).
    Networks are stored as constructor kwargs + tensors, so loading never executes code."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        _SnapshotPickler(f, protocol=4).dump(dict(snapshot))


def _network_from_op3d_record(record: NetworkRecord, source: str) -> nn.Module:
    if record.class_name not in NETWORK_CLASSES:
        raise CheckpointError(f"{source}: unknown op3d network class {record.class_name!r}")
    try:
        module = NETWORK_CLASSES[record.class_name](**record.init_kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: cannot build {record.class_name}: {err}") from err
    return _finish(module, record.state_dict, record.attributes, record.training, source)


# --- loading -------------------------------------------------------------------------------------------------------

def _convert(value, source: str):
    if isinstance(value, PersistentRecord):
        return network_from_record(value, source)
    if isinstance(value, NetworkRecord):
        return _network_from_op3d_record(value, source)
    return value


def load_network_pkl(path_or_file, device: str | torch.device | None = None) -> dict:
    """Load an official or op3d snapshot pickle without executing code from it.

    Returns a dict with 'G_ema' and, when the file has them, 'G', 'D', 'training_set_kwargs' (a plain dict or
    None) and 'augment_pipe' (None, op3d's AugmentPipe for op3d snapshots, or an inert record for official ones:
    their filter-bank buffers differ from op3d's; only their p carries over).
    Networks are op3d modules in the pickled train/eval mode with requires_grad False, moved to `device`."""
    source = os.fspath(path_or_file) if isinstance(path_or_file, (str, os.PathLike)) else \
        getattr(path_or_file, "name", "<stream>")
    data = load_pickle(path_or_file)
    if not isinstance(data, dict) or "G_ema" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{source}: expected a snapshot dict with a 'G_ema' entry, found {found}")
    # Networks become op3d modules, and so does op3d's own augment_pipe; an official augment_pipe stays an inert
    # record (its filter-bank buffers are not op3d's).
    out = {k: _convert(v, source) if k in SNAPSHOT_NETWORK_KEYS or isinstance(v, NetworkRecord) else v
           for k, v in data.items()}
    for key in ("G", "D", "training_set_kwargs", "augment_pipe"):
        out.setdefault(key, None)
    if out["training_set_kwargs"] is not None:
        out["training_set_kwargs"] = dict(out["training_set_kwargs"])
    if device is not None:
        for key in (*SNAPSHOT_NETWORK_KEYS, "augment_pipe"):
            if isinstance(out.get(key), nn.Module):
                out[key] = out[key].to(device)
    return out


# --- plain weights -------------------------------------------------------------------------------------------------

def export_safetensors(module: nn.Module, path: str | os.PathLike) -> None:
    """Save a network's tensors under their official names, with its class, constructor kwargs and attributes
    as JSON metadata, in the safetensors format."""
    from safetensors.torch import save_file

    class_name, init_kwargs, state_dict, attributes, _ = _network_payload(module)
    metadata = {"op3d_class": class_name, "init_kwargs": json.dumps(init_kwargs),
                "attributes": json.dumps(attributes)}
    save_file({k: v.contiguous() for k, v in state_dict.items()}, os.fspath(path), metadata=metadata)


def import_safetensors(path: str | os.PathLike, module: nn.Module | None = None) -> nn.Module:
    """Load a safetensors file written by `export_safetensors`, or load plain official-name weights into a given
    `module` (strictly: every tensor must match)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    source = os.fspath(path)
    state_dict = load_file(source)
    with safe_open(source, framework="pt") as f:
        metadata = f.metadata() or {}
    if module is None:
        if "op3d_class" not in metadata:
            raise CheckpointError(f"{source}: no op3d metadata (op3d_class, init_kwargs); pass the module to load "
                                  "the weights into")
        record = NetworkRecord(metadata["op3d_class"], json.loads(metadata["init_kwargs"]), state_dict,
                                   json.loads(metadata.get("attributes", "{}")), False)
        return _network_from_op3d_record(record, source)
    return _finish(module, state_dict, {}, module.training, source)


__all__ = ["CheckpointError", "load_network_pkl", "save_network_pkl", "export_safetensors", "import_safetensors",
           "network_from_record", "flatten_record_state", "UnsafePickleError", "GlobalRecord"]
