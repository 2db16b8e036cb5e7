"""The browser viewer (op3d.viewer, gen_samples/unconditional/viewer.py): camera mapping, plane cache, lock, error
reporting, bad input, and the real page driven in headless Chromium (Playwright).

The browser test needs Debian's chromium at /usr/bin/chromium (or $OP3D_CHROMIUM); without it, it skips, and fails
under OP3D_REQUIRE_FIXTURES=1 (CI), where .ci/run installs it. OP3D_VIEWER_SCREENSHOT=<path> also writes the page's
screenshot there (docs/viewer.png was made so).
"""

import io
import json
import math
import os
import pathlib
import socket
import threading

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from op3d import generation, shapes
from op3d.cameras import fov_to_intrinsics
from op3d.viewer import camera as cam
from op3d.viewer.app import ViewerStartError, check_bind
from op3d.viewer.mesh import extract_mesh, mesh_bytes
from op3d.viewer.model import NetworkLoadError, ViewerModel
from op3d.viewer.render import Latent, PlaneCache, RenderService
from op3d.viewer.session import letterbox
from conftest import _unavailable
from script_loading import load_script

CHROMIUM = os.environ.get("OP3D_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    return ViewerModel.load(None, "cpu")


# --- camera mapping ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("yaw, pitch", [(math.pi / 2, math.pi / 2), (1.2, 1.7), (2.1, 1.3)])
def test_browser_camera_maps_to_the_generator_label(yaw, pitch):
    """The page camera at an official sampler pose gives that pose's label: the 16 cam2world floats of
    op3d.cameras and the intrinsics of the official --fov-deg (converted to the page's vertical fov)."""
    pivot = (0.0, 0.0, 0.2)
    position, wxyz = cam.orbit_pose(yaw, pitch, pivot, 2.7)
    label = cam.browser_label(position, wxyz, cam.official_fov_to_vertical(18.837))
    torch.manual_seed(0)
    from op3d.cameras import LookAtPoseSampler, pack_label

    expected = pack_label(LookAtPoseSampler.sample(yaw, pitch, pivot, radius=2.7), fov_to_intrinsics(18.837))
    torch.testing.assert_close(label, expected, atol=2e-6, rtol=0)
    back_position, back_wxyz = cam.label_to_pose(label)
    np.testing.assert_allclose(back_position, position, atol=1e-6)
    np.testing.assert_allclose(cam.quaternion_to_matrix(back_wxyz), cam.quaternion_to_matrix(wxyz), atol=1e-6)
    np.testing.assert_allclose(cam.orbit_angles(position), (yaw, pitch, 2.7), atol=1e-9)


def test_quaternions_round_trip_every_branch():
    rng = np.random.RandomState(0)
    for q in list(rng.randn(20, 4)) + [np.array([0.0, 1, 0, 0]), np.array([0.0, 0, 1, 0]), np.array([0.0, 0, 0, 1])]:
        q = q / np.linalg.norm(q) * (1 if q[0] >= 0 else -1)
        np.testing.assert_allclose(cam.matrix_to_quaternion(cam.quaternion_to_matrix(q)), q, atol=1e-9)


def test_snap_to_training_range_clamps_angles_and_radius():
    pivot = (0.0, 0.0, 0.2)
    far_side, _ = cam.orbit_pose(math.pi / 2 + 2.0, math.pi / 2 - 1.0, pivot, 5.0)
    position, wxyz = cam.snap_to_training_range(far_side, pivot, 2.7)
    yaw, pitch, radius = cam.orbit_angles(position)
    assert radius == pytest.approx(2.7)
    assert yaw == pytest.approx(math.pi / 2 + cam.MAX_YAW) and pitch == pytest.approx(math.pi / 2 - cam.MAX_PITCH)
    forward = cam.quaternion_to_matrix(wxyz)[:, 2]
    to_pivot = (np.array(pivot) - position) / np.linalg.norm(np.array(pivot) - position)
    np.testing.assert_allclose(forward, to_pivot, atol=1e-9)
    inside, _ = cam.orbit_pose(1.7, 1.5, pivot, 2.7)
    np.testing.assert_allclose(cam.snap_to_training_range(inside, pivot, 2.7)[0], inside, atol=1e-9)


def test_letterbox_keeps_the_square_at_full_height():
    image = np.full((4, 4, 3), 7, np.uint8)
    wide = letterbox(image, 2.0, fill=255)
    assert wide.shape == (4, 8, 3) and (wide[:, 2:6] == 7).all() and (wide[:, :2] == 255).all()
    assert letterbox(image, 0.5).shape == (8, 4, 3)


# --- render service ------------------------------------------------------------------------------------------------
def test_cached_plane_render_is_bitwise_the_full_forward(demo):
    """A view from the cache (backbone skipped) equals G.synthesis from ws, and the backbone runs once per latent."""
    service = RenderService(demo)
    G, key = demo.G, Latent(seed=3, psi=0.6)
    label = generation.camera_label(G, 1.3, 1.6)
    calls = []
    original = G.compute_planes
    G.compute_planes = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        first = service.render(key, label, 16, "image")
        second = service.render(key, label, 16, "image")
    finally:
        del G.compute_planes
    assert first.error is None and len(calls) == 1 and service.cache.hits == 1
    assert first.timings["backbone"] > 0 and second.timings["backbone"] == 0
    ws = generation.seed_to_ws(G, 3, 0.6)
    torch.manual_seed(0)
    with torch.no_grad():
        full = G.synthesis(ws, label, neural_rendering_resolution=16, noise_mode="const")
    np.testing.assert_array_equal(first.image, generation.to_uint8(full["image"])[0])
    sample, _ = service.sample(key)
    out = service.synthesize(sample, label, 16, "const")
    for name in ("image", "image_raw", "image_depth"):
        assert torch.equal(out[name], full[name]), name
    assert G.neural_rendering_resolution == demo.neural_rendering_resolution and G._last_planes is None


def test_preview_without_superresolution_is_the_resized_raw_image(demo):
    """superresolution=False ('Raw image while moving'): the image is the raw image resized to the final size, the
    superresolution module does not run, and it is back in place afterwards."""
    service = RenderService(demo)
    G, key = demo.G, Latent(seed=2)
    label = generation.camera_label(G, 1.4, 1.6)
    module = G.superresolution
    frame = service.render(key, label, 16, "image", superresolution=False)
    assert frame.error is None and frame.timings["superresolution"] == 0 and G.superresolution is module
    sample, _ = service.sample(key)
    raw = service.synthesize(sample, label, 16, "const")["image_raw"]
    resized = torch.nn.functional.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(frame.image, generation.to_uint8(resized)[0])
    full = service.render(key, label, 16, "image")
    assert full.timings["superresolution"] > 0 and not np.array_equal(full.image, frame.image)


def test_plane_cache_is_lru():
    cache = PlaneCache(2)
    computed = []
    for key in ("a", "b", "a", "c", "b"):
        cache.get(key, lambda k: computed.append(k) or k.upper())
    assert computed == ["a", "b", "c", "b"] and list(cache.entries) == ["c", "b"] and cache.hits == 1


def test_outputs_all_and_style_mixing(demo):
    service = RenderService(demo)
    label = generation.conditioning_label(demo.G)
    frame = service.render(Latent(seed=1), label, 16, "all")
    assert frame.image.shape == (32, 96, 3)
    plain = service.render(Latent(seed=1), label, 16, "image").image
    np.testing.assert_array_equal(frame.image[:, :32], plain)
    mixed = service.render(Latent(seed=1, mix_seed=2, mix_cutoff=0), label, 16, "image").image
    other = service.render(Latent(seed=2), label, 16, "image").image
    np.testing.assert_array_equal(mixed, other)  # mixing from w 0 on is the other seed


def test_zoom_shifts_the_ray_range_and_restores_it(demo):
    service = RenderService(demo)
    s = demo.G.settings
    seen = []
    original = demo.G.synthesis
    demo.G.synthesis = lambda *a, **k: seen.append((s.ray_start, s.ray_end)) or original(*a, **k)
    try:
        position, wxyz = cam.orbit_pose(math.pi / 2, math.pi / 2, s.avg_camera_pivot, 3.7)
        service.render(Latent(), cam.browser_label(position, wxyz, 0.3), 16)
    finally:
        del demo.G.synthesis
    assert seen == [pytest.approx((3.25, 4.3))] and (s.ray_start, s.ray_end) == (2.25, 3.3)


def test_lock_serialises_renders_of_many_tabs(demo):
    """Threads rendering different seeds at once never overlap inside the model and get the sequential images."""
    service = RenderService(demo)
    label = generation.conditioning_label(demo.G)
    expected = {seed: service.render(Latent(seed=seed), label, 16).image for seed in range(4)}
    inside, peak = [0], [0]
    original = demo.G.synthesis

    def counting(*args, **kwargs):
        inside[0] += 1
        peak[0] = max(peak[0], inside[0])
        try:
            threading.Event().wait(0.01)
            return original(*args, **kwargs)
        finally:
            inside[0] -= 1

    demo.G.synthesis = counting
    results = {}
    try:
        threads = [threading.Thread(target=lambda s=s: results.setdefault(s, [service.render(Latent(seed=s % 4),
                   label, 16).image for _ in range(3)])) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        del demo.G.synthesis
    assert peak[0] == 1
    for s, images in results.items():
        for image in images:
            np.testing.assert_array_equal(image, expected[s % 4])


def test_failing_render_is_reported_and_the_service_recovers(demo):
    service = RenderService(demo)
    label = generation.conditioning_label(demo.G)
    original = demo.G.synthesis

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 80.00 GiB\nmore details")

    demo.G.synthesis = out_of_memory
    try:
        frame = service.render(Latent(), label, 16)
    finally:
        demo.G.synthesis = original
        del demo.G.synthesis
    assert frame.image is None and frame.error == "RuntimeError: CUDA out of memory. Tried to allocate 80.00 GiB"
    assert not service.lock.locked() and demo.G._last_planes is None
    assert service.render(Latent(), label, 16).error is None
    assert "output must be one of" in service.render(Latent(), label, 16, "normals").error


def test_mesh_matches_op3d_shapes_and_exports(demo, tmp_path):
    service = RenderService(demo)
    mesh = extract_mesh(service, Latent(seed=0, psi=0.7), 32, 10.0, colors=True)
    ws = generation.seed_to_ws(demo.G, 0, 0.7)
    vertices, faces = shapes.density_mesh(shapes.extract_density(demo.G, ws, 32), 10.0)
    np.testing.assert_array_equal(mesh.vertices, vertices)
    np.testing.assert_array_equal(mesh.faces, faces)
    import trimesh

    for fmt in (".ply", ".obj"):
        loaded = trimesh.load(io.BytesIO(mesh_bytes(mesh, fmt)), file_type=fmt[1:], process=False)
        np.testing.assert_allclose(loaded.vertices, vertices, atol=1e-6)
        np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], mesh.colors)
    (tmp_path / "a.mrc").write_bytes(mesh_bytes(mesh, ".mrc"))
    import mrcfile

    with mrcfile.open(tmp_path / "a.mrc") as mrc:
        np.testing.assert_array_equal(mrc.data, mesh.volume)
    with pytest.raises(ValueError, match="outside the density range"):
        extract_mesh(service, Latent(seed=0), 16, 1e6, colors=False)


# --- bad input --------------------------------------------------------------------------------------------------
def test_bad_network_port_and_host_are_one_line_errors(tmp_path):
    script = load_script("gen_samples/unconditional/viewer.py", "viewer_script")
    runner = CliRunner()
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"not a pickle")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = {"--network": ["--network", str(bad), "--port", "0"],
                 "--port": ["--port", str(port)],
                 "--host": ["--host", "192.0.2.1", "--port", "0"]}  # TEST-NET-1: not this machine's
        for flag, args in cases.items():
            result = runner.invoke(script.main, args)
            assert result.exit_code == 1, (flag, result.output)
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"Error: {flag}"), (flag, result.output)
    with pytest.raises(NetworkLoadError, match="https://x"):
        ViewerModel.load("https://x/y.pkl")
    with pytest.raises(ViewerStartError, match="--port"):
        check_bind("127.0.0.1", 70000)
    help_text = runner.invoke(script.main, ["--help"]).output
    for flag in ("--network", "--port", "--host", "--device", "--pose-dir", "--outdir"):
        assert flag in help_text
    assert "127.0.0.1" in help_text


# --- the real page -------------------------------------------------------------------------------------------------
def _view_region(page, box):
    """The rendered image's part of the page (left of the control panel) as an RGB array."""
    from PIL import Image

    png = page.screenshot(clip=box)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _wait_frames(session, after, page, timeout_ms=15000):
    """Wait for a refined frame after frame number `after`."""
    waited = 0
    while session.frames <= after or not session.refined:
        page.wait_for_timeout(100)
        waited += 100
        assert waited < timeout_ms, f"no refined frame after {after} within {timeout_ms} ms (got {session.frames})"
    page.wait_for_timeout(400)  # the image reaching the page's canvas


def test_browser_page(demo, tmp_path):
    """The real page in headless Chromium: the image arrives and is not blank, orbiting and a new seed change it,
    the mesh button's .ply download opens with trimesh and equals op3d.shapes' mesh, and a failing render shows a
    message while the server keeps serving."""
    if not os.path.isfile(CHROMIUM):
        _unavailable(f"chromium not found at {CHROMIUM} (apt-get install chromium, or set OP3D_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    from op3d.viewer.app import ViewerApp

    app = ViewerApp(demo, port=0, outdir=str(tmp_path / "views"))
    box = {"x": 200, "y": 80, "width": 360, "height": 480}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 640}, accept_downloads=True)
            page.goto(app.url)
            page.get_by_role("button", name="Extract mesh").wait_for(timeout=15000)
            session = next(iter(app.sessions.values()))
            _wait_frames(session, 0, page)
            first = _view_region(page, box)
            assert first.std() > 10, "the page shows a blank image"
            frames = session.frames
            page.mouse.move(380, 320)
            page.mouse.down()
            page.mouse.move(470, 300, steps=6)
            page.mouse.up()
            _wait_frames(session, frames, page)
            orbited = _view_region(page, box)
            assert np.abs(orbited - first).mean() > 2, "orbiting did not change the image"
            frames = session.frames
            seed = page.get_by_label("Seed", exact=True)
            seed.fill("5")
            seed.press("Enter")
            _wait_frames(session, frames, page)
            assert session.controls.latent().seed == 5
            assert np.abs(_view_region(page, box) - orbited).mean() > 2, "a new seed did not change the image"

            page.get_by_label("Mesh res", exact=True).fill("32")
            page.get_by_label("Mesh res", exact=True).press("Enter")
            page.wait_for_timeout(300)
            page.get_by_role("button", name="Extract mesh").click()
            waited = 0
            while session.mesh is None:
                page.wait_for_timeout(100)
                waited += 100
                assert waited < 20000, "the mesh was not extracted"
            page.get_by_text(f"mesh: {len(session.mesh.vertices)} vertices").wait_for(timeout=30000)
            with page.expect_download(timeout=15000) as download:
                page.get_by_role("button", name="Download .ply").click()
            ply = tmp_path / "mesh.ply"
            download.value.save_as(ply)
            frames = session.frames
            page.mouse.move(380, 320)
            page.mouse.wheel(0, 400)  # zoom out: the render follows (ray range shifted), the mesh comes into view
            _wait_frames(session, frames, page)
            screenshot = page.screenshot()
            if os.environ.get("OP3D_VIEWER_SCREENSHOT"):
                pathlib.Path(os.environ["OP3D_VIEWER_SCREENSHOT"]).write_bytes(screenshot)

            original = demo.G.synthesis
            demo.G.synthesis = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory (test)"))
            try:
                page.get_by_label("Seed", exact=True).fill("6")
                page.get_by_label("Seed", exact=True).press("Enter")
                page.get_by_text("render failed: RuntimeError: out of memory (test)").first.wait_for(timeout=10000)
            finally:
                del demo.G.synthesis
                assert demo.G.synthesis == original
            frames = session.frames
            page.get_by_label("Seed", exact=True).fill("7")
            page.get_by_label("Seed", exact=True).press("Enter")
            _wait_frames(session, frames, page)
            with page.expect_download(timeout=10000):
                page.get_by_role("button", name="Save view").click()
            browser.close()
    finally:
        app.stop()
    import trimesh

    mesh = trimesh.load(ply, process=False)
    ws = generation.seed_to_ws(demo.G, 5, 0.7)
    vertices, faces = shapes.density_mesh(shapes.extract_density(demo.G, ws, 32), demo.level)
    np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, faces)
    assert mesh.visual.vertex_colors.shape == (len(vertices), 4)
    saved = json.loads(next((tmp_path / "views").glob("*.json")).read_text())
    assert len(saved["label"]) == 25 and saved["seed"] == 7
