"""cal_metrics.py end to end with stand-in detectors: an official fixture checkpoint gives a finite FID, every
metric writes its jsonl line in a run directory, results do not depend on the number of processes, and bad input
gives one-line errors."""

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from op3d.cameras import orbit_camera
from op3d.checkpoints import save_network_pkl
from op3d.generation import random_tiny_generator
from op3d.training.dataset import write_image_dataset
from stand_in_detectors import write_detectors

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "test_scripts" / "cal_metrics.py"
spec = importlib.util.spec_from_file_location("cal_metrics_script", SCRIPT)
cal_metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cal_metrics)


def run(*args):
    return CliRunner().invoke(cal_metrics.main, [str(a) for a in args], catch_exceptions=False)


def jsonl_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def write_tiny_dataset(path, resolution, count=24, seed=0):
    """Random-blob images with orbit camera labels (yaw/pitch spread like a face dataset)."""
    rng = np.random.RandomState(seed)
    images, labels = [], []
    for i in range(count):
        base = rng.randint(0, 256, size=(4, 4, 3)).astype(np.uint8)
        images.append(np.kron(base, np.ones((resolution // 4, resolution // 4, 1), np.uint8)))
        c = orbit_camera(math.pi / 2 + rng.uniform(-0.4, 0.4), math.pi / 2 + rng.uniform(-0.2, 0.2),
                         lookat=(0, 0, 0.2), focal=4.2647)
        labels.append(c[0].numpy())
    write_image_dataset(path, images, np.stack(labels))
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Detector and cache locations inside tmp_path, none found through the user's environment."""
    monkeypatch.setenv("OP3D_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "dnnlib"))
    monkeypatch.delenv("OP3D_DETECTOR_DIR", raising=False)
    detectors = tmp_path / "detectors"
    detectors.mkdir()
    write_detectors(detectors)
    return detectors


@pytest.fixture
def tiny_run(tmp_path):
    """A run directory with a random-tiny snapshot whose training set is a 128 px dataset."""
    data = write_tiny_dataset(tmp_path / "tiny128.zip", 128)
    run_dir = tmp_path / "00000-run"
    run_dir.mkdir()
    (run_dir / "training_options.json").write_text("{}")
    G = random_tiny_generator()
    pkl = run_dir / "network-snapshot-000000.pkl"
    save_network_pkl(pkl, {"G_ema": G, "training_set_kwargs": {"path": str(data), "xflip": False}})
    return pkl


def test_official_checkpoint_fid(fixture_file, tmp_path, isolated):
    pkl = fixture_file("official/ffhq_k8_l10/G.pkl")
    data = write_tiny_dataset(tmp_path / "faces512.zip", 512, count=8)
    result = run(f"--network={pkl}", "--metrics=fid50k_full", "--num-gen=16", f"--data={data}",
                 f"--detector-dir={isolated}", "--device=cpu", "--verbose=false")
    assert result.exit_code == 0, result.output
    (line,) = jsonl_lines(result.output)
    assert line["metric"] == "fid50k_full" and line["num_gpus"] == 1
    assert math.isfinite(line["results"]["fid50k_full"]) and line["results"]["fid50k_full"] > 0
    assert not (pkl.parent / "metric-fid50k_full.jsonl").exists()  # not a run directory: nothing written there


def test_every_metric_writes_its_jsonl(tiny_run, isolated):
    metrics = "fid50k_full,kid50k_full,pr50k3_full,is50k,fid50k,mvc1k"
    result = run(f"--network={tiny_run}", f"--metrics={metrics}", "--num-gen=16", f"--detector-dir={isolated}",
                 "--device=cpu", "--verbose=false")
    assert result.exit_code == 0, result.output
    lines = {line["metric"]: line for line in jsonl_lines(result.output)}
    assert sorted(lines) == sorted(metrics.split(","))
    expected_keys = {"fid50k_full": ["fid50k_full"], "kid50k_full": ["kid50k_full"],
                     "pr50k3_full": ["pr50k3_full_precision", "pr50k3_full_recall"],
                     "is50k": ["is50k_mean", "is50k_std"], "fid50k": ["fid50k"],
                     "mvc1k": ["mvc1k_depth_error", "mvc1k_relative_depth_error", "mvc1k_photometric_error",
                               "mvc1k_visible_fraction"]}
    for name, keys in expected_keys.items():
        assert sorted(lines[name]["results"]) == sorted(keys)
        assert all(math.isfinite(v) for v in lines[name]["results"].values()), lines[name]
        assert lines[name]["snapshot_pkl"] == tiny_run.name
        written = (tiny_run.parent / f"metric-{name}.jsonl").read_text().splitlines()
        assert json.loads(written[-1])["results"] == lines[name]["results"]
    assert 0 <= lines["pr50k3_full"]["results"]["pr50k3_full_precision"] <= 1
    assert lines["is50k"]["results"]["is50k_mean"] >= 1


def test_same_result_on_one_and_two_processes(tiny_run, isolated):
    args = [f"--network={tiny_run}", "--metrics=fid50k_full", "--num-gen=16", f"--detector-dir={isolated}",
            "--device=cpu", "--verbose=false"]
    one = jsonl_lines(run(*args).output)[0]["results"]["fid50k_full"]
    again = jsonl_lines(run(*args).output)[0]["results"]["fid50k_full"]  # dataset statistics from the cache
    assert again == one
    two = run(*args, "--gpus=2", "--no-cache")
    assert two.exit_code == 0, two.output
    written = (tiny_run.parent / "metric-fid50k_full.jsonl").read_text().splitlines()
    last = json.loads(written[-1])
    assert last["num_gpus"] == 2
    assert last["results"]["fid50k_full"] == pytest.approx(one, rel=1e-6)


def test_errors_are_one_line(tiny_run, tmp_path, isolated):
    empty = tmp_path / "no-detectors"
    empty.mkdir()
    cases = [
        ([f"--network={tiny_run}", f"--detector-dir={empty}"], ["inception-2015-12-05.pkl", "not found", str(empty)]),
        ([f"--network={tiny_run}", f"--data={tmp_path / 'missing.zip'}"], ["--data", "missing.zip"]),
        ([f"--network={tiny_run}", f"--data={write_tiny_dataset(tmp_path / 'small.zip', 64)}"], ["128x128", "64x64"]),
        ([f"--network={tmp_path / 'nope.pkl'}"], ["--network", "nope.pkl"]),
        (["--network=https://example.com/G.pkl"], ["URL", "Download it first"]),
        ([f"--network={tiny_run}", "--metrics=fid1k"], ["unknown metric", "fid50k_full"]),
        ([f"--network={tiny_run}", "--metrics=ppl2_wend"], ["not defined for 3D-aware"]),
    ]
    for args, needles in cases:
        result = CliRunner().invoke(cal_metrics.main, [*args, f"--detector-dir={isolated}" if "--detector-dir" not in
                                                       " ".join(args) else "--verbose=false", "--device=cpu"])
        assert result.exit_code != 0, args
        message = result.output.strip()
        assert message.startswith("Error:") and len(message.splitlines()) == 1, result.output
        for needle in needles:
            assert needle in message, (needle, message)


def test_detector_found_in_dnnlib_cache(tiny_run, tmp_path, isolated, monkeypatch):
    from op3d.metrics.detectors import INCEPTION, candidate_paths, find_detector

    cached = candidate_paths(INCEPTION)[-2]  # <DNNLIB_CACHE_DIR>/downloads/<md5 of URL>_inception-2015-12-05.pkl
    cached.parent.mkdir(parents=True)
    cached.write_bytes((isolated / INCEPTION.file_name).read_bytes())
    assert find_detector(INCEPTION) == cached
    monkeypatch.setenv("OP3D_DETECTOR_DIR", str(isolated))
    assert find_detector(INCEPTION) == isolated / INCEPTION.file_name


def test_eg3d_checkpoint_consistency_metric(fixture_file, tmp_path, isolated):
    pkl = fixture_file("eg3d/eg3d_ffhq/G.pkl")
    data = write_tiny_dataset(tmp_path / "cams.zip", 64, count=4)  # mvc1k reads only the dataset's cameras
    result = run(f"--network={pkl}", "--metrics=mvc1k", "--num-gen=2", "--batch=2", f"--data={data}",
                 "--device=cpu", "--verbose=false")
    assert result.exit_code == 0, result.output
    (line,) = jsonl_lines(result.output)
    assert 0 < line["results"]["mvc1k_visible_fraction"] <= 1
    assert math.isfinite(line["results"]["mvc1k_depth_error"])
