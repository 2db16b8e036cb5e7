"""gen_videos.py and op3d.video: the periodic W path, the camera orbit, videos read back with the expected frame
count and size, meshes per frame, and one-line errors that leave no output behind."""

import importlib.util
import math
import pathlib
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from op3d import generation, shapes, video
from op3d.cameras import unpack_label

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "gen_samples" / "unconditional" / "gen_videos.py"
spec = importlib.util.spec_from_file_location("gen_videos_script", SCRIPT)
gen_videos = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen_videos)

FAST = ["--network=random-tiny", "--w-frames=2", "--nrr=16", "--sample_mult=0.25"]


def run(*args):
    return CliRunner().invoke(gen_videos.main, [str(a) for a in args], catch_exceptions=False)


def read_frames(path):
    """All frames of a video, [F, H, W, 3] uint8."""
    return iio.imread(path)


# --- library ---------------------------------------------------------------------------------------------------------

def test_periodic_cubic_passes_through_keyframes_and_closes():
    keys = np.random.RandomState(0).randn(4, 3, 5)
    path = video.periodic_cubic(keys)
    for k in range(4):
        assert np.allclose(path(k), keys[k], atol=1e-10)
        assert np.allclose(path(k + 4), keys[k], atol=1e-10)  # wraps around
    assert np.allclose(path(3.999999), path(-0.000001), atol=1e-6)  # continuous across the seam
    # the value between keyframes is a smooth blend, not a copy of a neighbour
    assert not np.allclose(path(1.5), keys[1]) and not np.allclose(path(1.5), keys[2])


def test_periodic_cubic_matches_independent_references():
    from scipy.interpolate import CubicSpline, interp1d

    keys = np.random.RandomState(1).randn(5, 7)
    t = np.linspace(0, 5, 41, endpoint=False)
    ours = np.stack([video.periodic_cubic(keys)(x) for x in t])
    # the official construction: a cubic interp1d over the keyframes tiled five times
    x = np.arange(-10, 15)
    tiled = interp1d(x, np.tile(keys, (5, 1)), kind="cubic", axis=0)(t)
    assert np.abs(ours - tiled).max() < 1e-9
    # a truly periodic spline differs only by the faded-out end conditions
    closed = CubicSpline(np.arange(6), np.concatenate([keys, keys[:1]]), bc_type="periodic", axis=0)(t)
    assert np.abs(ours - closed).max() < 0.05 * np.abs(keys).max()


def test_periodic_cubic_single_keyframe_is_constant():
    keys = np.arange(6.0).reshape(1, 2, 3)
    assert np.array_equal(video.periodic_cubic(keys)(0.37), keys[0])


def test_orbit_angles_follow_the_official_path():
    yaw, pitch = video.orbit_angles(0, 40)
    assert yaw == pytest.approx(math.pi / 2)
    assert pitch == pytest.approx(math.pi / 2 - 0.05 + 0.3)
    yaw, pitch = video.orbit_angles(10, 40)  # a quarter period
    assert yaw == pytest.approx(math.pi / 2 + 0.8)
    assert pitch == pytest.approx(math.pi / 2 - 0.05, abs=1e-12)


def test_camera_trajectory_orbits_the_origin_looking_at_the_pivot():
    pivot = torch.tensor([0.0, 0.05, 0.2])
    labels = video.camera_trajectory(12, pivot, 2.7, video.CFG_FOCALS["shapenet"])
    assert labels.shape == (12, 25)
    cam2world, intrinsics = unpack_label(labels)
    origins = cam2world[:, :3, 3]
    assert torch.allclose(torch.linalg.norm(origins, dim=1), torch.full((12,), 2.7), atol=1e-5)
    to_pivot = torch.nn.functional.normalize(pivot - origins, dim=1)
    assert torch.allclose(cam2world[:, :3, 2], to_pivot, atol=1e-5)  # looking at the pivot
    assert torch.allclose(intrinsics[:, 0, 0], torch.full((12,), 1.7074))
    assert video.CFG_FOCALS["ffhq"] == video.CFG_FOCALS["afhq"] == 4.2647


def test_arrange_keyframes_layout_and_errors():
    grid = video.arrange_keyframes(list(range(8)), (2, 2))
    assert grid.shape == (2, 2, 2)
    assert grid[0, 1].tolist() == [2, 3] and grid[1, 0].tolist() == [4, 5]
    assert video.arrange_keyframes([4, 9], (1, 1), num_keyframes=3)[0, 0].tolist() == [4, 9, 4]
    with pytest.raises(ValueError, match="do not fill a 2x2 grid"):
        video.arrange_keyframes([0, 1, 2], (2, 2))
    with pytest.raises(ValueError, match="--num-keyframes"):
        video.arrange_keyframes([0, 1], (1, 1), num_keyframes=0)


def test_parse_grid_truncation_and_layout():
    assert video.parse_grid("3x2") == (3, 2)
    for bad in ("3", "0x2", "axb", "2x2x2"):
        with pytest.raises(ValueError, match="--grid"):
            video.parse_grid(bad)
    assert video.resolve_truncation(0.7, 0) == (1.0, 14)
    assert video.resolve_truncation(1.0, 5) == (1.0, 14)
    assert video.resolve_truncation(0.7, 8) == (0.7, 8)
    cells = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(2, 1).repeat(3, 2)  # 6 cells of 2x3
    frame = video.layout_grid(cells, (3, 2))
    assert frame.shape == (4, 9, 1)
    assert frame[0, 3, 0] == 1 and frame[2, 0, 0] == 3 and frame[3, 8, 0] == 5


# --- the script -------------------------------------------------------------------------------------------------------

def test_script_runs_from_any_cwd(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), *FAST, "--seeds=0-1", "--outdir=out"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    frames = read_frames(out / "interpolation.mp4")
    assert frames.shape == (2 * 2, 128, 128, 3)
    assert frames.std() > 1  # not a blank video
    trajectory = np.load(out / "interpolation_trajectory.npy")
    assert trajectory.shape == (4, 25) and trajectory.dtype == np.float32
    cam2world = trajectory[0, :16].reshape(4, 4)
    pivot = np.zeros(3)  # random-tiny's avg_camera_pivot
    assert np.linalg.norm(cam2world[:3, 3] - pivot) == pytest.approx(2.7, abs=1e-5)
    assert np.allclose(trajectory[0, 16:], [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1])
    assert sorted(p.name for p in out.iterdir()) == ["interpolation.mp4", "interpolation_trajectory.npy"]


@pytest.mark.parametrize("mode", ["image_raw", "image_depth"])
def test_neural_resolution_modes(tmp_path, mode):
    result = run(*FAST, "--seeds=0-1", f"--image_mode={mode}", f"--outdir={tmp_path}", "--cfg=shapenet")
    assert result.exit_code == 0, result.output
    frames = read_frames(tmp_path / "interpolation.mp4")
    assert frames.shape == (4, 16, 16, 3)
    if mode == "image_depth":  # normalised to each frame's own range: near white, far black
        assert frames.reshape(4, -1).max(1).min() > 200 and frames.reshape(4, -1).min(1).max() < 55
    assert np.load(tmp_path / "interpolation_trajectory.npy")[0, 16] == pytest.approx(1.7074)


def test_grid_and_one_video_per_seed(tmp_path):
    result = run(*FAST, "--seeds=0-3", "--grid=2x1", "--image_mode=image_raw", f"--outdir={tmp_path / 'grid'}")
    assert result.exit_code == 0, result.output
    assert read_frames(tmp_path / "grid" / "interpolation.mp4").shape == (2 * 2, 16, 32, 3)  # 2 keyframes x 2
    result = run(*FAST, "--seeds=3,5", "--interpolate=false", "--image_mode=image_raw", f"--outdir={tmp_path / 's'}")
    assert result.exit_code == 0, result.output
    for seed in (3, 5):
        assert read_frames(tmp_path / "s" / f"seed{seed:04d}.mp4").shape == (2, 16, 16, 3)
        assert np.load(tmp_path / "s" / f"seed{seed:04d}_trajectory.npy").shape == (2, 25)


def test_shapes_per_frame(tmp_path):
    G = generation.random_tiny_generator()
    ws = generation.seed_to_ws(G, 0)
    sigma = shapes.extract_density(G, ws, 16, mixed=True)
    level = float(np.quantile(sigma, 0.5))  # an untrained model: pick a level its density crosses
    result = run(*FAST, "--seeds=0-1", "--w-frames=1", "--image_mode=image_raw", "--shapes=true", "--shape-res=16",
                 f"--level={level}", f"--outdir={tmp_path / 'a'}")
    assert result.exit_code == 0, result.output
    mesh_dir = tmp_path / "a" / "interpolation_0_1"
    assert (mesh_dir / "frame0000.ply").is_file()
    import trimesh

    mesh = trimesh.load(mesh_dir / "frame0000.ply", force="mesh")
    assert len(mesh.faces) > 0 and np.abs(mesh.vertices).max() <= 0.5 + 1e-6  # world units, inside the box
    # a level the density never reaches: warnings, no meshes, still a video
    result = run(*FAST, "--seeds=0-1", "--w-frames=1", "--image_mode=image_raw", "--shapes=true", "--shape-res=16",
                 "--level=1e9", f"--outdir={tmp_path / 'b'}")
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: frame") == 2
    assert list((tmp_path / "b" / "interpolation_0_1").iterdir()) == []
    assert (tmp_path / "b" / "interpolation.mp4").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--network=/nonexistent/G.pkl", "--seeds=0-1"], "/nonexistent/G.pkl"),
    (["--network=https://example.com/G.pkl", "--seeds=0-1"], "URL"),
    (["--network=BAD", "--seeds=0-1"], "pickle"),
    (["--network=random-tiny", "--seeds=0-x"], "--seeds"),
    (["--network=random-tiny", "--seeds=4294967296"], "2**32"),
    (["--network=random-tiny", "--seeds=0-1", "--grid=2by2"], "--grid"),
    (["--network=random-tiny", "--seeds=0-2", "--grid=2x2"], "2x2 grid"),
    (["--network=random-tiny", "--seeds=3", "--shapes=true"], "two seeds"),
    (["--network=random-tiny", "--seeds=0-1", "--w-frames=0"], "--w-frames"),
])
def test_errors_are_one_line_and_write_nothing(tmp_path, args, needle):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    args = [f"--network={bad}" if a == "--network=BAD" else a for a in args]
    out = tmp_path / "out"
    result = run(*args, f"--outdir={out}")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.output
    assert not out.exists()


def test_error_exit_code_from_the_shell(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--network=random-tiny", "--seeds=0-2", "--grid=2x2",
                             "--outdir=out"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error: --seeds") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_help_does_not_import_torch():
    code = ("import runpy, sys\n"
            f"sys.argv = [{str(SCRIPT)!r}, '--help']\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--interpolate" in result.stdout and result.stdout.strip().endswith("NO-TORCH"), result.stdout


def test_eg3d_checkpoint_video(fixture_file, tmp_path):
    pkl = fixture_file("eg3d/eg3d_ffhq/G.pkl")
    result = run(f"--network={pkl}", "--seeds=0", "--w-frames=2", "--nrr=32", "--sample_mult=0.25",
                 f"--outdir={tmp_path}")
    assert result.exit_code == 0, result.output
    frames = read_frames(tmp_path / "interpolation.mp4")
    assert frames.shape[0] == 2 and frames.shape[1:] == (512, 512, 3)
