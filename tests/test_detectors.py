"""Detector pickles are read with a restricted unpickler: pickled torch modules (the stand-in detectors) load, and a
pickle that would run code is refused without running it."""

import io
import pickle
import shlex

import pytest
import torch

from op3d.metrics.detectors import DetectorError, detect, load_detector
from stand_in_detectors import TinyDetector, write_detectors


def test_stand_in_detectors_load(tmp_path):
    write_detectors(tmp_path)
    module = load_detector(tmp_path / "inception-2015-12-05.pkl")
    reference = TinyDetector(seed=0)
    assert type(module) is TinyDetector and not module.training
    for name, tensor in reference.state_dict().items():
        assert torch.equal(module.state_dict()[name], tensor), name
    images = torch.randint(0, 256, [3, 3, 16, 16], dtype=torch.uint8)
    assert torch.equal(detect(module, images, return_features=True), reference(images, return_features=True))


def test_torch_layers_load(tmp_path):
    path = tmp_path / "layers.pkl"
    layers = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    path.write_bytes(pickle.dumps(layers))
    loaded = load_detector(path)
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(loaded(x), layers(x))


def _stream(*ops: bytes) -> bytes:
    return b"".join(ops)


def _protocol0_call(module: str, name: str, argument: str) -> bytes:
    """GLOBAL module.name, MARK, the string argument, TUPLE, REDUCE."""
    return f"c{module}\n{name}\n(V{argument}\ntR.".encode()


def _malicious(sentinel):
    command = f"touch {shlex.quote(str(sentinel))}"
    return {
        "os.system": _protocol0_call("os", "system", command),
        "builtins.eval": _protocol0_call("builtins", "eval", f"open({str(sentinel)!r}, 'w').close()"),
        # a torch module class called through REDUCE runs its constructor with the file's arguments
        "constructor": b"ctorch.nn.modules.linear\nLinear\n(I2\nI2\ntR.",
        # protocol 0 INST: instantiate with arguments
        "inst": b"(I2\nI2\nitorch.nn.modules.linear\nLinear\n.",
        "subprocess": _protocol0_call("subprocess", "getoutput", command),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "constructor", "inst", "subprocess"])
def test_code_in_a_detector_pickle_is_refused(tmp_path, kind):
    sentinel = tmp_path / "ran"
    path = tmp_path / "inception-2015-12-05.pkl"
    path.write_bytes(_malicious(sentinel)[kind])
    with pytest.raises(DetectorError, match="refused") as error:
        load_detector(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert not sentinel.exists()


def test_a_non_module_pickle_is_refused(tmp_path):
    path = tmp_path / "vgg16.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(DetectorError, match="expected a pickled torch module"):
        load_detector(path)
    assert pickle.loads(io.BytesIO(path.read_bytes()).read()) == {"weights": [1, 2]}
