"""The deformation network of the SMPL-conditional generator (spec 4.3, `DeformationDecoder`): a small FiLM-SIREN
MLP that offsets canonical points, conditioned on body shape, body pose and the last w.

Parameter names are the official ones (`net_c`, `net_W`, `net_b`, `decoder`), so official state dicts load by name.
"""

from __future__ import annotations

import torch
from torch import nn

from op3d.networks.layers import FullyConnectedLayer

N_JOINTS = 24
N_BETAS = 10
POSE_CODE_DIM = 3 * (N_JOINTS - 1)  # Euler angles of the 23 non-root joints
MAX_OFFSET = 0.3  # delta = MAX_OFFSET * sin(head output)


def pose_euler_code(full_pose: torch.Tensor) -> torch.Tensor:
    """Euler angles of every non-root joint rotation, joint-major: full_pose [B, 24, 3, 3] -> [B, 69].

    Per joint (rx, ry, rz) = (atan2(R21, R22), atan2(-R20, sqrt(R21^2 + R22^2)), atan2(R10, R00))."""
    if full_pose.ndim != 4 or full_pose.shape[1:] != (N_JOINTS, 3, 3):
        raise ValueError(f"full_pose: expected [B, {N_JOINTS}, 3, 3] rotation matrices, got {list(full_pose.shape)}")
    r = full_pose[:, 1:]
    rx = torch.atan2(r[..., 2, 1], r[..., 2, 2])
    ry = torch.atan2(-r[..., 2, 0], torch.sqrt(r[..., 2, 1] ** 2 + r[..., 2, 2] ** 2))
    rz = torch.atan2(r[..., 1, 0], r[..., 0, 0])
    return torch.stack([rx, ry, rz], dim=-1).reshape(full_pose.shape[0], POSE_CODE_DIM)


def _mlp(dims: list[int], slope: float = 0.2) -> nn.Sequential:
    """Equalized FCs with LeakyReLU(slope) between them (none after the last)."""
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        if i > 0:
            layers.append(nn.LeakyReLU(slope))
        layers.append(FullyConnectedLayer(d_in, d_out))
    return nn.Sequential(*layers)


class DeformationDecoder(nn.Module):
    """Canonical points [B, N, 3] -> offsets [B, N, 3] in (-0.3, 0.3).

    Condition vector = [betas (10), pose Euler code (69), w (w_dim)]. Point branch: FC 3 -> hidden, LReLU 0.2,
    FC hidden -> hidden. Then `n_film` stages h <- sin(W_i(cond) * h + b_i(cond)), where W_i and b_i are
    FC(cond -> hidden), LReLU, FC(hidden -> hidden). Head: FC hidden -> 64, LReLU, FC 64 -> 64, LReLU, FC 64 -> 3;
    delta = 0.3 sin(head)."""

    def __init__(self, w_dim: int = 512, hidden_dim: int = 128, n_film: int = 3, head_dim: int = 64):
        super().__init__()
        self.hidden_dim = hidden_dim
        cond_dim = N_BETAS + POSE_CODE_DIM + w_dim
        self.net_c = _mlp([3, hidden_dim, hidden_dim])
        self.net_W = nn.ModuleList([_mlp([cond_dim, hidden_dim, hidden_dim]) for _ in range(n_film)])
        self.net_b = nn.ModuleList([_mlp([cond_dim, hidden_dim, hidden_dim]) for _ in range(n_film)])
        self.decoder = _mlp([hidden_dim, head_dim, head_dim, 3])

    def condition(self, w: torch.Tensor, body_shape: torch.Tensor, full_pose: torch.Tensor) -> torch.Tensor:
        """[betas, pose code, w]: [B, 10 + 69 + w_dim], in w's dtype (the official code would silently switch to
        float64 for float64 pose inputs; op3d keeps the network's precision)."""
        return torch.cat([body_shape.to(w.dtype), pose_euler_code(full_pose).to(w.dtype), w], dim=1)

    def forward(self, coordinates: torch.Tensor, w: torch.Tensor, body_shape: torch.Tensor,
                full_pose: torch.Tensor) -> torch.Tensor:
        """coordinates [B, N, 3] (canonical), w [B, w_dim], body_shape [B, 10], full_pose [B, 24, 3, 3]."""
        b, n, _ = coordinates.shape
        cond = self.condition(w, body_shape, full_pose)
        h = self.net_c(coordinates.reshape(b * n, 3)).reshape(b, n, -1)
        for net_w, net_b in zip(self.net_W, self.net_b):
            h = torch.sin(net_w(cond).unsqueeze(1) * h + net_b(cond).unsqueeze(1))
        out = self.decoder(h.reshape(b * n, -1)).reshape(b, n, 3)
        return MAX_OFFSET * torch.sin(out)
