"""The SMPL-conditional volume renderer (spec 4.3.3, 4.3.7): fixed depth range, coarse stratified pass on the
signed-distance field, importance pass on the per-sample weights, merge, composite with `march_sdf_rays`.

A `field` here is a callable (coordinates [B, N, 3]) -> dict with 'rgb' [B, N, C], 'sdf' [B, N, 1] (total signed
distance), 'sdf_zero' [B, N, 1] (body part), 'delta_x' [B, N, 3] and 'eik_grad' ([B, N, 3] or None).
"""

from __future__ import annotations

import torch

from op3d.rendering.depth_sampling import importance_depths, stratified_depths
from op3d.rendering.renderer import RendererDraws, merge_samples
from op3d.rendering.sdf_marcher import LaplaceDensity, march_sdf_rays

DEPTH_RANGE = (2.55, 2.95)
"""The official conditional renderer's hard-coded ray interval (rendering_kwargs ray_start/ray_end are ignored)."""


def _evaluate(field, origins, directions, depths):
    b, m, s, _ = depths.shape
    coordinates = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(b, -1, 3)
    out = field(coordinates)
    return out, out["rgb"].reshape(b, m, s, -1), out["sdf"].reshape(b, m, s, 1), out["sdf_zero"].reshape(b, m, s, 1)


def render_sdf_rays(field, origins: torch.Tensor, directions: torch.Tensor, density: LaplaceDensity,
                    depth_resolution: int, depth_resolution_importance: int, draws: RendererDraws | None = None,
                    coarse_prior_twice: bool = True):
    """origins, directions [B, M, 3] (render frame) -> (features [B, M, C] in [-1, 1], depth [B, M, 1], sdf dict).

    sdf dict: 'sdf' (what the final composite used) and 'sdf_zero' [B, M, S + N, 1] sorted by depth; 'delta_x'
    [B, M * (S + N), 3] and 'eik_grad' (same shape, or None) unsorted: the coarse samples (index m * S + s) then the
    fine ones.

    coarse_prior_twice: the official renderer adds the body prior sdf_zero to the coarse samples a second time after
    the coarse pass, so the final composite (and the returned 'sdf') uses sigma + 2 sdf_zero for coarse samples and
    sigma + sdf_zero for fine ones (the importance pass itself sees sigma + sdf_zero). Released checkpoints were
    trained with it; False composites every sample with sigma + sdf_zero."""
    draws = draws or RendererDraws()
    b, m, _ = origins.shape
    depths = stratified_depths(b, m, *DEPTH_RANGE, depth_resolution, origins.device, jitter=draws.stratified)
    coarse, colors, sdf, sdf_zero = _evaluate(field, origins, directions, depths)
    outputs = [coarse]
    if depth_resolution_importance > 0:
        _, _, weights = march_sdf_rays(colors, sdf, depths, density)
        depths_fine = importance_depths(depths, weights, depth_resolution_importance, u=draws.importance)
        fine, colors_fine, sdf_fine, sdf_zero_fine = _evaluate(field, origins, directions, depths_fine)
        outputs.append(fine)
        if coarse_prior_twice:
            sdf = sdf + sdf_zero
        # sdf_zero travels as an extra colour channel so that one sort orders everything.
        depths, colors, sdf = merge_samples(depths, torch.cat([colors, sdf_zero], -1), sdf,
                                            depths_fine, torch.cat([colors_fine, sdf_zero_fine], -1), sdf_fine)
        colors, sdf_zero = colors[..., :-1], colors[..., -1:]
    features, depth, _ = march_sdf_rays(colors, sdf, depths, density)
    eik = [o["eik_grad"] for o in outputs]
    sdf_out = {"sdf": sdf, "sdf_zero": sdf_zero, "delta_x": torch.cat([o["delta_x"] for o in outputs], dim=1),
               "eik_grad": None if any(e is None for e in eik) else torch.cat(eik, dim=1)}
    return features, depth, sdf_out
