"""Training end to end on CPU: the options reproduce the official training_options.json, a tiny run writes its
run directory, resumes exactly, gives the same weights on two gloo processes, handles non-finite gradients, and
refuses bad input with one-line errors."""

import dataclasses
import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from op3d.cameras import orbit_camera
from op3d.checkpoints import load_network_pkl
from op3d.training.dataset import write_image_dataset
from op3d.training.options import OptionsError, TrainingOptions, training_spec

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "train_scripts" / "train_unconditional.py"
spec = importlib.util.spec_from_file_location("train_unconditional_script", SCRIPT)
train_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_script)


def cli_options(args: list[str]) -> TrainingOptions:
    ctx = train_script.main.make_context("train_unconditional.py", list(args))
    params = dict(ctx.params)
    params.pop("dry_run")
    return TrainingOptions(metrics=train_script._metrics(params.pop("metrics")), **params)


@pytest.mark.parametrize("name,extra", [("official/ffhq_k8_l10", []), ("official/shhq_k4_l6", []),
                                        ("eg3d/eg3d_ffhq", ["--generator=triplane"])])
def test_options_reproduce_official_training_options(fixture_file, name, extra):
    config = json.loads(fixture_file(f"{name}/config.json").read_text())
    official = config["training_options"]
    args = [a.replace("--outdir=...", "--outdir=runs") for a in config["official_train_cli"]] + extra
    opts = cli_options(args)
    opts.z_dim = official["G_kwargs"]["z_dim"]  # the fixtures shrank the hard-coded z_dim
    ours = training_spec(opts, dataset_resolution=512, dataset_len=official["training_set_kwargs"]["max_size"])
    for key, value in official.items():
        assert ours[key] == value, key


def write_tiny_dataset(path, count=64, resolution=32, seed=0):
    """Coloured discs on white, seen from orbit cameras: enough structure for a few training steps."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:resolution, :resolution] / resolution
    images, labels = [], []
    for _ in range(count):
        yaw, pitch = math.pi / 2 + rng.uniform(-0.5, 0.5), math.pi / 2 + rng.uniform(-0.2, 0.2)
        disc = (xx - 0.5 - (yaw - math.pi / 2) * 0.3) ** 2 + (yy - 0.5) ** 2 < 0.08
        image = np.full((resolution, resolution, 3), 255, np.uint8)
        image[disc] = rng.randint(0, 200, size=3)
        images.append(image)
        labels.append(orbit_camera(yaw, pitch, focal=4.2647)[0].numpy())
    write_image_dataset(path, images, np.stack(labels))
    return path


TINY = ["--cfg=tiny", "--gpus=1", "--batch=4", "--gamma=1", "--cbase=512", "--cmax=16", "--map-depth=2",
        "--plane_number=4", "--fourier_L=2", "--metrics=none", "--workers=0", "--device=cpu", "--tick=0.008",
        "--snap=1", "--d_num_fp16_res=0", "--sr_num_fp16_res=0"]


def train(*args):
    return CliRunner().invoke(train_script.main, [str(a) for a in args], catch_exceptions=False)


def run_dirs(outdir):
    return sorted(p for p in pathlib.Path(outdir).iterdir() if p.is_dir())


def final_weights(run_dir):
    snapshot = load_network_pkl(sorted(run_dir.glob("network-snapshot-*.pkl"))[-1])
    return {f"{net}.{k}": v for net in ("G", "D", "G_ema") for k, v in snapshot[net].state_dict().items()}


def max_difference(a, b, skip=()):
    """Largest |a - b| over tensors, in units of each tensor's scale max(1, max|a|): equalized-lr parameters are
    stored unscaled (mapping weights at about 1 / lr_mul = 100x), where one float32 rounding step exceeds 1e-5."""
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) / max(1.0, float(a[k].abs().max()))
               for k in a if a[k].numel() and not k.endswith(skip))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "discs32.zip")


def test_tiny_run_writes_run_directory(tiny_data, tmp_path):
    result = train(*TINY, f"--outdir={tmp_path}", f"--data={tiny_data}", "--kimg=0.016")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path)
    assert run_dir.name == "00000-tiny-discs32-gpus1-batch4-gamma1"
    options = json.loads((run_dir / "training_options.json").read_text())
    assert options["batch_size"] == 4 and options["G_kwargs"]["per_dir_plane_number"] == 4
    for name in ("log.txt", "stats.jsonl", "reals.png", "fakes000000.png", "fakes000000_raw.png",
                 "fakes000000_depth.png", "network-snapshot-000000.pkl", "training-state-000000.pt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert len(ticks) == 3  # tick 0 after the first batch, then one per 8 images, the last at 16 images
    assert all(math.isfinite(t["Loss/G/loss"]["mean"]) for t in ticks)
    assert "sec/kimg" in (run_dir / "log.txt").read_text()
    snapshot = load_network_pkl(run_dir / "network-snapshot-000000.pkl")
    assert snapshot["G_ema"].neural_rendering_resolution == 16
    assert snapshot["training_set_kwargs"]["path"] == str(tiny_data)


def test_resume_reaches_the_uninterrupted_weights(tiny_data, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert train(*TINY, f"--outdir={straight}", f"--data={tiny_data}", "--kimg=0.016").exit_code == 0
    # The first run stops right after its snapshot at 12 images; the second resumes it to 16.
    assert train(*TINY, f"--outdir={interrupted}", f"--data={tiny_data}", "--kimg=0.012").exit_code == 0
    (first,) = run_dirs(interrupted)
    result = train(*TINY, f"--outdir={interrupted}", f"--data={tiny_data}", "--kimg=0.016", f"--resume={first}")
    assert result.exit_code == 0, result.output
    resumed = run_dirs(interrupted)[-1]
    assert "from kimg 0.012" in (resumed / "log.txt").read_text()
    assert max_difference(final_weights(run_dirs(straight)[0]), final_weights(resumed)) <= 1e-6


def test_resume_takes_this_runs_learning_rates(tiny_data, tmp_path):
    """torch's load_state_dict would bring back the saved lr; a resume with a new --dlr must train with the new one
    (and say so), keeping the saved Adam moments."""
    assert train(*TINY, f"--outdir={tmp_path}", f"--data={tiny_data}", "--kimg=0.004").exit_code == 0
    (first,) = run_dirs(tmp_path)
    saved = torch.load(first / "training-state-000000.pt", weights_only=False)["optimizers"]["D"]
    result = train(*TINY, f"--outdir={tmp_path}", f"--data={tiny_data}", "--kimg=0.008", "--dlr=0.001",
                   f"--resume={first}")
    assert result.exit_code == 0, result.output
    resumed = run_dirs(tmp_path)[-1]
    ratio = 16 / 17  # lazy regularisation scales the lr by interval / (interval + 1)
    assert f"D optimizer lr {0.002 * ratio:.6g} -> {0.001 * ratio:.6g}" in (resumed / "log.txt").read_text()
    assert "G optimizer" not in (resumed / "log.txt").read_text()  # --glr unchanged: nothing to say
    state = torch.load(sorted(resumed.glob("training-state-*.pt"))[-1], weights_only=False)["optimizers"]["D"]
    assert state["param_groups"][0]["lr"] == pytest.approx(0.001 * ratio)
    assert saved["param_groups"][0]["lr"] == pytest.approx(0.002 * ratio)
    # the moments went on from the saved ones: more Adam steps than the resumed run alone took
    assert float(state["state"][0]["step"]) > float(saved["state"][0]["step"]) > 0


def test_two_gloo_processes_equal_one(tiny_data, tmp_path):
    common = [*[a for a in TINY if not a.startswith("--gpus")], "--mbstd-group=2", f"--data={tiny_data}",
              "--kimg=0.008"]
    assert train(*common, "--gpus=1", "--batch-gpu=2", f"--outdir={tmp_path / 'one'}").exit_code == 0
    result = train(*common, "--gpus=2", f"--outdir={tmp_path / 'two'}")
    assert result.exit_code == 0, result.output
    (one,), (two,) = run_dirs(tmp_path / "one"), run_dirs(tmp_path / "two")
    # w_avg is a running statistic, not a trained weight: as in the official loop each process tracks it from its
    # own chunks (one process lerps chunk 0 then chunk 1), and rank 0's is saved.
    assert max_difference(final_weights(one), final_weights(two), skip=("mapping.w_avg",)) <= 1e-5


def test_bad_input_is_one_line(tiny_data, tmp_path):
    cases = [
        (["--data=" + str(tmp_path / "missing.zip")], "missing.zip"),
        ([f"--data={tiny_data}", "--batch-gpu=3"], "--batch"),
        ([f"--data={tiny_data}", "--reg_type=total-variation"], "implemented nowhere"),
        ([f"--data={tiny_data}", f"--resume={tmp_path / 'nothing'}"], "--resume"),
    ]
    for args, needle in cases:
        result = CliRunner().invoke(train_script.main, [*TINY, f"--outdir={tmp_path / 'out'}", "--kimg=0.004",
                                                        *args])
        assert result.exit_code != 0, args
        assert result.output.startswith("Error:") and len(result.output.strip().splitlines()) == 1, result.output
        assert needle in result.output, (needle, result.output)
    assert not (tmp_path / "out").exists()


def test_nonfinite_gradients_are_replaced_and_reported(tiny_data, tmp_path, monkeypatch):
    from op3d.training.loss import GANLoss

    original = GANLoss.accumulate_gradients
    poisoned = []

    def poison(self, phase, *args, **kwargs):
        out = original(self, phase, *args, **kwargs)
        if phase == "Gmain" and not poisoned:
            param = next(p for p in self.G.parameters() if p.grad is not None)
            param.grad.view(-1)[0] = float("nan")
            param.grad.view(-1)[-1] = float("inf")
            poisoned.append(True)
        return out

    monkeypatch.setattr(GANLoss, "accumulate_gradients", poison)
    result = train(*TINY, f"--outdir={tmp_path}", f"--data={tiny_data}", "--kimg=0.008")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path)
    log = (run_dir / "log.txt").read_text()
    assert "2 non-finite gradient values in phase Gmain" in log
    weights = final_weights(run_dir)
    assert all(torch.isfinite(v).all() for v in weights.values())
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert ticks[0]["Progress/nonfinite_grads/Gmain"]["mean"] == 2


def test_dry_run_prints_options_and_writes_nothing(tiny_data, tmp_path):
    result = train(*TINY, f"--outdir={tmp_path / 'out'}", f"--data={tiny_data}", "--kimg=1", "--dry-run")
    assert result.exit_code == 0, result.output
    options = json.loads(result.output)
    assert options["G_kwargs"]["rendering_kwargs"]["superresolution_module"].endswith("SuperresolutionSmall2X")
    assert options["loss_kwargs"]["neural_rendering_resolution_initial"] == 16
    assert "plane_projection" not in options["G_kwargs"]["rendering_kwargs"]  # the official options: compat
    assert not (tmp_path / "out").exists()
    result = train(*TINY, f"--outdir={tmp_path / 'out'}", f"--data={tiny_data}", "--kimg=1", "--dry-run",
                   "--plane_projection=consistent")
    assert json.loads(result.output)["G_kwargs"]["rendering_kwargs"]["plane_projection"] == "consistent"


def test_triplane_generator_takes_eg3d_defaults():
    base = ["--outdir=runs", "--cfg=ffhq", "--data=ffhq.zip", "--gpus=1", "--batch=4", "--gamma=1"]
    eg3d = training_spec(cli_options([*base, "--generator=triplane"]), 512, 10)
    assert eg3d["G_kwargs"]["class_name"] == "training.triplane.TriPlaneGenerator"
    assert (eg3d["G_kwargs"]["channel_base"], eg3d["G_kwargs"]["channel_max"]) == (32768, 512)
    assert eg3d["G_kwargs"]["mapping_kwargs"] == {"num_layers": 2}
    assert "per_dir_plane_number" not in eg3d["G_kwargs"] and eg3d["D_kwargs"]["channel_base"] == 32768
    op3d_spec = training_spec(cli_options(base), 512, 10)
    assert (op3d_spec["G_kwargs"]["channel_base"], op3d_spec["G_kwargs"]["channel_max"]) == (24576, 384)
    assert op3d_spec["G_kwargs"]["mapping_kwargs"] == {"num_layers": 8}
    with pytest.raises(OptionsError, match="--plane_projection: expected one of compat, consistent"):
        training_spec(dataclasses.replace(cli_options(base), plane_projection="sideways"), 512, 10)


def test_tiny_eg3d_run(tiny_data, tmp_path):
    result = train(*TINY, "--generator=triplane", f"--outdir={tmp_path}", f"--data={tiny_data}", "--kimg=0.004",
                   "--plane_projection=consistent")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path)
    snapshot = load_network_pkl(run_dir / "network-snapshot-000000.pkl")
    assert type(snapshot["G_ema"]).__name__ == "TriPlaneGenerator"
    assert snapshot["G"].settings.plane_projection == snapshot["G_ema"].settings.plane_projection == "consistent"


def test_weights_only_resume_and_mismatch(tiny_data, tmp_path):
    assert train(*TINY, f"--outdir={tmp_path / 'a'}", f"--data={tiny_data}", "--kimg=0.004").exit_code == 0
    (first,) = run_dirs(tmp_path / "a")
    (first / "training-state-000000.pt").unlink()  # like an official pickle: weights only
    result = train(*TINY, f"--outdir={tmp_path / 'b'}", f"--data={tiny_data}", "--kimg=0.004",
                   f"--resume={first / 'network-snapshot-000000.pkl'}")
    assert result.exit_code == 0, result.output
    (second,) = run_dirs(tmp_path / "b")
    assert "from kimg 0.000" in (second / "log.txt").read_text()
    options = json.loads((second / "training_options.json").read_text())
    assert options["loss_kwargs"]["blur_init_sigma"] == 0 and options["ema_rampup"] is None
    result = CliRunner().invoke(train_script.main, [*TINY, f"--outdir={tmp_path / 'c'}", f"--data={tiny_data}",
                                                    "--kimg=0.004", "--cmax=32", f"--resume={first}"])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1, result.output
    assert "does not fit this configuration" in result.output
    assert not (tmp_path / "c").exists()
    result = CliRunner().invoke(train_script.main, [*TINY, f"--outdir={tmp_path / 'c'}", f"--data={tiny_data}",
                                                    "--kimg=0.004", "--plane_projection=consistent",
                                                    f"--resume={first}"])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1, result.output
    assert "--plane_projection: " in result.output and "trained with 'compat'" in result.output
    assert not (tmp_path / "c").exists()


def test_missing_detector_is_a_one_line_note(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "dnnlib"))
    monkeypatch.delenv("OP3D_DETECTOR_DIR", raising=False)
    args = [a for a in TINY if not a.startswith("--metrics")]
    result = train(*args, "--metrics=fid50k_full", f"--detector-dir={tmp_path / 'none'}", f"--outdir={tmp_path}",
                   f"--data={tiny_data}", "--kimg=0.004")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path)
    notes = [line for line in (run_dir / "log.txt").read_text().splitlines() if line.startswith("metrics skipped")]
    assert len(notes) == 1 and "inception-2015-12-05.pkl not found" in notes[0]


def test_tick_statistics_accumulate_tensors_and_lists():
    """Stats sums each name's values (tensors of any shape, 0-d counts, plain lists) over a tick and summarises them
    once: count, mean and population std; the summary starts the next tick empty."""
    from op3d.training.progress import Stats

    stats = Stats()
    stats.add("Loss/G", torch.tensor([[1.0], [2.0]]))
    stats.add("Loss/G", [3.0])
    stats.add("Progress/nonfinite_grads/Gmain", torch.tensor(5))
    stats.add("Progress/nonfinite_grads/Gmain", torch.tensor(0))
    summary = stats.summary(torch.device("cpu"))
    assert summary["Loss/G"]["num"] == 3 and summary["Loss/G"]["mean"] == pytest.approx(2.0)
    assert summary["Loss/G"]["std"] == pytest.approx(math.sqrt(2 / 3))
    assert summary["Progress/nonfinite_grads/Gmain"] == {"num": 2, "mean": 2.5, "std": 2.5}
    assert stats.summary(torch.device("cpu")) == {}
