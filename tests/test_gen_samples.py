"""gen_samples.py end to end: official fixture checkpoints give the official .mrc volumes; meshes in world units;
repeatable outputs; bad inputs give one-line errors and write nothing."""

import importlib.util
import pathlib

import mrcfile
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from op3d import generation, shapes

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "gen_samples" / "unconditional" / "gen_samples.py"
spec = importlib.util.spec_from_file_location("gen_samples_script", SCRIPT)
gen_samples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen_samples)

FAST = ["--network=random-tiny", "--views=0.4,-0.4", "--depth-samples=8"]


def run(*args):
    return CliRunner().invoke(gen_samples.main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("name,trunc", [("official/ffhq_k8_l10", 0.7), ("official/shhq_k4_l6", 1.0),
                                        ("eg3d/eg3d_ffhq", 0.7)])
def test_official_checkpoint_gives_official_volume(fixture_file, tmp_path, name, trunc):
    pkl = fixture_file(f"{name}/G.pkl")
    io = np.load(pkl.parent / "io.npz")
    out = tmp_path / "out"
    result = run(f"--network={pkl}", "--seeds=0-1", f"--trunc={trunc}", "--fov-deg=18", "--shapes=true",
                 "--shape-res=32", f"--outdir={out}")
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        assert Image.open(out / f"seed{seed:04d}_RGB.png").size == (7 * 512, 512)
        assert (out / f"seed{seed:04d}_Geometry.mrc").is_file()
    with mrcfile.open(out / "seed0000_Geometry.mrc") as mrc:
        volume = mrc.data.astype(np.float64)
    ref = io["shape_sigma_mrc"].astype(np.float64)
    diff = np.abs(volume - ref)
    assert volume.shape == ref.shape
    assert diff.mean() <= 1e-5 and diff.max() <= 2e-4


def test_same_seed_same_bytes(tmp_path):
    for run_dir in ("a", "b"):
        result = run(*FAST, "--seeds=3", "--shapes=true", "--shape-res=16", f"--outdir={tmp_path / run_dir}")
        assert result.exit_code == 0, result.output
    for name in ("seed0003_RGB.png", "seed0003_Geometry.mrc"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_extra_images(tmp_path):
    result = run(*FAST, "--seeds=0", "--extra-images=true", f"--outdir={tmp_path}")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "seed0000_RGB.png").size == (2 * 128, 128)
    assert Image.open(tmp_path / "seed0000_raw.png").size == (2 * 32, 32)
    assert Image.open(tmp_path / "seed0000_depth.png").size == (2 * 32, 32)


@pytest.mark.parametrize("fmt", [".ply", ".obj"])
def test_mesh_in_world_units(tmp_path, fmt):
    import trimesh

    G = generation.random_tiny_generator()
    sigma = shapes.extract_density(G, generation.seed_to_ws(G, 0), 24)
    level = float(np.quantile(sigma, 0.7))  # an untrained model: pick a level its density crosses
    result = run(*FAST, "--seeds=0", "--shapes=true", "--shape-res=24", f"--shape-format={fmt}", f"--level={level}",
                 f"--outdir={tmp_path}")
    assert result.exit_code == 0, result.output
    mesh = trimesh.load(tmp_path / f"seed0000_Geometry{fmt}", force="mesh")
    assert len(mesh.vertices) > 100 and len(mesh.faces) > 100
    assert np.abs(mesh.vertices).max() <= 0.5 + 1e-6  # inside the render box (box_warp 1), world units
    assert np.ptp(mesh.vertices, axis=0).max() > 0.1  # not voxel units of a tiny box either


def test_mesh_extraction_places_a_sphere_correctly():
    """density_mesh on an analytic sphere density: vertices at the sphere radius, in world coordinates."""
    grid = shapes.ShapeGrid(48, compat=False)
    points = grid.points().numpy()
    centre = np.array([0.1, -0.05, 0.0])
    sigma = (0.3 - np.linalg.norm(points - centre, axis=1)).reshape(48, 48, 48) * 100
    vertices, faces = shapes.density_mesh(sigma, level=0.0)
    radii = np.linalg.norm(vertices - centre, axis=1)
    assert np.abs(radii - 0.3).max() < 0.01
    # outward normals: the face normal points away from the centre
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (np.einsum("ij,ij->i", normals, tri.mean(1) - centre) > 0).mean() > 0.99


def test_shape_grid_compat_matches_official_samples(fixture_file):
    io = np.load(fixture_file("official/ffhq_k8_l10/io.npz"))
    grid = shapes.ShapeGrid(int(io["shape_res"]))
    assert np.array_equal(grid.points().numpy(), io["shape_samples"][0])
    assert grid.voxel_size == float(io["shape_voxel_size"])
    exact = shapes.ShapeGrid(int(io["shape_res"]), compat=False).points().numpy()
    assert not np.array_equal(exact, io["shape_samples"][0])
    assert np.abs(exact - io["shape_samples"][0]).max() <= grid.voxel_size


def test_chunking_does_not_change_the_density():
    G = generation.random_tiny_generator()
    ws = generation.seed_to_ws(G, 1)
    a = shapes.extract_density(G, ws, 12, max_batch=12 ** 3)
    b = shapes.extract_density(G, ws, 12, max_batch=100)
    assert np.array_equal(a, b)


def test_official_volume_border_and_flip():
    sigma = np.arange(64 ** 3, dtype=np.float32).reshape(64, 64, 64)
    volume = shapes.official_volume(sigma)
    pad = shapes.border_width(64)
    assert pad == 7
    assert (volume[:pad] == -1000).all() and (volume[:, :, -pad:] == -1000).all()
    assert volume[pad, pad, pad] == sigma[64 - 1 - pad, pad, pad]


def write_hostile(path):
    path.write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.")


@pytest.mark.parametrize("args,message", [
    (["--network=/nonexistent/G.pkl", "--seeds=0"], "/nonexistent/G.pkl"),
    (["--network=NOTPICKLE", "--seeds=0"], "cannot read pickle"),
    (["--network=HOSTILE", "--seeds=0"], "os.system"),
    (["--network=https://example.com/G.pkl", "--seeds=0"], "Download it first"),
    (["--network=random-tiny", "--seeds=a-b"], "--seeds"),
    (["--network=random-tiny", "--seeds=0", "--shape-format=.stl"], "--shape-format"),
    (["--network=random-tiny", "--seeds=0", "--shape-res=0"], "--shape-res"),
    (["--network=random-tiny", "--seeds=0", "--shapes=true", "--mesh-colors=true"], "--mesh-colors"),
])
def test_bad_input_one_line_error_and_no_output(tmp_path, args, message):
    not_pickle = tmp_path / "notes.txt"
    not_pickle.write_text("hello")
    hostile = tmp_path / "evil.pkl"
    write_hostile(hostile)
    args = [a.replace("NOTPICKLE", str(not_pickle)).replace("HOSTILE", str(hostile)) for a in args]
    out = tmp_path / "out"
    result = CliRunner().invoke(gen_samples.main, args + [f"--outdir={out}"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not out.exists()


def test_cli_runs_uninstalled_from_any_directory(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and "--shape-format" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuda not available")
def test_gpu_matches_cpu(tmp_path):
    for device in ("cpu", "cuda"):
        assert run(*FAST, "--seeds=0", f"--device={device}", f"--outdir={tmp_path / device}").exit_code == 0
    a = np.asarray(Image.open(tmp_path / "cpu" / "seed0000_RGB.png"), dtype=np.float64)
    b = np.asarray(Image.open(tmp_path / "cuda" / "seed0000_RGB.png"), dtype=np.float64)
    assert np.abs(a - b).mean() < 1.0
