"""The tiny MLP that turns averaged plane features into raw density and 32 colour features (spec 2.1)."""

from __future__ import annotations

import torch
from torch import nn

from op3d.networks.layers import FullyConnectedLayer


class OSGDecoder(nn.Module):
    """features [B, G, M, C] (G sampled planes/groups) -> {'sigma': [B, M, 1] raw, 'rgb': [B, M, out_dim]}.

    Mean over the G groups, then FC(C -> hidden), softplus, ..., FC(hidden -> 1 + out_dim); colour features go
    through the widened sigmoid sigmoid(x) * 1.002 - 0.001. Ray directions are ignored."""

    def __init__(self, n_features: int = 32, hidden_dim: int = 64, decoder_output_dim: int = 32,
                 decoder_lr_mul: float = 1.0, n_hidden_layers: int = 1):
        super().__init__()
        self.hidden_dim = hidden_dim
        layers = [FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=decoder_lr_mul), nn.Softplus()]
        for _ in range(n_hidden_layers - 1):
            layers += [FullyConnectedLayer(hidden_dim, hidden_dim, lr_multiplier=decoder_lr_mul), nn.Softplus()]
        layers.append(FullyConnectedLayer(hidden_dim, 1 + decoder_output_dim, lr_multiplier=decoder_lr_mul))
        self.net = nn.Sequential(*layers)

    def forward(self, sampled_features: torch.Tensor, ray_directions: torch.Tensor | None = None) -> dict:
        return self.decode_mean(sampled_features.mean(1))

    def decode_mean(self, x: torch.Tensor) -> dict:
        """The decoder after the group mean: x [B, M, C] -> {'sigma': [B, M, 1], 'rgb': [B, M, out_dim]}."""
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return {"rgb": rgb, "sigma": x[..., 0:1]}

    def sigma(self, x: torch.Tensor) -> torch.Tensor:
        """Only the density output of decode_mean (shape extraction): x [B, M, C] -> sigma [B, M, 1]."""
        n, m, c = x.shape
        hidden = self.net[:-1](x.reshape(n * m, c))
        last = self.net[-1]
        w = last.weight[:1].to(hidden.dtype) * last.weight_gain
        b = last.bias[:1].to(hidden.dtype) * last.bias_gain
        return torch.addmm(b.unsqueeze(0), hidden, w.t()).view(n, m, 1)
