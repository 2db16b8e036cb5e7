"""The training loop's less-travelled paths on CPU: metrics at a snapshot with two gloo processes, ADA and mirroring
inside the loop, resuming with another batch, stale snapshot temporaries of a killed process, and which errors
become one line (user input) and which keep their traceback (bugs)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import test_training as base
from op3d.checkpoints import load_network_pkl

TINY = base.TINY


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return base.write_tiny_dataset(tmp_path_factory.mktemp("data") / "discs32.zip")


def one_line_error(result, needle):
    assert result.exit_code != 0
    assert result.output.startswith("Error:") and len(result.output.strip().splitlines()) == 1, result.output
    assert needle in result.output, (needle, result.output)


def test_metric_at_snapshot_with_two_processes(tiny_data, tmp_path):
    """Both processes compute the metric; its results go to the logs once, outside the cross-process statistics."""
    args = [a for a in TINY if not a.startswith(("--gpus", "--metrics"))]
    result = base.train(*args, "--gpus=2", "--mbstd-group=2", "--metrics=mvc1k", "--metrics-num-gen=8",
                        f"--data={tiny_data}", f"--outdir={tmp_path}", "--kimg=0.004")
    assert result.exit_code == 0, result.output
    (run_dir,) = base.run_dirs(tmp_path)
    (line,) = (run_dir / "metric-mvc1k.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["num_gpus"] == 2 and record["snapshot_pkl"] == "network-snapshot-000000.pkl"
    (tick,) = [json.loads(t) for t in (run_dir / "stats.jsonl").read_text().splitlines()]
    logged = tick["Metrics/mvc1k_visible_fraction"]
    assert logged["num"] == 1 and logged["mean"] == record["results"]["mvc1k_visible_fraction"]
    assert 0 < logged["mean"] <= 1


def test_unknown_metric_is_refused_before_training(tiny_data, tmp_path):
    result = CliRunner().invoke(base.train_script.main, [*TINY, "--metrics=fid", f"--data={tiny_data}",
                                                         f"--outdir={tmp_path / 'out'}", "--kimg=0.004"])
    one_line_error(result, "--metrics")
    assert not (tmp_path / "out").exists()


def test_internal_value_error_keeps_its_traceback(tiny_data, tmp_path, monkeypatch):
    """A ValueError from inside the run is a bug, not bad input: it must not be shortened to one line."""
    from op3d.training.loss import GANLoss

    def broken(self, phase, *args, **kwargs):
        raise ValueError("internal failure deep in the loss")

    monkeypatch.setattr(GANLoss, "accumulate_gradients", broken)
    result = CliRunner().invoke(base.train_script.main, [*TINY, f"--data={tiny_data}", f"--outdir={tmp_path}",
                                                         "--kimg=0.004"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ValueError) and "internal failure" in str(result.exception)
    assert "Error: internal failure" not in result.output


@pytest.mark.parametrize("gpus", [1, 2])
def test_resume_with_another_batch_is_refused(tiny_data, tmp_path, gpus):
    assert base.train(*TINY, f"--outdir={tmp_path / 'a'}", f"--data={tiny_data}", "--kimg=0.004").exit_code == 0
    (first,) = base.run_dirs(tmp_path / "a")
    args = [a for a in TINY if not a.startswith(("--gpus", "--batch"))]
    result = CliRunner().invoke(base.train_script.main, [*args, f"--gpus={gpus}", "--batch=8", "--mbstd-group=2",
                                                         f"--outdir={tmp_path / 'b'}", f"--data={tiny_data}",
                                                         "--kimg=0.008", f"--resume={first}"])
    one_line_error(result, "--batch")
    assert "batch 4" in result.output
    assert not (tmp_path / "b").exists()


def test_resume_skips_and_removes_stale_temporaries(tiny_data, tmp_path):
    """A process killed while writing its snapshot leaves <name>.tmp-<pid>.<ext>: resuming never reads one, and
    removes those of processes that are gone (a live process's temporary stays)."""
    assert base.train(*TINY, f"--outdir={tmp_path}", f"--data={tiny_data}", "--kimg=0.004").exit_code == 0
    (first,) = base.run_dirs(tmp_path)
    (first / "training-state-000000.pt").unlink()  # weights only: the newest snapshot wins, whatever its state
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [first / f"network-snapshot-000004.tmp-{dead_pid}.pkl", first / f"training-state-000004.tmp-{dead_pid}.pt"]
    for path in stale:
        path.write_bytes(b"truncated")
    live = first / f"fakes000004.tmp-{os.getpid()}.png"
    live.write_bytes(b"being written")
    result = base.train(*TINY, f"--outdir={tmp_path}", f"--data={tiny_data}", "--kimg=0.004", f"--resume={first}")
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in stale)
    assert live.exists()
    second = base.run_dirs(tmp_path)[-1]
    options = json.loads((second / "training_options.json").read_text())
    assert options["resume_pkl"] == str(first / "network-snapshot-000000.pkl")


def test_ada_adjusts_p_inside_the_loop(tiny_data, tmp_path, monkeypatch):
    """--aug=ada: every 4 iterations p moves by batch * 4 / (500 kimg) towards the target, from the signs of D's
    real logits of those iterations; p is saved with the snapshot."""
    from op3d.training.augment import AdaptiveAugment

    calls = []
    original = AdaptiveAugment.update

    def spy(self, pipe, batch_size):
        total, count = self.accum.tolist()
        before = float(pipe.p)
        original(self, pipe, batch_size)
        calls.append((total / count, before, float(pipe.p), batch_size))

    monkeypatch.setattr(AdaptiveAugment, "update", spy)
    result = base.train(*TINY, "--aug=ada", "--target=0.2", f"--outdir={tmp_path}", f"--data={tiny_data}",
                        "--kimg=0.016")  # 4 iterations of 4 images: one update
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    step = 4 * 4 / (500 * 1000)
    for mean_sign, before, after, batch_size in calls:
        assert batch_size == 4 and -1 <= mean_sign <= 1
        assert after == pytest.approx(max(before + np.sign(mean_sign - 0.2) * step, 0), abs=1e-9)
    (run_dir,) = base.run_dirs(tmp_path)
    snapshot = load_network_pkl(sorted(run_dir.glob("network-snapshot-*.pkl"))[-1])
    assert float(snapshot["augment_pipe"].p) == pytest.approx(calls[-1][2], abs=1e-9)
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert ticks[-1]["Progress/augment"]["mean"] == pytest.approx(calls[-1][2], abs=1e-7)
    state = torch.load(sorted(run_dir.glob("training-state-*.pt"))[-1], weights_only=True)
    assert state["ada"]["accum"].tolist() == [0.0, 0.0]  # the last update came after the last iteration


def test_mirror_trains_on_mirrored_items_with_mirrored_cameras(tiny_data, tmp_path, monkeypatch):
    from op3d.training.dataset import ImageFolderDataset, mirror_camera_label

    read = []
    original = ImageFolderDataset.__getitem__

    def spy(self, idx):
        image, label = original(self, idx)
        read.append((len(self), idx, label))
        return image, label

    monkeypatch.setattr(ImageFolderDataset, "__getitem__", spy)
    result = base.train(*TINY, "--mirror=1", f"--outdir={tmp_path}", f"--data={tiny_data}", "--kimg=0.016")
    assert result.exit_code == 0, result.output
    (run_dir,) = base.run_dirs(tmp_path)
    assert json.loads((run_dir / "training_options.json").read_text())["training_set_kwargs"]["xflip"] is True
    plain = ImageFolderDataset(tiny_data)
    mirrored = [(idx, label) for size, idx, label in read if size == 2 * len(plain) and idx >= len(plain)]
    assert mirrored, "the loop read no mirrored item"
    for idx, label in mirrored:
        np.testing.assert_array_equal(label, mirror_camera_label(plain.get_label(idx - len(plain))))
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(t["Loss/G/loss"]["mean"]) for t in ticks)
