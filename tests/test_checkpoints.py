"""op3d.load_network_pkl on official and op3d snapshots, safe refusal of hostile pickles, op3d snapshot and
safetensors round trips, and the errors bad checkpoints give."""

import io
import os
import pickle
import pickletools

import pytest
import torch

import op3d
from op3d.checkpoints import CheckpointError, export_safetensors, import_safetensors, load_network_pkl, \
    save_network_pkl
from op3d.networks.discriminator import DualDiscriminator
from op3d.networks.generator import OrthoPlanesGenerator
from op3d.safe_pickle import UnsafePickleError

TINY_RENDERING = {"superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
                  "depth_resolution": 4, "depth_resolution_importance": 4, "ray_start": 2.25, "ray_end": 3.3,
                  "box_warp": 1, "c_scale": 1.0, "superresolution_noise_mode": "none", "avg_camera_pivot": [0, 0, 0]}


def tiny_generator(**overrides):
    kwargs = dict(z_dim=8, c_dim=25, w_dim=512, img_resolution=128, img_channels=3, channel_base=256,
                  channel_max=8, mapping_kwargs={"num_layers": 2}, per_dir_plane_number=4, fourier_L=2,
                  sr_num_fp16_res=0, rendering_kwargs=dict(TINY_RENDERING))
    kwargs.update(overrides)
    return OrthoPlanesGenerator(**kwargs)


def tiny_discriminator():
    return DualDiscriminator(c_dim=25, img_resolution=32, img_channels=3, channel_base=256, channel_max=16)


def assert_same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_op3d_snapshot_round_trip(tmp_path):
    torch.manual_seed(0)
    G = tiny_generator(rendering_kwargs={**TINY_RENDERING, "plane_projection": "consistent"})
    G.register_buffer("dataset_label_std", torch.rand(25))
    G.neural_rendering_resolution = 16
    D = tiny_discriminator()
    path = tmp_path / "network-snapshot-000000.pkl"
    save_network_pkl(path, {"G": G, "D": D, "G_ema": G.eval(), "training_set_kwargs": {"path": "data.zip"},
                            "augment_pipe": None})
    assert os.listdir(tmp_path) == [path.name]  # written atomically, no temp file left behind
    snap = load_network_pkl(path)
    assert snap["training_set_kwargs"] == {"path": "data.zip"}
    G2 = snap["G_ema"]
    assert isinstance(G2, OrthoPlanesGenerator) and isinstance(snap["D"], DualDiscriminator)
    assert_same_tensors(G, G2)
    assert_same_tensors(D, snap["D"])
    assert G2.neural_rendering_resolution == 16
    assert G2.rendering_kwargs["plane_projection"] == "consistent"
    assert (G2.n_planes_per_axis, G2.L) == (4, 2)
    z, c = torch.randn(1, 8), torch.rand(1, 25)
    with torch.no_grad():
        assert torch.equal(G.mapping(z, c), G2.mapping(z, c))


def test_op3d_snapshot_loads_from_file_object_and_to_device(tmp_path):
    G = tiny_generator()
    path = tmp_path / "s.pkl"
    save_network_pkl(path, {"G_ema": G})
    with open(path, "rb") as f:
        snap = load_network_pkl(f, device="cpu")
    assert snap["G"] is None and snap["D"] is None and snap["training_set_kwargs"] is None
    assert next(snap["G_ema"].parameters()).device.type == "cpu"


def test_saving_an_unknown_module_is_refused(tmp_path):
    with pytest.raises(pickle.PicklingError, match="Linear"):
        save_network_pkl(tmp_path / "bad.pkl", {"G_ema": torch.nn.Linear(2, 2)})
    assert list(tmp_path.iterdir()) == []


def test_safetensors_round_trip_and_weights_only_import(tmp_path):
    torch.manual_seed(1)
    G = tiny_generator()
    path = tmp_path / "G.safetensors"
    export_safetensors(G, path)
    G2 = import_safetensors(path)
    assert_same_tensors(G, G2)
    assert G2.settings == G.settings
    # Plain official-name weights into a module the caller built.
    G3 = import_safetensors(path, module=tiny_generator())
    assert_same_tensors(G, G3)
    with pytest.raises(CheckpointError, match="missing tensors"):
        import_safetensors(path, module=tiny_generator(mapping_kwargs={"num_layers": 3}))


def hostile_pickle(module, name, argument):
    """A protocol-2 pickle calling module.name(argument) through GLOBAL + REDUCE."""
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(argument).to_bytes(4, "little")
            + argument.encode() + b"\x85R.")


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval")])
def test_hostile_pickle_is_refused(tmp_path, module, name):
    sentinel = tmp_path / "sentinel"
    payload = f"open({str(sentinel)!r}, 'w')" if name == "eval" else f"touch {sentinel}"
    data = hostile_pickle(module, name, payload)
    pickletools.dis(data, out=io.StringIO())  # well-formed pickle
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=rf"evil\.pkl.*{module}\.{name}"):
        load_network_pkl(path)
    assert not sentinel.exists()


def test_not_a_snapshot(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match=r"list\.pkl.*'G_ema'"):
        load_network_pkl(path)
    path = tmp_path / "dict.pkl"
    path.write_bytes(pickle.dumps({"G": None}))
    with pytest.raises(CheckpointError, match=r"dict\.pkl.*'G_ema'.*\['G'\]"):
        load_network_pkl(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nowhere.pkl"):
        load_network_pkl("/nonexistent/nowhere.pkl")


def test_official_snapshot_with_wrong_tensor_is_rejected(fixture_file, tmp_path):
    """A pickled tensor that does not fit the architecture is an error naming the tensor and the file."""
    from op3d.checkpoints import network_from_record
    from op3d.safe_pickle import load_pickle

    raw = load_pickle(fixture_file("official/shhq_k4_l6/G.pkl"))
    record = raw["G_ema"]
    decoder = record.state["_modules"]["decoder"]
    fc = decoder.state["_modules"]["net"].state["_modules"]["0"]
    fc.state["_parameters"]["weight"] = torch.zeros(64, 31)
    with pytest.raises(CheckpointError, match=r"(?s)shhq\.pkl.*size mismatch for decoder\.net\.0\.weight"):
        network_from_record(record, "shhq.pkl")
    del fc.state["_parameters"]["weight"]
    with pytest.raises(CheckpointError, match=r"shhq\.pkl.*missing tensors.*decoder\.net\.0\.weight"):
        network_from_record(record, "shhq.pkl")


def test_official_snapshot_modules_are_op3d_modules(fixture_file):
    snap = op3d.load_network_pkl(fixture_file("official/shhq_k4_l6/G.pkl"))
    G = snap["G_ema"]
    assert G.z_dim == 512 and G.c_dim == 25 and G.w_dim == 512 and G.img_resolution == 512
    assert G.backbone.mapping.num_ws == 13 and G.backbone.mapping.w_avg.shape == (512,)
    assert G.dataset_label_std.shape == (25,)
    assert G.init_kwargs["per_dir_plane_number"] == 4


def test_older_official_modules_take_k_and_l_from_the_state(fixture_file):
    """training.trimultiplane[_large] hard-coded K and L (no constructor arguments): the pickled attributes decide."""
    from op3d.checkpoints import network_from_record
    from op3d.safe_pickle import load_pickle

    record = load_pickle(fixture_file("official/shhq_k4_l6/G.pkl"))["G_ema"]
    kwargs = record.state["_init_kwargs"]
    kwargs.pop("per_dir_plane_number")
    kwargs.pop("fourier_L")
    G = network_from_record(record, "old.pkl")
    assert (G.n_planes_per_axis, G.L) == (4, 6)
    del record.state["n_planes_per_axis"]
    with pytest.raises(CheckpointError, match=r"old\.pkl.*n_planes_per_axis"):
        network_from_record(record, "old.pkl")


def record_tree(module, class_name="Module", init_kwargs=None):
    """A pickled-module-like record tree (what the restricted unpickler yields) for a torch module."""
    from op3d.safe_pickle import PersistentRecord

    state = {"_parameters": dict(module._parameters), "_buffers": dict(module._buffers),
             "_modules": {k: record_tree(v) for k, v in module._modules.items()}, "training": module.training}
    if init_kwargs is not None:
        state["_init_kwargs"] = init_kwargs
    return PersistentRecord(class_name, state)


def test_op3d_large_triplane_is_told_apart_by_its_decoder():
    """OP3D's 'large tri-plane' baseline shares the class name and constructor arguments with EG3D's generator;
    the loader reads plane width and decoder depth from the state."""
    from op3d.checkpoints import network_from_record
    from op3d.networks.generator import TriPlaneGenerator

    official_kwargs = dict(z_dim=8, c_dim=25, w_dim=512, img_resolution=128, img_channels=3, channel_base=256,
                           channel_max=8, mapping_kwargs={"num_layers": 2}, sr_num_fp16_res=0,
                           rendering_kwargs=dict(TINY_RENDERING))
    torch.manual_seed(0)
    large = TriPlaneGenerator(**official_kwargs, plane_channels=128, decoder_hidden_dim=128,
                              decoder_hidden_layers=3).eval()
    assert large.decoder.net[0].weight.shape == (128, 128) and len(large.decoder.net) == 7
    loaded = network_from_record(record_tree(large, "TriPlaneGenerator", official_kwargs), "large.pkl")
    assert loaded.plane_channels == 128
    assert_same_tensors(large, loaded)
    eg3d = network_from_record(record_tree(TriPlaneGenerator(**official_kwargs), "TriPlaneGenerator",
                                           official_kwargs), "eg3d.pkl")
    assert eg3d.plane_channels == 32 and len(eg3d.decoder.net) == 3
    z, c = torch.randn(1, 8), torch.rand(1, 25)
    points = torch.rand(1, 50, 3) - 0.5
    with torch.no_grad():
        assert torch.equal(large.sample(points, None, z, c)["sigma"], loaded.sample(points, None, z, c)["sigma"])
        planes = loaded.compute_planes(loaded.mapping(z, c))
    assert planes.shape == (1, 3, 128, 256, 256)


def test_official_augment_pipe_stays_an_inert_record(fixture_file, monkeypatch):
    """Snapshots of augmented runs carry a persistent AugmentPipe: it must not stop the networks from loading."""
    import op3d.checkpoints as checkpoints
    from op3d.safe_pickle import PersistentRecord, load_pickle

    raw = load_pickle(fixture_file("official/shhq_k4_l6/G.pkl"))
    raw["augment_pipe"] = PersistentRecord("AugmentPipe", {"_init_kwargs": {"xflip": 1}})
    monkeypatch.setattr(checkpoints, "load_pickle", lambda _: raw)
    snap = checkpoints.load_network_pkl("augmented.pkl")
    assert isinstance(snap["G_ema"], OrthoPlanesGenerator)
    assert isinstance(snap["augment_pipe"], PersistentRecord) and snap["augment_pipe"].class_name == "AugmentPipe"
