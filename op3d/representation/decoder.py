"""The tiny MLP that turns averaged plane features into raw density and 32 colour features (spec 2.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from op3d.primitives import FullyConnectedLayer


CPU_CHUNK = 2048  # rows per chunk of OSGDecoder.sigma on the CPU: 2048 x 64 float32 hidden values fit in L2


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

    @torch.no_grad()
    def sigma(self, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Only the density output of decode_mean (shape extraction, no gradient): x [B, M, C] -> sigma [B, M, 1].

        The same layer arithmetic as `net`, with the effective weights computed once, the rows taken in chunks of
        `chunk` so that the hidden activations stay in cache, and the density row of the last layer as one
        matrix-vector product. Default chunk: CPU_CHUNK rows on the CPU; all rows at once elsewhere (a GPU has no
        cache to fit, and each chunk costs kernel launches)."""
        n, m, c = x.shape
        if chunk is None:
            chunk = CPU_CHUNK if x.device.type == "cpu" else max(1, n * m)
        rows = x.reshape(n * m, c)
        layers = [self._effective(layer, x.dtype) for layer in self.net if isinstance(layer, FullyConnectedLayer)]
        w_last, b_last = layers.pop()
        pre_activations = [x.new_empty(min(chunk, n * m), w.shape[0]) for w, _ in layers]
        out = torch.empty(n * m, dtype=x.dtype, device=x.device)
        for start in range(0, n * m, chunk):
            hidden = rows[start:start + chunk]
            for (w, b), buffer in zip(layers, pre_activations):
                hidden = F.softplus(torch.addmm(b, hidden, w.t(), out=buffer[:hidden.shape[0]]))
            torch.addmv(b_last[:1], hidden, w_last[0], out=out[start:start + chunk])
        return out.view(n, m, 1)

    @staticmethod
    def _effective(layer: FullyConnectedLayer, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight and bias a linear FullyConnectedLayer applies (its forward's arithmetic)."""
        if layer.activation != "linear" or layer.bias is None:
            raise ValueError("OSGDecoder.sigma expects linear fully connected layers with a bias")
        return layer.applied(dtype)
