"""One browser tab: its controls (viser GUI), its camera, and its render worker with progressive refinement.

Each tab has a worker thread that renders only the latest request (camera moves and control changes coalesce).
While the camera has moved within the last SETTLE_SECONDS it renders at the preview resolution; once the camera
rests it renders once more at the full neural rendering resolution. Renders of all tabs go through the shared
RenderService, one at a time. A failing render shows a notification and the status line; the worker carries on.
"""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time

import numpy as np

from op3d.viewer import camera as cam
from op3d.viewer.controls import Controls
from op3d.viewer.mesh import MESH_FORMATS, extract_mesh, mesh_bytes
from op3d.viewer.render import one_line

SETTLE_SECONDS = 0.25
JPEG_QUALITY = 90


def letterbox(image: np.ndarray, aspect: float, fill: int = 0) -> np.ndarray:
    """Pad an image [H, W, 3] with `fill` to a width / height ratio `aspect`, centred: a square render then spans
    the page's full height, so its vertical field of view is the page camera's."""
    h, w = image.shape[:2]
    if aspect <= 0 or abs(w / h - aspect) < 1e-3:
        return image
    if w / h < aspect:
        pad = int(round(h * aspect)) - w
        return np.pad(image, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)), constant_values=fill)
    pad = int(round(w / aspect)) - h
    return np.pad(image, ((pad // 2, pad - pad // 2), (0, 0), (0, 0)), constant_values=fill)


class Session:
    """The state and worker of one connected client (see the module docstring)."""

    def __init__(self, client, service, outdir: str | None = None):
        self.client = client
        self.service = service
        self.model = service.model
        self.outdir = outdir
        self.wake = threading.Event()
        self.alive = True
        self.last_move = 0.0
        self.refined = True   # the last full-resolution render shows the latest request
        self.requests = 0     # camera moves and control changes so far
        self.frames = 0
        self.last_frame = None
        self.mesh = None
        self.mesh_key = None
        self.controls = Controls(client.gui, self.model, self)
        self.reset_camera()
        client.camera.on_update(lambda _: self.camera_moved())
        self.worker = threading.Thread(target=self.run, name=f"op3d-viewer-client-{client.client_id}", daemon=True)
        self.worker.start()

    # --- requests -------------------------------------------------------------------------------------------------
    def camera_moved(self) -> None:
        self.last_move = time.monotonic()
        self.requests += 1
        self.refined = False
        self.wake.set()

    def changed(self) -> None:
        """A control changed: render again at full resolution."""
        self.requests += 1
        self.refined = False
        self.wake.set()

    def close(self) -> None:
        self.alive = False
        self.wake.set()

    # --- camera ---------------------------------------------------------------------------------------------------
    def place_camera(self, position, look_at) -> None:
        c = self.client.camera
        with self.client.atomic():
            c.up_direction = cam.WORLD_UP
            c.position = tuple(float(v) for v in position)  # moves look_at along: set look_at after it
            c.look_at = tuple(float(v) for v in look_at)
            c.fov = cam.official_fov_to_vertical(self.controls.fov.value)

    def set_fov(self) -> None:
        self.client.camera.fov = cam.official_fov_to_vertical(self.controls.fov.value)

    def reset_camera(self) -> None:
        """The frontal training camera."""
        s = self.model.G.settings
        position, _ = cam.orbit_pose(np.pi / 2, np.pi / 2, s.avg_camera_pivot, s.avg_camera_radius)
        self.place_camera(position, s.avg_camera_pivot)

    def snap_camera(self) -> None:
        s = self.model.G.settings
        position, _ = cam.snap_to_training_range(self.client.camera.position, s.avg_camera_pivot,
                                                 s.avg_camera_radius)
        self.place_camera(position, s.avg_camera_pivot)

    def label(self):
        c = self.client.camera
        return cam.browser_label(c.position, c.wxyz, c.fov, device="cpu")

    # --- worker ---------------------------------------------------------------------------------------------------
    def run(self) -> None:
        while self.alive:
            woke = self.wake.wait(timeout=SETTLE_SECONDS / 2)
            if not self.alive:
                return
            moving = time.monotonic() - self.last_move < SETTLE_SECONDS
            if woke:
                self.wake.clear()
            elif self.refined or moving:
                continue
            try:
                self.render_once(preview=moving)
            except Exception as err:  # noqa: BLE001 - e.g. the tab closed mid-frame: report and keep serving
                self.report(one_line(err))

    def render_once(self, preview: bool) -> None:
        ctl = self.controls
        requests = self.requests
        try:
            key = ctl.latent()
        except ValueError as err:
            self.report(str(err))
            self.refined = True
            return
        resolution = ctl.preview_resolution.value if preview else ctl.resolution.value
        superresolution = not (preview and ctl.raw_while_moving.value)
        frame = self.service.render(key, self.label(), int(resolution), ctl.output.value, superresolution)
        if frame.error is not None:
            self.refined = True
            self.report(f"render failed: {frame.error}")
            return
        start = time.perf_counter()
        fill = 255 if self.model.G.settings.white_back else 0
        self.client.scene.set_background_image(letterbox(frame.image, self.client.camera.aspect, fill),
                                               format="jpeg", jpeg_quality=JPEG_QUALITY)
        self.client.flush()
        frame.timings["transfer"] = time.perf_counter() - start
        self.frames += 1
        self.last_frame = frame
        self.refined = not preview and requests == self.requests
        ctl.show_status(frame, key, resolution, preview, self.frames)

    def report(self, message: str) -> None:
        """Show an error in the page (a notification and the status line)."""
        self.controls.status.content = f"**Error:** {message}"
        self.client.add_notification("op3d viewer", message, color="red", auto_close_seconds=10.0)

    # --- actions --------------------------------------------------------------------------------------------------
    def random_seed(self) -> None:
        self.controls.seed.value = random.randrange(0, 2 ** 31)

    def save_view(self) -> None:
        """Download the current image (PNG) and its camera label (JSON, 25 floats); also write them to --outdir."""
        from PIL import Image

        if self.last_frame is None:
            self.report("nothing rendered yet")
            return
        key = self.controls.latent()
        name = f"seed{key.seed:04d}_view{self.frames:05d}"
        png = io.BytesIO()
        Image.fromarray(self.last_frame.image).save(png, format="PNG")
        label = json.dumps({"label": [float(v) for v in self.last_frame.label[0].tolist()], "seed": key.seed,
                            "truncation_psi": key.psi})
        files = {f"{name}.png": png.getvalue(), f"{name}.json": label.encode()}
        for filename, data in files.items():
            if self.outdir is not None:
                os.makedirs(self.outdir, exist_ok=True)
                with open(os.path.join(self.outdir, filename), "wb") as f:
                    f.write(data)
            self.client.send_file_download(filename, data, save_immediately=True)
        self.client.flush()

    def extract(self) -> None:
        """Extract the mesh of the current latent and show it in the scene."""
        ctl = self.controls
        key = ctl.latent()
        note = self.client.add_notification("op3d viewer", "extracting the mesh...", loading=True,
                                            with_close_button=False)
        try:
            mesh = extract_mesh(self.service, key, int(ctl.mesh_resolution.value), float(ctl.level.value),
                                ctl.mesh_colors.value)
        except Exception as err:  # noqa: BLE001 - no surface at this level, out of memory: tell the page
            note.remove()
            self.report(f"mesh failed: {one_line(err)}")
            return
        note.remove()
        self.mesh, self.mesh_key = mesh, key
        self.show_mesh()
        ctl.mesh_ready(len(mesh.vertices), len(mesh.faces))

    def show_mesh(self) -> None:
        import trimesh

        if self.mesh is None:
            return
        # Beside: to the left of the rendered object (world -x, the frontal camera's left), clear of its box centre.
        offset = -0.8 * self.model.G.settings.box_warp if self.controls.mesh_beside.value else 0.0
        tm = trimesh.Trimesh(self.mesh.vertices, self.mesh.faces, vertex_colors=self.mesh.colors, process=False)
        self.client.scene.add_mesh_trimesh("/mesh", tm, position=(offset, 0.0, 0.0),
                                           visible=self.controls.mesh_visible.value, cast_shadow=False,
                                           receive_shadow=False)

    def download(self, fmt: str) -> None:
        if fmt not in MESH_FORMATS or self.mesh is None:
            self.report("extract a mesh first")
            return
        name = f"seed{self.mesh_key.seed:04d}_Geometry{fmt}"
        self.client.send_file_download(name, mesh_bytes(self.mesh, fmt), save_immediately=True)
        self.client.flush()
