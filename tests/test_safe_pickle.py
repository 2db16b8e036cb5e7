"""Tests for op3d.safe_pickle: official snapshots load as inert records, and nothing in a pickle gets executed."""

import collections
import io
import json
import pickle
import re
import shlex
import struct
import sys
import types

import numpy as np
import pytest
import torch

import dnnlib
import dnnlib.util
from op3d.safe_pickle import ALLOWED_GLOBALS, GlobalRecord, PersistentRecord, UnsafePickleError, load_pickle

# ----------------------------------------------------------------------------------------------------------------------
# Helpers: hand-written opcode streams and pickles that reference chosen global names.


def _str(s: str) -> bytes:
    """BINUNICODE opcode pushing ``s``."""
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _stack_global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol-4 stream calling ``module.name(arg)`` via STACK_GLOBAL + REDUCE."""
    return b"\x80\x04" + _str(module) + _str(name) + b"\x93" + _str(arg) + b"\x85R."


def _system_payload(sentinel) -> bytes:
    """Protocol-0 stream calling ``os.system('touch <sentinel>')`` via the GLOBAL opcode."""
    return b"cos\nsystem\n(V" + f"touch {shlex.quote(str(sentinel))}".encode() + b"\ntR."


def _eval_payload(sentinel) -> bytes:
    return _stack_global_call("builtins", "eval", f"open({str(sentinel)!r}, 'w').close()")


class _Reduces:
    """Pickles as ``fn(*args)``."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _dumps_as(obj, names: dict, protocol=4) -> bytes:
    """Pickle ``obj`` while each object in ``names`` is importable under its dotted name (during the dump only)."""
    saved = {target: (target.__module__, target.__qualname__) for target in names.values()}
    with pytest.MonkeyPatch.context() as m:
        created = {}
        try:
            for qualname, target in names.items():
                module, _, name = qualname.rpartition(".")
                parts = module.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent not in sys.modules:
                        m.setitem(sys.modules, parent, types.ModuleType(parent))
                if module not in created:
                    created[module] = types.ModuleType(module)
                    m.setitem(sys.modules, module, created[module])
                setattr(created[module], name, target)
                target.__module__, target.__qualname__ = module, name
            return pickle.dumps(obj, protocol=protocol)
        finally:
            for target, (module, qualname) in saved.items():
                target.__module__, target.__qualname__ = module, qualname


def _fake_reconstruct(meta):
    raise AssertionError("only used to write pickles")


def _persistent_pickle(meta) -> bytes:
    return _dumps_as({"G_ema": _Reduces(_fake_reconstruct, (meta,))},
                     {"torch_utils.persistence._reconstruct_persistent_obj": _fake_reconstruct})


def _write(tmp_path, data: bytes, name="x.pkl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Refusals.


@pytest.mark.parametrize("make_payload, global_name",
                         [(_system_payload, "os.system"), (_eval_payload, "builtins.eval")])
def test_code_execution_payload_is_refused(tmp_path, make_payload, global_name):
    # Control: the stock unpickler really runs this payload.
    control = tmp_path / "control"
    pickle.loads(make_payload(control))
    assert control.exists()

    sentinel = tmp_path / "sentinel"
    path = _write(tmp_path, make_payload(sentinel))
    with pytest.raises(UnsafePickleError) as info:
        load_pickle(path)
    message = str(info.value)
    assert global_name in message and str(path) in message
    assert "allow-list" in message and "not executed" in message
    assert not sentinel.exists()


@pytest.mark.parametrize("global_name", [
    "os.system", "posix.system", "builtins.exec", "builtins.getattr", "builtins.__import__", "__builtin__.eval",
    "subprocess.Popen", "copyreg._reconstructor", "_codecs.encode", "torch.load", "numpy.load",
    "torch_utils.persistence.persistent_class", "torch_utils.persistence._reconstruct_persistent_obj_v2",
    "training.networks_stylegan2.FullyConnectedLayer", "training.evil.OSGDecoder", "training.orthoplanes.Evil",
    "torch.nn.modules.linear.Linear", "dnnlib.util.call_func_by_name",
])
def test_unlisted_global_is_refused(global_name):
    module, _, name = global_name.rpartition(".")
    with pytest.raises(UnsafePickleError, match=re.escape(f"'{global_name}'")) as info:
        load_pickle(io.BytesIO(f"c{module}\n{name}\n.".encode()))
    assert "<stream>" in str(info.value)


@pytest.mark.parametrize("stream", [b"Pabc\n.", b"\x80\x04" + _str("abc") + b"Q."])
def test_persistent_id_is_refused(stream):
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_pickle(io.BytesIO(stream))


def test_malicious_storage_blob_is_refused(tmp_path):
    sentinel = tmp_path / "sentinel"
    blob = _system_payload(sentinel)
    outer = b"\x80\x04" + _str("torch.storage") + _str("_load_from_bytes") + b"\x93"
    outer += b"B" + struct.pack("<I", len(blob)) + blob + b"\x85R."
    path = _write(tmp_path, outer)
    with pytest.raises(pickle.UnpicklingError, match=re.escape(str(path))):
        load_pickle(path)
    assert not sentinel.exists()


def test_persistent_source_is_never_executed(tmp_path):
    sentinel = tmp_path / "sentinel"
    meta = {"type": "class", "version": 6, "class_name": "Evil", "state": {"x": 1, "_modules": {}},
            "module_src": f"open({str(sentinel)!r}, 'w').close()\nclass Evil: pass\n"}
    loaded = load_pickle(_write(tmp_path, _persistent_pickle(meta)))
    record = loaded["G_ema"]
    assert isinstance(record, PersistentRecord)
    assert (record.class_name, record.state, record.version) == ("Evil", {"x": 1, "_modules": {}}, 6)
    assert record.module_src_present is True
    assert not sentinel.exists()


def test_persistent_record_without_source():
    meta = {"type": "class", "version": 6, "class_name": "C", "state": {}, "module_src": None}
    assert load_pickle(io.BytesIO(_persistent_pickle(meta)))["G_ema"].module_src_present is False


@pytest.mark.parametrize("meta", [
    [1, 2],
    {"type": "function", "class_name": "C", "state": {}},
    {"type": "class", "state": {}},
    {"type": "class", "class_name": 3, "state": {}},
    {"type": "class", "class_name": "C", "state": [("a", 1)]},
])
def test_malformed_persistent_meta_is_refused(tmp_path, meta):
    path = _write(tmp_path, _persistent_pickle(meta))
    with pytest.raises(UnsafePickleError, match=re.escape(str(path))):
        load_pickle(path)


# ----------------------------------------------------------------------------------------------------------------------
# Allowed content, without fixtures.


def test_plain_globals_become_global_records():
    class Decoder:
        pass

    class Sampler:
        __slots__ = ("depth", "__dict__")

    decoder, sampler = Decoder(), Sampler()
    decoder.hidden_dim = 64
    decoder.net = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Softplus(beta=2.0))
    sampler.depth, sampler.mode = 48, "stratified"
    data = _dumps_as({"decoder": decoder, "sampler": sampler, "again": decoder},
                     {"training.orthoplanes.OSGDecoder": Decoder,
                      "training.volumetric_rendering.ray_sampler.RaySampler": Sampler})
    loaded = load_pickle(io.BytesIO(data))

    dec = loaded["decoder"]
    assert isinstance(dec, GlobalRecord) and dec.qualname == "training.orthoplanes.OSGDecoder"
    assert type(dec) is ALLOWED_GLOBALS["training.orthoplanes.OSGDecoder"]
    assert loaded["again"] is dec
    assert dec.state["hidden_dim"] == 64
    net = dec.state["net"]
    assert net.qualname == "torch.nn.modules.container.Sequential"
    assert not isinstance(net, torch.nn.Module)
    softplus = net.state["_modules"]["1"]
    assert softplus.qualname == "torch.nn.modules.activation.Softplus" and softplus.state["beta"] == 2.0

    smp = loaded["sampler"]
    assert smp.qualname == "training.volumetric_rendering.ray_sampler.RaySampler"
    assert smp.state == {"depth": 48, "mode": "stratified"}  # (dict, slots) BUILD state merged


def test_allow_list_maps_module_classes_to_stubs():
    for name, target in ALLOWED_GLOBALS.items():
        if name.startswith(("training.", "torch.nn.")):
            assert isinstance(target, type) and issubclass(target, GlobalRecord), name
            assert target.qualname == name
        assert not (isinstance(target, type) and issubclass(target, torch.nn.Module)), name
    assert "training.kaolin_version.LaplaceDensity" in ALLOWED_GLOBALS
    assert "training.augment.AugmentPipe" in ALLOWED_GLOBALS
    assert "training.augment.OSGDecoder" in ALLOWED_GLOBALS
    assert ALLOWED_GLOBALS["dnnlib.EasyDict"] is dnnlib.util.EasyDict is dnnlib.EasyDict


def test_tensors_arrays_and_containers_round_trip():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    original = {
        "view": base[:, 1:3],  # non-contiguous view with a storage offset
        "half": torch.linspace(0, 1, 5, dtype=torch.float16),
        "long": torch.tensor([[1, -2]], dtype=torch.int64),
        "bool": torch.tensor([True, False]),
        "param": torch.nn.Parameter(torch.ones(2, 3)),
        "frozen": torch.nn.Parameter(torch.zeros(1), requires_grad=False),
        "np_scalar": np.float64(0.044194173824159216),
        "np_array": np.arange(6, dtype=np.int16).reshape(2, 3),
        "easy": dnnlib.EasyDict(num_layers=2, nested=dnnlib.EasyDict(a=[1, 2])),
        "ordered": collections.OrderedDict(b=1, a=2),
        "sets": ({1, 2}, frozenset({"x"})),
    }
    data = pickle.dumps(original, protocol=4)
    assert b"_load_from_bytes" in data  # the storages travel as legacy torch.save blobs
    loaded = load_pickle(io.BytesIO(data))

    for key in ("view", "half", "long", "bool"):
        assert type(loaded[key]) is torch.Tensor and loaded[key].dtype == original[key].dtype
        assert torch.equal(loaded[key], original[key])
    assert loaded["view"].stride() == (4, 1) and loaded["view"].storage_offset() == 1
    for key in ("param", "frozen"):
        assert isinstance(loaded[key], torch.nn.Parameter)
        assert torch.equal(loaded[key], original[key])
        assert loaded[key].requires_grad == original[key].requires_grad
    assert type(loaded["np_scalar"]) is np.float64 and loaded["np_scalar"] == original["np_scalar"]
    np.testing.assert_array_equal(loaded["np_array"], original["np_array"])
    assert loaded["np_array"].dtype == np.int16
    assert type(loaded["easy"]) is dnnlib.util.EasyDict and loaded["easy"].nested.a == [1, 2]
    assert type(loaded["ordered"]) is collections.OrderedDict and list(loaded["ordered"]) == ["b", "a"]
    assert loaded["sets"] == original["sets"]


def test_numpy1_scalar_name_is_read():
    def scalar(dtype, data):
        raise AssertionError("only used to write pickles")

    value = np.float64(1.4142135623730951)
    data = _dumps_as(_Reduces(scalar, (np.dtype("f8"), value.tobytes())), {"numpy.core.multiarray.scalar": scalar})
    assert b"numpy.core.multiarray" in data
    loaded = load_pickle(io.BytesIO(data))
    assert type(loaded) is np.float64 and loaded == value


def test_object_dtype_scalar_is_refused():
    def scalar(dtype, data):
        raise AssertionError("only used to write pickles")

    data = _dumps_as(_Reduces(scalar, (np.dtype(object), 1)), {"numpy._core.multiarray.scalar": scalar})
    with pytest.raises(UnsafePickleError, match="object"):
        load_pickle(io.BytesIO(data))


def test_easydict_attribute_access():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {"a": 1, "b": 2} and d.a == 1
    del d.a
    assert d == {"b": 2}
    with pytest.raises(AttributeError):
        d.missing
    with pytest.raises(AttributeError):
        del d.missing


# ----------------------------------------------------------------------------------------------------------------------
# File handling.


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pkl"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_pickle(path)
    with pytest.raises(FileNotFoundError):
        load_pickle(str(path))


@pytest.mark.parametrize("content", [b"hello, this is not a pickle\n", b"", pickle.dumps({"a": [1, 2, 3]})[:-5]])
def test_unreadable_file_names_the_file(tmp_path, content):
    path = _write(tmp_path, content, "bad.pkl")
    with pytest.raises(pickle.UnpicklingError, match=re.escape(str(path))) as info:
        load_pickle(path)
    assert not isinstance(info.value, UnsafePickleError)
    with open(path, "rb") as file, pytest.raises(pickle.UnpicklingError, match=re.escape(str(path))):
        load_pickle(file)
    with pytest.raises(pickle.UnpicklingError, match="<stream>"):
        load_pickle(io.BytesIO(content))


# ----------------------------------------------------------------------------------------------------------------------
# Real official snapshot pickles (fixtures; skipped when absent unless OP3D_REQUIRE_FIXTURES=1).

_RENDERER = "training.volumetric_rendering.renderer"
SETS = {  # set: (generator class_name, module of the generator and OSGDecoder, module of the renderer)
    "official/ffhq_k8_l10": ("TriMultiPlaneGenerator", "training.orthoplanes", _RENDERER),
    "official/shhq_k4_l6": ("TriMultiPlaneGenerator", "training.orthoplanes", _RENDERER),
    "official/shhq_cond_k8": ("TriMultiPlaneGenerator", "training.kaolin_version", "training.kaolin_version"),
    "eg3d/eg3d_ffhq": ("TriPlaneGenerator", "training.triplane", _RENDERER),
}
_cache = {}


@pytest.fixture(params=sorted(SETS))
def snapshot(request, fixture_file):
    """(set name, loaded G.pkl, config.json, README text) of one fixture set, loaded once per session."""
    name = request.param
    if name not in _cache:
        _cache[name] = (name, load_pickle(fixture_file(f"{name}/G.pkl")),
                        json.loads(fixture_file(f"{name}/config.json").read_text()),
                        fixture_file(f"{name}/README.txt").read_text())
    return _cache[name]


def _modules(record):
    return record.state["_modules"]


def _tree(record, path):
    yield path, record
    for name, child in _modules(record).items():
        if child is not None:
            yield from _tree(child, f"{path}.{name}")


def _parameters(record):
    """All distinct torch.nn.Parameter objects below ``record``."""
    found = {}
    for _, node in _tree(record, ""):
        for value in node.state.get("_parameters", {}).values():
            if value is not None:
                found[id(value)] = value
    return list(found.values())


def test_snapshot_top_level(snapshot):
    name, data, config, _ = snapshot
    generator, gen_module, _ = SETS[name]
    assert isinstance(data, dict)
    assert {"training_set_kwargs", "D", "G_ema", "augment_pipe"} <= set(data)
    assert data["augment_pipe"] is None
    g = data["G_ema"]
    assert isinstance(g, PersistentRecord)
    assert g.class_name == generator and config["G_ema"]["class_name"] == f"{gen_module}.{generator}"
    assert g.version == 6 and g.module_src_present
    assert {"_init_kwargs", "_init_args", "_parameters", "_buffers", "_modules"} <= set(g.state)
    assert isinstance(data["D"], PersistentRecord) and config["D"]["class_name"].endswith("." + data["D"].class_name)
    # Constructor arguments and attributes match what the official code recorded.
    assert json.loads(json.dumps(g.state["_init_kwargs"])) == config["G_ema"]["init_kwargs"]
    assert list(g.state["_init_args"]) == config["G_ema"]["init_args"]
    for attr in ("neural_rendering_resolution", "rendering_kwargs", "n_planes_per_axis", "L", "z_dim", "w_dim"):
        if attr in config["G_ema"]["attributes"]:
            assert json.loads(json.dumps(g.state[attr])) == config["G_ema"]["attributes"][attr], attr


def test_snapshot_tensors(snapshot):
    name, data, _, _ = snapshot
    _, gen_module, renderer_module = SETS[name]
    g = data["G_ema"]
    backbone = _modules(g)["backbone"]
    w_avg = _modules(backbone)["mapping"].state["_buffers"]["w_avg"]
    assert type(w_avg) is torch.Tensor and w_avg.shape == (512,) and w_avg.dtype == torch.float32
    assert not w_avg.any()  # untrained fixtures: w_avg is all zeros
    const = _modules(_modules(backbone)["synthesis"])["b4"].state["_parameters"]["const"]
    assert isinstance(const, torch.nn.Parameter) and const.shape == (32, 4, 4) and not const.requires_grad
    assert g.state["_buffers"]["dataset_label_std"].shape == (25,)

    decoder = _modules(g)["decoder"]
    assert isinstance(decoder, GlobalRecord) and decoder.qualname == f"{gen_module}.OSGDecoder"
    assert decoder.state["hidden_dim"] == 64
    net = _modules(decoder)["net"]
    assert net.qualname == "torch.nn.modules.container.Sequential"
    layers = [m for m in _modules(net).values() if isinstance(m, PersistentRecord)]
    assert all(m.class_name == "FullyConnectedLayer" for m in layers)
    assert layers[0].state["_parameters"]["weight"].shape == (64, 32)
    assert layers[-1].state["_parameters"]["weight"].shape == (33, 64)
    assert type(layers[0].state["weight_gain"]) is np.float64  # numpy scalar from numpy.core.multiarray.scalar
    assert layers[0].state["weight_gain"] == pytest.approx(32 ** -0.5)
    assert _modules(g)["renderer"].qualname.startswith(renderer_module + ".")


def test_snapshot_module_tree_matches_readme(snapshot):
    """Every G_ema / D module listed in the fixture README has the recorded class name and kind, and no more."""
    _, data, _, readme = snapshot
    row = re.compile(r"^ {4}((?:G_ema|D)(?:\.\S+)?)\s+(\w+)\s+(persistent|plain-global)\s+(\S+)\s*$", re.M)
    expected = {m[1]: m.groups()[1:] for m in row.finditer(readme)}
    assert len(expected) > 50
    loaded = dict(_tree(data["G_ema"], "G_ema")) | dict(_tree(data["D"], "D"))
    assert set(loaded) == set(expected)
    for path, (class_name, kind, module) in expected.items():
        record = loaded[path]
        if kind == "persistent":
            assert isinstance(record, PersistentRecord) and record.class_name == class_name, path
        else:
            assert isinstance(record, GlobalRecord) and record.qualname == f"{module}.{class_name}", path


def test_eg3d_parameter_counts_and_plane_axes(fixture_file):
    data = load_pickle(fixture_file("eg3d/eg3d_ffhq/G.pkl"))
    config = json.loads(fixture_file("eg3d/eg3d_ffhq/config.json").read_text())
    g = data["G_ema"]
    records = {"G_ema": g, "D": data["D"]}
    records.update({f"G_ema_{k}": _modules(g)[k] for k in ("backbone", "superresolution", "decoder")})
    assert {k: sum(p.numel() for p in _parameters(v)) for k, v in records.items()} == config["n_params"]
    axes = _modules(g)["renderer"].state["plane_axes"]
    assert axes.tolist() == config["G_ema"]["attributes"]["renderer_plane_axes"]
    assert g.state["_buffers"]["dataset_label_std"].tolist() == pytest.approx(
        config["G_ema"]["attributes"]["dataset_label_std"])


def test_load_from_file_object(fixture_file):
    path = fixture_file("official/shhq_k4_l6/G.pkl")
    with open(path, "rb") as file:
        data = load_pickle(file)
    assert data["G_ema"].class_name == "TriMultiPlaneGenerator"
