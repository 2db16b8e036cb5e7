"""The SMPL-pose conditional OrthoPlanes generator (spec 4.3; official `training.kaolin_version.TriMultiPlaneGenerator`,
formerly `training.orthoplanes_smpl_cond`), with the official API:

    ws = G.mapping(z, c)                                   # z [B, z_dim], c [B, 25] (zeroed inside for 'noc' models)
    out = G.synthesis(ws, c, real_conditions)              # or G(z, c, real_conditions)
    out['image'] [B, 3, R, R], out['image_raw'] [B, 3, r, r], out['image_depth'] [B, 1, r, r],
    out['sdf'] = {'sdf', 'sdf_zero': [B, r*r, S+N, 1] sorted by depth; 'delta_x', 'eik_grad': [B, r*r*(S+N), 3]}

real_conditions is the batched pose-condition dict of spec 4.2 (see op3d.representation.body_warp). A sample point
x of the (R_x(pi)-rotated) rays goes: body frame -> inverse skinning to the canonical frame -> learned deformation
-> clamped trilinear plane lookup -> 4-layer decoder, whose sigma is a residual on the body's signed squared
distance: sdf = sigma + sdf_zero. Densities come from the Laplace SDF-to-density function.

The body mesh topology (`faces`, [F, 3] int64) comes from the checkpoint (official pickles carry it as
`renderer.face_idx`) or from the constructor; op3d never reads it from a fixed path.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from op3d.networks.construction import records_init_kwargs
from op3d.networks.deformation import DeformationDecoder
from op3d.networks.generator import BACKBONE_RESOLUTION, PLANE_CHANNELS, OrthoPlanesGenerator
from op3d.rendering.rays import sample_rays
from op3d.rendering.renderer import RendererDraws
from op3d.rendering.sdf_marcher import LaplaceDensity
from op3d.rendering.sdf_renderer import render_sdf_rays
from op3d.representation.body_warp import check_pose_conditions, warp_to_canonical
from op3d.representation.clamped_orthoplanes import plane_table, sample_plane_table
from op3d.representation.decoder import OSGDecoder
from op3d.smpl.lbs import blended_inverse_transforms

FOURIER_L = 10  # fixed in the official conditional class
POINT_CHUNK = 1 << 16
"""Points per batch item evaluated at once when no gradient is recorded (bounds memory; results are per point)."""


def _as_faces(faces) -> torch.Tensor | None:
    if faces is None:
        return None
    faces = torch.as_tensor(faces, dtype=torch.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces: expected [F, 3] vertex indices, got shape {list(faces.shape)}")
    return faces


class ConditionalRenderer(nn.Module):
    """Point evaluation of the conditional generator (the official `TriImportanceRenderer` of kaolin_version):
    holds the deformation network and the body faces (`face_idx`, a non-persistent buffer: not in state dicts)."""

    def __init__(self, w_dim: int = 512, faces=None):
        super().__init__()
        self.deformation_decoder = DeformationDecoder(w_dim=w_dim)
        self.register_buffer("face_idx", _as_faces(faces), persistent=False)

    def faces(self) -> torch.Tensor:
        if self.face_idx is None:
            raise RuntimeError("the conditional generator has no body mesh faces: pass faces=[F, 3] to its "
                               "constructor (e.g. the SMPL model's faces) or load a checkpoint that carries them")
        return self.face_idx

    def run_model(self, table: torch.Tensor, decoder: OSGDecoder, coordinates: torch.Tensor, w: torch.Tensor,
                  conditions: Mapping, box_warp: float, density_noise: float = 0.0, eikonal: bool = False,
                  vertex_inverse: torch.Tensor | None = None) -> dict:
        """Evaluate render-frame points [B, N, 3] -> {'rgb' [B, N, 32], 'sigma' [B, N, 1] (decoder residual),
        'sdf' (= sigma + sdf_zero), 'sdf_zero' [B, N, 1], 'delta_x' [B, N, 3], 'canonical' [B, N, 3] (deformed
        canonical points), 'eik_grad' [B, N, 3] d sigma / d canonical (create_graph) or None}.

        table: the planes as plane_table(planes) [B, 3, K, H, W, 32]; w [B, w_dim] (the last w); conditions:
        batched pose-condition dict. Without autograd recording, points are evaluated POINT_CHUNK at a time."""
        if not eikonal and not (torch.is_grad_enabled() and (table.requires_grad or w.requires_grad)) and \
                coordinates.shape[1] > POINT_CHUNK:
            if vertex_inverse is None:
                vertex_inverse = blended_inverse_transforms(conditions["lbs_weights"].to(coordinates.dtype),
                                                            conditions["fk_matrices"].to(coordinates.dtype))
            parts = [self.run_model(table, decoder, chunk, w, conditions, box_warp, density_noise, False,
                                    vertex_inverse) for chunk in coordinates.split(POINT_CHUNK, dim=1)]
            return {k: None if parts[0][k] is None else torch.cat([p[k] for p in parts], dim=1) for k in parts[0]}
        warped = warp_to_canonical(coordinates, conditions, self.faces(), box_warp, vertex_inverse)
        delta = self.deformation_decoder(warped.canonical, w, conditions["body_shape"], conditions["full_pose"])
        canonical = warped.canonical + delta
        if eikonal and not canonical.requires_grad:
            canonical = canonical.detach().requires_grad_(True)
        out = decoder(sample_plane_table(table, canonical))
        sigma = out["sigma"]
        if density_noise > 0:
            sigma = sigma + torch.randn_like(sigma) * density_noise
        eik_grad = None
        if eikonal:
            eik_grad = torch.autograd.grad(sigma, canonical, torch.ones_like(sigma), create_graph=True)[0]
        return {"rgb": out["rgb"], "sigma": sigma, "sdf": sigma + warped.sdf_zero, "sdf_zero": warped.sdf_zero,
                "delta_x": delta, "canonical": canonical, "eik_grad": eik_grad}


@records_init_kwargs
class ConditionalOrthoPlanesGenerator(OrthoPlanesGenerator):
    """SMPL-conditional OrthoPlanes generator. Constructor arguments are the official ones (`planes` = K; L is
    fixed to 10) plus `faces` (body mesh triangles [F, 3]), `beta_min` (LaplaceDensity's floor, a plain attribute
    officially), `coarse_prior_twice` (the official compositing quirk, see render_sdf_rays; keep True for official
    checkpoints) and op3d's `plane_resolution`.

    rendering_kwargs: ray_start, ray_end and white_back are ignored (depths in [2.55, 2.95], always white)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 sr_num_fp16_res: int = 0, mapping_kwargs: dict | None = None, rendering_kwargs: dict | None = None,
                 sr_kwargs: dict | None = None, planes: int = 9, channel_base: int = 32768, channel_max: int = 512,
                 num_fp16_res: int = 4, conv_clamp: float | None = 256, fused_modconv_default="inference_only",
                 faces=None, beta_min: float = 1e-4, coarse_prior_twice: bool = True,
                 plane_resolution: int = BACKBONE_RESOLUTION):
        super().__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, sr_num_fp16_res=sr_num_fp16_res,
                         mapping_kwargs=mapping_kwargs, rendering_kwargs=rendering_kwargs, sr_kwargs=sr_kwargs,
                         per_dir_plane_number=planes, fourier_L=FOURIER_L, channel_base=channel_base,
                         channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                         fused_modconv_default=fused_modconv_default, plane_resolution=plane_resolution)
        self.decoder = OSGDecoder(PLANE_CHANNELS, hidden_dim=64, decoder_output_dim=PLANE_CHANNELS,
                                  decoder_lr_mul=self.settings.decoder_lr_mul, n_hidden_layers=3)
        self.renderer = ConditionalRenderer(w_dim=w_dim, faces=faces)
        self.density_func = LaplaceDensity(beta=0.01, beta_min=beta_min)
        self.coarse_prior_twice = coarse_prior_twice

    def __setattr__(self, name, value):
        # Keep the faces in the recorded constructor arguments as plain lists (JSON- and pickle-friendly).
        if name == "init_kwargs" and isinstance(value, dict) and isinstance(value.get("faces"), torch.Tensor):
            value = {**value, "faces": value["faces"].tolist()}
        super().__setattr__(name, value)

    # --- rendering ------------------------------------------------------------------------------------------------
    def camera_rays(self, c: torch.Tensor, resolution: int):
        """Rays of every pixel in the renderer's frame: the standard rays with y and z negated (R_x(pi)).
        c [B, 25] -> (origins, directions) [B, resolution^2, 3]."""
        if c.ndim != 2 or c.shape[1] != 25:
            raise ValueError(f"camera label c: expected shape [B, 25], got {list(c.shape)}")
        origins, directions = sample_rays(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), resolution)
        flip = torch.tensor([1.0, -1.0, -1.0], dtype=origins.dtype, device=origins.device)
        return origins * flip, directions * flip

    def field(self, planes: torch.Tensor, ws: torch.Tensor, real_conditions: Mapping):
        """The point evaluation used by the renderer: coordinates [B, N, 3] -> run_model dict."""
        conditions = check_pose_conditions(real_conditions, ws.shape[0])
        vertex_inverse = blended_inverse_transforms(conditions["lbs_weights"].to(ws.dtype),
                                                    conditions["fk_matrices"].to(ws.dtype))
        eikonal = self.training and torch.is_grad_enabled()
        table = plane_table(planes)

        def evaluate(coordinates: torch.Tensor) -> dict:
            return self.renderer.run_model(table, self.decoder, coordinates, ws[:, -1], conditions,
                                           self.settings.box_warp, self.settings.density_noise, eikonal,
                                           vertex_inverse)
        return evaluate

    def render(self, planes: torch.Tensor, ws: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
               real_conditions: Mapping, renderer_draws: RendererDraws | None = None):
        """Render rays (renderer frame, see camera_rays) -> (features [B, M, 32], depth [B, M, 1], sdf dict)."""
        return render_sdf_rays(self.field(planes, ws, real_conditions), origins, directions, self.density_func,
                               self.settings.depth_resolution, self.settings.depth_resolution_importance,
                               renderer_draws, self.coarse_prior_twice)

    slab_sampler = None  # the shape-grid fast path does not apply: points are warped per pose

    def run_field(self, planes, coordinates, directions):
        raise TypeError("the conditional generator's points depend on the pose and the last w: use "
                        "G.field(planes, ws, real_conditions)(coordinates)")

    # --- official API -----------------------------------------------------------------------------------------
    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, real_conditions: Mapping,
                  neural_rendering_resolution: int | None = None, update_emas: bool = False,
                  cache_backbone: bool = False, use_cached_backbone: bool = False, return_planes: bool = False,
                  renderer_draws: RendererDraws | None = None, **synthesis_kwargs) -> dict:
        """ws [B, 13, w_dim], c [B, 25], pose conditions -> {'image', 'image_raw', 'image_depth', 'sdf'}
        (+ 'planes' with return_planes, + 'ff' with the official feature=True)."""
        feature = synthesis_kwargs.pop("feature", False)  # official flag asking for the plane tensor
        neural_rendering_resolution, planes = self.synthesis_planes(
            ws, neural_rendering_resolution, update_emas, cache_backbone, use_cached_backbone, **synthesis_kwargs)
        origins, directions = self.camera_rays(c, neural_rendering_resolution)
        features, depth, sdf = self.render(planes, ws, origins, directions, real_conditions, renderer_draws)
        out = self.assemble_outputs(features, depth, ws, neural_rendering_resolution, planes, return_planes,
                                    feature, synthesis_kwargs)
        out["sdf"] = sdf
        return out

    def sample(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor, c: torch.Tensor,
               real_conditions: Mapping, truncation_psi: float = 1, truncation_cutoff: int | None = None,
               update_emas: bool = False, **synthesis_kwargs) -> dict:
        """Points [B, N, 3] (renderer frame) -> {'sigma': Laplace density of the total sdf [B, N, 1],
        'rgb' [B, N, 32]}. Takes ws (truncation arguments ignored, as officially); directions are unused."""
        planes = self.compute_planes(ws, update_emas=update_emas, **synthesis_kwargs)
        out = self.field(planes, ws, real_conditions)(coordinates)
        return {"sigma": self.density_func(out["sdf"]), "rgb": out["rgb"]}

    def sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor,
                     real_conditions: Mapping, truncation_psi: float = 1, truncation_cutoff: int | None = None,
                     update_emas: bool = False, **synthesis_kwargs) -> dict:
        """Like `sample`, but every block styled by the last w, and 'sigma' is the total sdf itself."""
        planes = self.compute_planes(ws, update_emas=update_emas, mixed=True, **synthesis_kwargs)
        out = self.field(planes, ws, real_conditions)(coordinates)
        return {"sigma": out["sdf"], "rgb": out["rgb"]}

    def forward(self, z: torch.Tensor, c: torch.Tensor, real_conditions: Mapping, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, neural_rendering_resolution: int | None = None,
                update_emas: bool = False, cache_backbone: bool = False, use_cached_backbone: bool = False,
                **synthesis_kwargs) -> dict:
        """mapping then synthesis."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, c, real_conditions, update_emas=update_emas,
                              neural_rendering_resolution=neural_rendering_resolution,
                              cache_backbone=cache_backbone, use_cached_backbone=use_cached_backbone,
                              **synthesis_kwargs)
