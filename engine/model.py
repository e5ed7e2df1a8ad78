"""The candle transformer, readable in one sitting.

Output at candle t depends only on the last `receptive_field` feature rows ending at t: every
layer attends causally to at most `window` positions (W), with ALiBi relative-position biases
(no absolute positions), so R = n_layers·(W−1)+1. One pass over a long stretch therefore gives
every candle's output, equal to live inference on the last R rows (see `engine/inference.py`).

Attention is computed in blocks of W: each block of queries attends to itself and the block
before it, masked to the band, so memory and time grow linearly with the sequence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from contract.vocab import ACTIONS
from engine.features import N_FEATURES


@dataclass(frozen=True)
class ModelConfig:
    n_features: int = N_FEATURES
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    window: int = 64  # W: how far back one attention layer looks, in candles
    horizon: int = 5  # ghost candles predicted
    dropout: float = 0.0

    @property
    def receptive_field(self) -> int:
        return self.n_layers * (self.window - 1) + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's geometric head slopes: each head forgets distance at its own rate."""
    return torch.tensor([2 ** (-8 * (h + 1) / n_heads) for h in range(n_heads)])


class BandedCausalAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0
        self.h, self.w, self.dh = cfg.n_heads, cfg.window, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout
        w = cfg.window
        # Query i of a block sits at W+i in the 2W keys [previous block, this block].
        dist = (w + torch.arange(w)[:, None]) - torch.arange(2 * w)[None, :]  # (W, 2W)
        band = (dist >= 0) & (dist < w)
        bias = -alibi_slopes(self.h)[:, None, None] * dist.clamp(min=0)  # (h, W, 2W)
        bias = bias.masked_fill(~band, float("-inf"))
        self.register_buffer("bias", bias, persistent=False)
        self.register_buffer("slopes", alibi_slopes(self.h)[:, None, None], persistent=False)
        # Live inference repeats one length: keep its mask, per length and device.
        self._dense_cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def _dense_bias(self, t: int, device: torch.device) -> torch.Tensor:
        """The (h, T, T) banded ALiBi mask of a T-long sequence, built on `device` (the
        input's: a mask made on the CPU cannot mix with CUDA tensors)."""
        key = (t, device)
        cached = self._dense_cache.get(key)
        if cached is None:
            pos = torch.arange(t, device=device)
            dist = pos[:, None] - pos[None, :]  # (T, T)
            bias = -self.slopes.to(device) * dist.clamp(min=0)  # (h, T, T)
            cached = bias.masked_fill(~((dist >= 0) & (dist < self.w)), float("-inf"))
            if len(self._dense_cache) > 8:
                self._dense_cache.clear()
            self._dense_cache[key] = cached
        return cached

    def _block_bias(self, nb: int, device: torch.device) -> torch.Tensor:
        """The (1, h·nb, W, 2W) mask of `nb` blocks: the band, and no previous block for block 0.
        Cached per shape and device like the dense mask (a pass repeats one chunk length)."""
        key = (-nb, device)
        cached = self._dense_cache.get(key)
        if cached is None:
            h, w = self.h, self.w
            mask = self.bias.to(device)[:, None].repeat(1, nb, 1, 1)  # (h, nb, W, 2W)
            mask[:, 0, :, :w] = float("-inf")  # block 0 has no previous block
            cached = mask.reshape(1, h * nb, w, 2 * w)
            if len(self._dense_cache) > 8:
                self._dense_cache.clear()
            self._dense_cache[key] = cached
        return cached

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, T, d) → (B, T, d), or (B, 1, d) for the last position only."""
        b, t, d = x.shape
        w, h, dh = self.w, self.h, self.dh
        if t <= 4 * w or last_only:
            # Short sequences (live inference): one dense banded mask is cheaper than blocks.
            q, k, v = (z.view(b, t, h, dh).transpose(1, 2) for z in self.qkv(x).split(d, dim=2))
            bias = self._dense_bias(t, x.device)
            if last_only:
                q, bias = q[:, :, -1:], bias[:, -1:]
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
            )  # (B, h, T or 1, dh)
            return self.proj(y.transpose(1, 2).reshape(b, q.shape[2], d))
        pad = (-t) % w
        if pad:
            x = F.pad(x, (0, 0, 0, pad))  # future padding: never attended by real queries
        nb = (t + pad) // w
        q, k, v = self.qkv(x).split(d, dim=2)  # (B, T', d) each
        q, k, v = (z.view(b, nb, w, h, dh).permute(0, 3, 1, 2, 4) for z in (q, k, v))
        # (B, h, nb, W, dh) → keys/values of [previous block, this block]: (B, h, nb, 2W, dh)
        k2 = torch.cat([F.pad(k, (0, 0, 0, 0, 1, 0))[:, :, :-1], k], dim=3)
        v2 = torch.cat([F.pad(v, (0, 0, 0, 0, 1, 0))[:, :, :-1], v], dim=3)
        # Heads and blocks merged into one batch axis: attention over 4-D tensors takes the
        # fused (flash) kernel, about 5x faster on the CPU than the 5-D fallback.
        y = F.scaled_dot_product_attention(
            q.reshape(b, h * nb, w, dh), k2.reshape(b, h * nb, 2 * w, dh),
            v2.reshape(b, h * nb, 2 * w, dh), attn_mask=self._block_bias(nb, x.device),
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        y = y.view(b, h, nb, w, dh).permute(0, 2, 3, 1, 4).reshape(b, nb * w, d)[:, :t]
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = BandedCausalAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff),
            nn.GELU(),
            nn.Linear(cfg.d_ff, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        if last_only:  # the last layer of live inference needs one position, not T
            x = x[:, -1:] + self.attn(self.ln1(x), last_only=True)
        else:
            x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CandleTransformer(nn.Module):
    """features (B, T, F) → action logits (B, T, 3) and ghost candles (B, T, horizon, 4)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(cfg.n_features, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.action_head = nn.Linear(cfg.d_model, len(ACTIONS))
        self.ghost_head = nn.Linear(cfg.d_model, cfg.horizon * 4)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(
        self, x: torch.Tensor, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """With `last_only`, outputs are for the last position alone (T = 1): live inference."""
        z = self.inp(x / 4.0)  # features are O(1)–O(10); keep the residual stream small
        for i, block in enumerate(self.blocks):
            z = block(z, last_only=last_only and i == len(self.blocks) - 1)
        z = self.ln_f(z)  # (B, T, d)
        logits = self.action_head(z)  # (B, T, 3)
        ghost = self.ghost_head(z).view(*z.shape[:2], self.cfg.horizon, 4)  # (B, T, k, OHLC)
        return logits, ghost

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
