"""The model a viewer shows: the generator, its device, kind, pose source (conditional models) and the defaults the
page starts from (iso level, cameras, resolutions).

    model = ViewerModel.load("network-snapshot.pkl", device="auto", pose_dir=None)
"""

from __future__ import annotations

import dataclasses
import pickle

import torch

from op3d import generation
from op3d.generation_cond import POSE_DIR

SHHQ_LEVEL = 40.0   # the README's ChimeraX level for SHHQ (bodies) and the conditional gen_samples default
FACE_LEVEL = 10.0   # FFHQ / AFHQ, and the unconditional gen_samples default
RADIUS_TOLERANCE = 1e-4  # world units: float32 labels of the training orbit are this close to its radius


class NetworkLoadError(ValueError):
    """The network could not be loaded; the message is one line naming the file."""


@dataclasses.dataclass
class ViewerModel:
    """A loaded generator and its viewer defaults. kind: 'orthoplanes', 'triplanes' or 'conditional'."""

    G: torch.nn.Module
    device: torch.device
    name: str
    kind: str
    level: float
    pose_dir: str | None = None
    shape_res: int = 128

    @staticmethod
    def load(network: str | None, device: str = "auto", pose_dir: str | None = None) -> "ViewerModel":
        """Load a snapshot (official or op3d), 'random-tiny', or the bundled demo model (network None)."""
        from op3d.checkpoints import CheckpointError, load_network_pkl

        dev = generation.pick_device(device)
        network = generation.DEMO_NETWORK if network is None else network
        dataset = ""
        try:
            if network == generation.RANDOM_TINY:
                G = generation.random_tiny_generator().to(dev)
            else:
                generation.refuse_url(network, "--network")
                data = load_network_pkl(network, device=dev)
                G = data["G_ema"]
                dataset = str((data.get("training_set_kwargs") or {}).get("path", ""))
        except (CheckpointError, pickle.UnpicklingError, OSError, ValueError, EOFError, KeyError) as err:
            lines = str(err).strip().splitlines()
            raise NetworkLoadError(f"--network: cannot load {network}: {lines[0] if lines else type(err).__name__}") \
                from None
        G = G.eval().requires_grad_(False)
        kind = {"ConditionalOrthoPlanesGenerator": "conditional",
                "TriPlaneGenerator": "triplanes"}.get(type(G).__name__, "orthoplanes")
        level = SHHQ_LEVEL if kind == "conditional" or "shhq" in dataset.lower() else FACE_LEVEL
        if kind == "conditional" and pose_dir is None:
            pose_dir = POSE_DIR
        shape_res = generation.DEMO_SHAPE_RES if network == generation.DEMO_NETWORK else 256
        return ViewerModel(G, dev, network, kind, level, pose_dir, shape_res)

    @property
    def conditional(self) -> bool:
        return self.kind == "conditional"

    def pose(self, pose_id: int | None) -> dict | None:
        """The batch-1 pose condition of a pose id (conditional models; None otherwise). Raises
        generation_cond.PoseSelectionError (a ValueError) naming the folder when there is no such pose."""
        if not self.conditional:
            return None
        from op3d.generation_cond import check_pose_fits, load_pose, pose_file

        path = pose_file(self.pose_dir, 0 if pose_id is None else pose_id)
        conditions = load_pose(path, device=self.device)
        check_pose_fits(self.G, conditions, path)
        return conditions

    @property
    def training_fov_deg(self) -> float:
        return generation.OFFICIAL_FOV_DEG

    @property
    def neural_rendering_resolution(self) -> int:
        return int(self.G.neural_rendering_resolution)

    def shift_ray_range(self, distance: float) -> None:
        """Move the renderer's ray range with the camera's distance from the pivot, so that zooming keeps the box
        inside it (numeric ray_start/ray_end only; the 'auto' rule follows the box by itself). Distances within
        RADIUS_TOLERANCE of the training camera's keep the trained range exactly."""
        s = self.G.settings
        frontal = generation.conditioning_label(self.G)
        from op3d.viewer.camera import pivot_distance

        delta = distance - pivot_distance(frontal, s.avg_camera_pivot)
        if isinstance(s.ray_start, (int, float)) and isinstance(s.ray_end, (int, float)) and abs(delta) > RADIUS_TOLERANCE:
            start = max(1e-3, s.ray_start + delta)
            self.G.rendering_kwargs.update(ray_start=start, ray_end=start + (s.ray_end - s.ray_start))
