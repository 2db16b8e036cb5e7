"""The viewer's controls (viser GUI of one tab) and what they mean: the latent, the view, the mesh."""

from __future__ import annotations

from op3d.viewer.render import NOISE_MODES, OUTPUTS, Latent

OUTPUT_NAMES = {"image": "final image", "image_raw": "raw image", "image_depth": "depth", "all": "all side by side"}
MAX_SEED = 2 ** 32 - 1


class Controls:
    """GUI handles of one tab; every change calls session.changed() (buttons call the session's actions)."""

    def __init__(self, gui, model, session):
        G = model.G
        num_ws = G.backbone.mapping.num_ws
        nrr = model.neural_rendering_resolution
        self.num_ws = num_ws
        self.status = gui.add_markdown("connecting...")
        with gui.add_folder("Latent"):
            self.seed = gui.add_number("Seed", 0, min=0, max=MAX_SEED, step=1)
            self.random = gui.add_button("Random seed")
            self.psi = gui.add_slider("Truncation psi", -1.0, 2.0, 0.05, 0.7)
            self.cutoff = gui.add_slider("Truncation cutoff", 0, num_ws, 1, num_ws,
                                         hint=f"truncate the first N ws ({num_ws} = all)")
            self.noise = gui.add_dropdown("Noise mode", NOISE_MODES, initial_value="const")
            self.mix_seed = gui.add_number("Mix seed", -1, min=-1, max=MAX_SEED, step=1,
                                           hint="style mixing: -1 = off")
            self.mix_cutoff = gui.add_slider("Mix from w", 0, num_ws - 1, 1, min(7, num_ws - 1),
                                             hint="ws from this index on come from the mix seed")
            self.pose_id = gui.add_number("Pose id", 0, min=0, step=1, visible=model.conditional,
                                          hint=f"pose file in {model.pose_dir}")
        with gui.add_folder("View"):
            self.output = gui.add_dropdown("Show", OUTPUTS, initial_value="image")
            self.resolution = gui.add_number("Neural rendering res", nrr, min=8, max=1024, step=8)
            self.preview_resolution = gui.add_number("Res while moving", max(8, nrr // 2), min=8, max=1024, step=8)
            self.raw_while_moving = gui.add_checkbox("Raw image while moving", model.G.img_resolution > 128,
                                                     hint="skip the superresolution while the camera moves (the "
                                                     "raw image, resized): much faster for large models")
            self.fov = gui.add_slider("FOV (deg)", 5.0, 60.0, 0.1, model.training_fov_deg,
                                      hint="official --fov-deg convention")
            self.snap = gui.add_button("Snap to training camera range")
            self.reset = gui.add_button("Reset camera")
            self.save = gui.add_button("Save view")
        with gui.add_folder("Mesh"):
            self.mesh_resolution = gui.add_number("Mesh res", model.shape_res, min=8, max=1024, step=8)
            self.level = gui.add_number("Iso level", model.level, step=0.5)
            self.mesh_colors = gui.add_checkbox("Colours", True)
            self.extract = gui.add_button("Extract mesh")
            self.mesh_visible = gui.add_checkbox("Show mesh", True)
            self.mesh_beside = gui.add_checkbox("Beside the render", True)
            self.downloads = {fmt: gui.add_button(f"Download {fmt}", disabled=True) for fmt in (".ply", ".obj", ".mrc")}
        self._connect(session)

    def _connect(self, session) -> None:
        for handle in (self.seed, self.psi, self.cutoff, self.noise, self.mix_seed, self.mix_cutoff, self.pose_id,
                       self.output, self.resolution, self.preview_resolution, self.raw_while_moving):
            handle.on_update(lambda _: session.changed())
        self.fov.on_update(lambda _: session.set_fov())
        self.random.on_click(lambda _: session.random_seed())
        self.snap.on_click(lambda _: session.snap_camera())
        self.reset.on_click(lambda _: session.reset_camera())
        self.save.on_click(lambda _: session.save_view())
        self.extract.on_click(lambda _: session.extract())
        self.mesh_visible.on_update(lambda _: session.show_mesh())
        self.mesh_beside.on_update(lambda _: session.show_mesh())
        for fmt, button in self.downloads.items():
            button.on_click(lambda _, fmt=fmt: session.download(fmt))

    def latent(self) -> Latent:
        """The latent the controls describe (ValueError on an invalid combination)."""
        cutoff = int(self.cutoff.value)
        mix = int(self.mix_seed.value)
        return Latent(seed=int(self.seed.value), psi=float(self.psi.value),
                      cutoff=None if cutoff >= self.num_ws else cutoff, noise_mode=self.noise.value,
                      mix_seed=None if mix < 0 else mix, mix_cutoff=int(self.mix_cutoff.value),
                      pose_id=int(self.pose_id.value) if self.pose_id.visible else None)

    def show_status(self, frame, key: Latent, resolution: int, preview: bool, count: int) -> None:
        t = frame.timings
        h, w = frame.image.shape[:2]
        self.status.content = (
            f"frame {count} · seed {key.seed} · {'preview' if preview else 'refined'} at {int(resolution)} px · "
            f"{w}x{h}  \nrenderer {t['renderer'] * 1e3:.0f} ms · superres {t['superresolution'] * 1e3:.0f} ms · "
            f"transfer {t['transfer'] * 1e3:.0f} ms" + (f" · backbone {t['backbone'] * 1e3:.0f} ms"
                                                         if t["backbone"] else ""))

    def mesh_ready(self, vertices: int, faces: int) -> None:
        for button in self.downloads.values():
            button.disabled = False
        self.status.content = f"mesh: {vertices} vertices, {faces} faces"
