"""Mesh geometry time (op3d.smpl.geometry, plain path) for the conditional renderer's sample points against the
all-pairs evaluation, on the fixture body (6890 vertices, 13776 faces, the two posed bodies of io.npz).

    python bench/geometry.py [--threads 2] [--resolution 64] [--samples 128] [--brute-points 1024]

Points: B = 2 cameras of io.npz, resolution^2 rays each, `samples` stratified depths in [2.55, 2.95], mapped to the
SMPL frame as the conditional renderer does (y and z negated, doubled, y - 0.15): 1,048,576 points by default. The
all-pairs times are measured on the first `brute-points` points of each sample and scaled to the full count; the two
paths must agree there. Needs ../shared/fixtures (or $OP3D_FIXTURES).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from generator import fixtures_root  # noqa: E402

from op3d.rendering.rays import sample_rays  # noqa: E402
from op3d.smpl import geometry  # noqa: E402
from op3d.smpl.triangles import point_triangle  # noqa: E402
from op3d.smpl.winding import solid_angle_winding  # noqa: E402


def render_points(c: torch.Tensor, resolution: int, samples: int) -> torch.Tensor:
    """Sample points [B, resolution^2 * samples, 3] in the SMPL frame of the conditional renderer (spec 4.3)."""
    origins, directions = sample_rays(c[:, :16].view(-1, 4, 4), c[:, 16:].view(-1, 3, 3), resolution)
    jitter = torch.rand(c.shape[0], resolution ** 2, samples, generator=torch.Generator().manual_seed(0))
    depths = 2.55 + (torch.arange(samples) + jitter) * (0.4 / samples)
    x = (origins.unsqueeze(2) + depths.unsqueeze(-1) * directions.unsqueeze(2)) * torch.tensor([1.0, -1.0, -1.0])
    return (2 * x - torch.tensor([0.0, 0.15, 0.0])).reshape(c.shape[0], -1, 3)


def all_pairs(points, vertices, faces):
    """All-pairs nearest vertex, point-to-mesh squared distance and inside test ([B, n] each)."""
    d2, index, squared, inside = [], [], [], []
    for p, v in zip(points, vertices):
        diff = p[:, None] - v[None]
        nn = (diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]) + diff[..., 2] * diff[..., 2]
        d2.append(nn.min(1).values)
        index.append((nn == d2[-1][:, None]).int().argmax(1))
        corners = v.double()[faces].permute(1, 2, 0)
        rows = []
        for q in p.double().split(64):
            qq = q[:, :, None].expand(-1, -1, faces.shape[0]).reshape(q.shape[0], 3, -1).permute(1, 0, 2)
            cc = [list(corners[k][:, None, :].expand(-1, q.shape[0], -1)) for k in range(3)]
            rows.append(point_triangle(list(qq), *cc)[0].min(1).values)
        squared.append(torch.cat(rows).float())
        inside.append(solid_angle_winding(p.double(), v.double()[faces]).abs() > 0.5)
    return torch.stack(d2), torch.stack(index), torch.stack(squared), torch.stack(inside)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--brute-points", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = fixtures_root() / "official" / "shhq_cond_k8"
    io = np.load(root / "io.npz")
    faces = torch.from_numpy(np.load(root / "body.npz")["faces"])
    vertices = torch.from_numpy(io["cond_vertices"])
    points = render_points(torch.from_numpy(io["c"]), args.resolution, args.samples)
    total = points.shape[0] * points.shape[1]
    print(f"{total:,} points, {vertices.shape[1]} vertices, {faces.shape[0]} faces, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")

    face_vertices = geometry.index_vertices_by_faces(vertices, faces)
    (d2, index), t_knn = timed(lambda: geometry.nearest_vertices(points, vertices, backend="plain"))
    (squared, _, _), t_dist = timed(
        lambda: geometry.point_to_mesh_squared_distance(points, face_vertices, backend="plain"))
    inside, t_inside = timed(lambda: geometry.inside_mesh(vertices, faces, points, backend="plain"))
    sdf, t_sdf = timed(lambda: geometry.signed_squared_distance(points, vertices, faces, backend="plain"))

    subset = points[:, :args.brute_points]
    (b_d2, b_index, b_squared, b_inside), t_brute = timed(lambda: all_pairs(subset, vertices, faces))
    n = subset.shape[1]
    agree = (torch.equal(d2[:, :n], b_d2) and torch.equal(index[:, :n], b_index)
             and torch.allclose(squared[:, :n], b_squared, rtol=1e-6, atol=0) and torch.equal(inside[:, :n], b_inside)
             and torch.equal(sdf[:, :n], torch.where(b_inside, -b_squared, b_squared)))
    scale = total / (subset.shape[0] * n)
    print(f"inside: {inside.float().mean().item():.1%}; all-pairs agreement on {subset.shape[0] * n} points: {agree}")
    print("| function | plain path (s) | all pairs (s, extrapolated) |")
    print("|---|---|---|")
    print(f"| nearest_vertices | {t_knn:.1f} | |")
    print(f"| point_to_mesh_squared_distance | {t_dist:.1f} | |")
    print(f"| inside_mesh | {t_inside:.1f} | |")
    print(f"| signed_squared_distance | {t_sdf:.1f} | |")
    print(f"| all three (knn + distance + inside) | {t_knn + t_dist + t_inside:.1f} | {t_brute * scale:.0f} |")


if __name__ == "__main__":
    main()
