"""CSDI's denoiser (Tashiro et al. 2021, sec. 5 and fig. 6) in polydiff's network signature.

``network(x_in [B, K, L], c_noise [B], cond) -> [B, K, L]`` where ``cond`` is a dict with

* ``values`` ``[B, K, L]``: the conditioning (observed, not hidden) values, 0 elsewhere;
* ``cond_mask`` ``[B, K, L]``: 1 where ``values`` holds a conditioning value.

The input has two channels, the conditioning values and the noisy targets ``(1 - cond_mask) x_in``; side information is a
sinusoidal embedding of the time step, a learned embedding of the feature and the conditioning mask. Each residual block
adds the noise-level embedding, runs a transformer layer across time (per feature) and one across features (per time
step), adds the side information and applies a gated activation (as in DiffWave) before splitting into residual and skip.
"""

import math

import torch
from torch import Tensor, nn


def sinusoidal(x: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoidal embedding of ``x`` (any shape) to ``[..., dim]`` (Vaswani et al. 2017, sec. 3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[..., None] * freqs
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return emb if dim % 2 == 0 else torch.nn.functional.pad(emb, (0, 1))


def _transformer(channels: int, heads: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model=channels, nhead=heads, dim_feedforward=64, activation="gelu",
                                       batch_first=True, dropout=dropout)
    return nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)


class ResidualBlock(nn.Module):
    """One CSDI residual layer: noise embedding, temporal and feature transformers, side information, gated output."""

    def __init__(self, channels: int, side_dim: int, emb_dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.noise_projection = nn.Linear(emb_dim, channels)
        self.side_projection = nn.Conv1d(side_dim, 2 * channels, 1)
        self.mid_projection = nn.Conv1d(channels, 2 * channels, 1)
        self.output_projection = nn.Conv1d(channels, 2 * channels, 1)
        self.time_layer = _transformer(channels, heads, dropout)
        self.feature_layer = _transformer(channels, heads, dropout)

    def _across_time(self, y: Tensor) -> Tensor:
        b, c, k, length = y.shape
        if length == 1:
            return y
        seq = y.permute(0, 2, 3, 1).reshape(b * k, length, c)
        return self.time_layer(seq).reshape(b, k, length, c).permute(0, 3, 1, 2)

    def _across_features(self, y: Tensor) -> Tensor:
        b, c, k, length = y.shape
        if k == 1:
            return y
        seq = y.permute(0, 3, 2, 1).reshape(b * length, k, c)
        return self.feature_layer(seq).reshape(b, length, k, c).permute(0, 3, 2, 1)

    def forward(self, x: Tensor, side: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
        b, c, k, length = x.shape
        y = x + self.noise_projection(emb)[:, :, None, None]
        y = self._across_features(self._across_time(y))
        y = self.mid_projection(y.reshape(b, c, k * length))
        y = y + self.side_projection(side.reshape(b, side.shape[1], k * length))
        gate, filt = y.chunk(2, dim=1)
        y = torch.sigmoid(gate) * torch.tanh(filt)
        residual, skip = self.output_projection(y).chunk(2, dim=1)
        return (x + residual.reshape(x.shape)) / math.sqrt(2.0), skip.reshape(x.shape)


class CSDINetwork(nn.Module):
    """CSDI-style conditional denoiser for windows of ``n_features`` x L steps (L free: time embeddings are sinusoidal).

    Args:
        n_features: number of features K (size of the learned feature embedding table).
        channels: width of the residual blocks (CSDI: 64).
        layers: number of residual blocks (CSDI: 4).
        heads: attention heads of the transformers (CSDI: 8).
        time_embedding_dim: size of the sinusoidal time-step embedding (CSDI: 128).
        feature_embedding_dim: size of the learned feature embedding (CSDI: 16).
        noise_embedding_dim: size of the noise-level embedding (CSDI: 128).
        dropout: dropout inside the transformer layers (CSDI: PyTorch's default, 0.1).
    """

    def __init__(self, n_features: int, channels: int = 64, layers: int = 4, heads: int = 8,
                 time_embedding_dim: int = 128, feature_embedding_dim: int = 16, noise_embedding_dim: int = 128,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.n_features = n_features
        self.time_embedding_dim = time_embedding_dim
        self.noise_embedding_dim = noise_embedding_dim
        self.feature_embedding = nn.Embedding(n_features, feature_embedding_dim)
        self.noise_mlp = nn.Sequential(nn.Linear(noise_embedding_dim, noise_embedding_dim), nn.SiLU(),
                                       nn.Linear(noise_embedding_dim, noise_embedding_dim), nn.SiLU())
        side_dim = time_embedding_dim + feature_embedding_dim + 1
        self.input_projection = nn.Conv1d(2, channels, 1)
        self.blocks = nn.ModuleList(ResidualBlock(channels, side_dim, noise_embedding_dim, heads, dropout)
                                    for _ in range(layers))
        self.skip_projection = nn.Conv1d(channels, channels, 1)
        self.output = nn.Conv1d(channels, 1, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def side_information(self, cond_mask: Tensor) -> Tensor:
        """``[B, time_dim + feature_dim + 1, K, L]``: time embedding, feature embedding and the conditioning mask."""
        b, k, length = cond_mask.shape
        t = sinusoidal(torch.arange(length, device=cond_mask.device), self.time_embedding_dim)  # [L, Dt]
        time = t.T[None, :, None, :].expand(b, -1, k, -1)
        feat = self.feature_embedding.weight.T[None, :, :, None].expand(b, -1, -1, length)
        return torch.cat([time, feat, cond_mask[:, None].to(time.dtype)], dim=1)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: dict[str, Tensor]) -> Tensor:
        values, cond_mask = cond["values"], cond["cond_mask"]
        b, k, length = x_in.shape
        if k != self.n_features:
            raise ValueError(f"CSDINetwork built for {self.n_features} features got windows with {k}")
        dtype = self.input_projection.weight.dtype
        x = torch.stack([values * cond_mask, (1 - cond_mask) * x_in], dim=1).to(dtype)  # [B, 2, K, L]
        h = torch.relu(self.input_projection(x.reshape(b, 2, k * length))).reshape(b, -1, k, length)
        # c_noise = -logsnr/8 lies in about [-2.5, 2.5]; the scale spreads it over the sinusoid's periods
        emb = self.noise_mlp(sinusoidal(c_noise.to(dtype) * 100.0, self.noise_embedding_dim).to(dtype))
        side = self.side_information(cond_mask).to(dtype)
        skips = 0
        for block in self.blocks:
            h, skip = block(h, side, emb)
            skips = skips + skip
        s = skips / math.sqrt(len(self.blocks))
        s = torch.relu(self.skip_projection(s.reshape(b, -1, k * length)))
        return self.output(s).reshape(b, k, length)
