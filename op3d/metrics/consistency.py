"""Multi-view 3D consistency of rendered depth and colour: do two views of one scene agree on its surface?

Each pixel of view A is lifted to its 3D surface point (origin + depth * unit ray direction), projected into view B,
and compared with B's depth and colour sampled bilinearly there; the same is done from B into A, so an error in
either view is seen (a surface drawn too near in one view contradicts the other view's depth; one drawn too far is
hidden from the other view and is caught from that side instead). No learned model is involved.

Conventions: ``c`` [B, 25] camera labels (16 cam2world + 9 normalized intrinsics, OpenCV camera: x right, y down,
z forward); ``depth`` [B, 1, R, R] distance along each pixel's unit ray in world units (as the generator's
``image_depth``); ``image`` [B, C, R, R] with RGB in the first 3 channels, [-1, 1]; pixel coordinates continuous with
pixel centres at i + 0.5, x along columns, y along rows.
"""

from __future__ import annotations

import torch

from op3d.cameras import unpack_label
from op3d.rendering.rays import sample_rays

OCCLUSION_TOLERANCE = 0.03
"""World units (EG3D scale: camera radius ~2.7, object ~1 across, 128^2 depth pixels ~0.005 wide at the object).
A reprojected point up to this far behind the other view's surface is compared (rendered depth is never exact);
farther behind, it is taken as hidden by that surface and skipped, so an error that puts a surface too far away in
one view is measured from the other view's side, where that view's points land in front of it."""

EDGE_TOLERANCE = 0.05
"""World units. A reprojected point is skipped where the other view's 4 bilinear neighbour depths span more than this:
interpolating across a depth discontinuity (a silhouette over a farther surface) gives a depth that is on neither
surface. Slanted but continuous surfaces stay in: with 128^2 pixels ~0.005 wide, a 2 x 2 span of 0.05 still admits
surfaces tilted ~80 degrees away from the view direction."""


def unproject_depth(depth: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Surface points of every pixel: camera origin + depth * unit ray direction.

    depth: [B, 1, R, R] world units along the ray; c: [B, 25] -> points [B, R*R, 3] world, row-major pixels."""
    batch, resolution = _check_depth("depth", depth)
    cam2world, intrinsics = unpack_label(c.to(depth.dtype))
    if cam2world.shape[0] != batch:
        raise ValueError(f"c: expected {batch} labels to match depth, found {cam2world.shape[0]}")
    origins, directions = sample_rays(cam2world, intrinsics, resolution)
    return origins + depth.reshape(batch, -1, 1) * directions


def project_points(points: torch.Tensor, c: torch.Tensor, resolution: int):
    """Pinhole projection of world points into the cameras of ``c`` (images of resolution x resolution pixels).

    points: [B, N, 3] world; c: [B, 25]. Returns (pixel_xy [B, N, 2] continuous (x = column, y = row), pixel centres
    at i + 0.5, meaningful only where in_front; distance [B, N] = |point - camera origin| in world units, comparable
    with depth images; in_front [B, N] bool, camera z > 0)."""
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points: expected shape [B, N, 3], found {list(points.shape)}")
    cam2world, intrinsics = unpack_label(c.to(points.dtype))
    if cam2world.shape[0] != points.shape[0]:
        raise ValueError(f"c: expected {points.shape[0]} labels to match points, found {cam2world.shape[0]}")
    world2cam = torch.linalg.inv(cam2world)
    camera = points @ world2cam[:, :3, :3].transpose(1, 2) + world2cam[:, None, :3, 3]
    z = camera[..., 2]
    image_plane = camera @ intrinsics.transpose(1, 2)
    pixel_xy = image_plane[..., :2] / z.unsqueeze(-1) * resolution
    distance = (points - cam2world[:, None, :3, 3]).norm(dim=-1)
    return pixel_xy, distance, z > 0


def _check_depth(name: str, depth: torch.Tensor) -> tuple[int, int]:
    """(B, R) of a [B, 1, R, R] depth image, or a ValueError naming ``name``."""
    if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[2] != depth.shape[3]:
        raise ValueError(f"{name}: expected shape [B, 1, R, R], found {list(depth.shape)}")
    return depth.shape[0], depth.shape[2]


def _check_view(side: str, depth, image, c, mask) -> torch.Tensor:
    """Validate one view's tensors (shapes as in `reprojection_errors`); returns its mask, all True if None."""
    batch, resolution = _check_depth(f"depth_{side}", depth)
    if image.ndim != 4 or image.shape[0] != batch or image.shape[1] < 3 or image.shape[2:] != depth.shape[2:]:
        raise ValueError(f"image_{side}: expected shape [{batch}, C >= 3, {resolution}, {resolution}], "
                         f"found {list(image.shape)}")
    if c.ndim != 2 or tuple(c.shape) != (batch, 25):
        raise ValueError(f"c_{side}: expected shape [{batch}, 25], found {list(c.shape)}")
    if mask is None:
        return torch.ones_like(depth, dtype=torch.bool)
    if mask.dtype != torch.bool or mask.shape != depth.shape:
        raise ValueError(f"mask_{side}: expected bool [{batch}, 1, {resolution}, {resolution}], "
                         f"found {mask.dtype} {list(mask.shape)}")
    return mask


def _bilinear_neighbours(pixel_xy: torch.Tensor, resolution: int):
    """The 4 pixels around each continuous location and their bilinear weights.

    pixel_xy: [B, N, 2] -> (flat row-major indices [B, N, 4], weights [B, N, 4], inside [B, N] bool: all 4 in the
    image). Outside locations get index 0 and meaningless weights."""
    grid = pixel_xy - 0.5  # pixel centres at integers
    inside = ((grid >= 0) & (grid < resolution - 1)).all(-1)  # also False for nan
    grid = torch.where(inside.unsqueeze(-1), grid, 0)
    corner = grid.floor()
    fx, fy = (grid - corner).unbind(-1)
    x0, y0 = corner.long().unbind(-1)
    top = y0 * resolution + x0
    indices = torch.stack((top, top + 1, top + resolution, top + resolution + 1), dim=-1)
    weights = torch.stack(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy), dim=-1)
    return indices, weights, inside


def _gather(image: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """image: [B, C, R, R], indices: [B, N, 4] flat pixel indices -> values [B, C, N, 4]."""
    batch, channels = image.shape[:2]
    flat = indices.reshape(batch, 1, -1).expand(batch, channels, -1)
    return image.reshape(batch, channels, -1).gather(2, flat).reshape(batch, channels, *indices.shape[1:])


def _one_way(depth_a, image_a, c_a, mask_a, depth_b, image_b, c_b, mask_b, occlusion_tolerance, edge_tolerance):
    """A's pixels checked against view B. Returns (error sums {name: [B]} over valid pixels, valid count [B],
    A's foreground count [B]); arguments as in `reprojection_errors`, masks already filled in."""
    batch, resolution_b = depth_b.shape[0], depth_b.shape[-1]
    points = unproject_depth(depth_a, c_a)
    pixel_xy, distance, in_front = project_points(points, c_b, resolution_b)
    indices, weights, inside = _bilinear_neighbours(pixel_xy, resolution_b)
    depths = _gather(depth_b, indices)[:, 0]
    depth_b_there = (depths * weights).sum(-1)
    rgb_b_there = (_gather(image_b[:, :3], indices) * weights.unsqueeze(1)).sum(-1)
    valid = (mask_a.reshape(batch, -1) & in_front & inside
             & _gather(mask_b, indices)[:, 0].all(-1)
             & (depths.amax(-1) - depths.amin(-1) <= edge_tolerance)
             & (distance <= depth_b_there + occlusion_tolerance))
    difference = (distance - depth_b_there).abs()
    per_pixel = {
        "depth_error": difference,
        "relative_depth_error": difference / depth_b_there,
        "photometric_error": (image_a[:, :3].reshape(batch, 3, -1) - rgb_b_there).abs().mean(1),
    }
    sums = {name: torch.where(valid, value, 0).sum(-1) for name, value in per_pixel.items()}
    return sums, valid.sum(-1), mask_a.reshape(batch, -1).sum(-1)


def reprojection_errors(depth_a: torch.Tensor, image_a: torch.Tensor, c_a: torch.Tensor,
                        depth_b: torch.Tensor, image_b: torch.Tensor, c_b: torch.Tensor,
                        mask_a: torch.Tensor | None = None, mask_b: torch.Tensor | None = None,
                        occlusion_tolerance: float = OCCLUSION_TOLERANCE,
                        edge_tolerance: float = EDGE_TOLERANCE) -> dict[str, torch.Tensor]:
    """Symmetric multi-view consistency of two renders of the same B scenes (sample i of A with sample i of B).

    depth_a, depth_b: [B, 1, Ra, Ra], [B, 1, Rb, Rb] world units along the unit ray; image_a, image_b: [B, C, Ra, Ra],
    [B, C, Rb, Rb], RGB in the first 3 channels, [-1, 1]; c_a, c_b: [B, 25]; mask_a, mask_b: bool like the depths,
    foreground (default: all True). Tolerances in world units (see OCCLUSION_TOLERANCE, EDGE_TOLERANCE).

    A pixel of A is valid (seen by both views) when it is foreground in A, its surface point is in front of camera B
    and inside B's image with all 4 bilinear neighbours foreground in B, those neighbours' depths span at most
    ``edge_tolerance``, and the point's distance to B's camera is at most B's bilinear depth there plus
    ``occlusion_tolerance`` (farther: hidden in B). Pixels of B are checked against A the same way.

    Returns per-sample tensors [B] (mean over the valid pixels of both directions; NaN where no pixel is valid):
      * ``depth_error``: |distance of the point to the other camera - the other view's depth there|, world units;
      * ``relative_depth_error``: the same divided by the other view's depth there;
      * ``photometric_error``: |own colour - other view's colour there| averaged over RGB, [-1, 1] scale;
      * ``visible_fraction``: valid pixels / foreground pixels, both directions together (NaN if no foreground).
    Swapping A and B gives identical numbers."""
    mask_a = _check_view("a", depth_a, image_a, c_a, mask_a)
    mask_b = _check_view("b", depth_b, image_b, c_b, mask_b)
    if depth_a.shape[0] != depth_b.shape[0]:
        raise ValueError(f"depth_a and depth_b: expected the same batch size, found {depth_a.shape[0]} and "
                         f"{depth_b.shape[0]}")
    tolerances = (occlusion_tolerance, edge_tolerance)
    sums_ab, valid_ab, foreground_a = _one_way(depth_a, image_a, c_a, mask_a, depth_b, image_b, c_b, mask_b,
                                               *tolerances)
    sums_ba, valid_ba, foreground_b = _one_way(depth_b, image_b, c_b, mask_b, depth_a, image_a, c_a, mask_a,
                                               *tolerances)
    valid = (valid_ab + valid_ba).to(depth_a.dtype)
    errors = {name: (sums_ab[name] + sums_ba[name]) / valid for name in sums_ab}
    errors["visible_fraction"] = valid / (foreground_a + foreground_b).to(depth_a.dtype)
    return errors


def aggregate(errors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean of each per-sample tensor [B] over the samples, ignoring NaN (samples without valid pixels);
    ``num_samples`` is B. An all-NaN entry stays NaN."""
    sizes = {value.shape for value in errors.values()}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1:
        raise ValueError(f"errors: expected 1-D tensors of one length, found shapes {sorted(map(list, sizes))}")
    result = {name: float(torch.nanmean(value.double())) for name, value in errors.items()}
    result["num_samples"] = next(iter(sizes))[0]
    return result
