"""One decoder layer of the seed models, a decode step over a KV cache, built from `ops`
(models/ops.py): the same code runs the suite's Triton kernels or plain PyTorch. A model
is these layers stacked.

LLaMA-3-8B:      h = x + Wo Attn(RoPE(q), RoPE(k), v), [q k v] = RMSNorm(x) Wqkv
                 out = h + W2 (SiLU(y W1) * (y W3)),  y = RMSNorm(h)
Chameleon-7B:    as LLaMA, plus RMSNorm over the head dim of q and of the new k (before
                 RoPE, so the cache holds normalized keys)
GPT-3-7B-LoRA:   as LLaMA, with rank-r LoRA adapters on W1, W3 and W2
nGPT-1B:         no pre-norms; q, k normalized per head; the residual stream stays on the
                 unit sphere: h = Norm(x + a_A (Norm(attn) - x)), out = Norm(h + a_M (Norm(mlp) - h))
                 (nGPT's learned q/k and MLP scalings are folded into the weights here)
Weights are (in, out), as Mirage writes them (X W).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


@dataclass
class KVCache:
    k: torch.Tensor  # (batch, capacity, kv_heads, head_dim)
    v: torch.Tensor

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, capacity: int, dtype, device):
        shape = (batch, capacity, cfg.n_kv_heads, cfg.head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))


def rope(x: torch.Tensor, pos: int, theta: float) -> torch.Tensor:
    """Rotary embedding (rotate-half) of x (B, T, H, D) at positions pos .. pos + T - 1."""
    T, D = x.shape[1], x.shape[-1]
    inv = theta ** (-torch.arange(0, D, 2, device=x.device, dtype=torch.float64) / D)
    ang = torch.arange(pos, pos + T, device=x.device, dtype=torch.float64)[:, None] * inv[None, :]
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = ang.cos().to(cdt)[None, :, None, :], ang.sin().to(cdt)[None, :, None, :]
    x1, x2 = x.to(cdt).chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype=torch.bfloat16, device="cpu", seed: int = 0):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)

        def w(k, n):  # (in, out), scaled so activations keep unit size
            return (torch.randn(k, n, generator=g) * k ** -0.5).to(dtype).to(device)

        def norm(n):
            return (1 + 0.1 * torch.randn(n, generator=g)).to(dtype).to(device)

        H, D = cfg.hidden, cfg.head_dim
        bufs = {"w_qkv": w(H, cfg.qkv_dim), "w_o": w(cfg.n_heads * D, H), "w1": w(H, cfg.ffn), "w3": w(H, cfg.ffn),
                "w2": w(cfg.ffn, H), "attn_norm": norm(H), "ffn_norm": norm(H)}
        if cfg.qk_norm or cfg.ngpt:
            bufs.update(q_norm=norm(D), k_norm=norm(D))
        if cfg.lora_rank:
            r = cfg.lora_rank
            for name, (k, n) in {"1": (H, cfg.ffn), "3": (H, cfg.ffn), "2": (cfg.ffn, H)}.items():
                bufs[f"lora_a{name}"] = w(k, r)
                bufs[f"lora_b{name}"] = w(r, n)
        if cfg.ngpt:
            bufs.update(alpha_attn=torch.full((H,), 0.05, dtype=dtype, device=device),
                        alpha_mlp=torch.full((H,), 0.05, dtype=dtype, device=device))
        for name, t in bufs.items():
            self.register_buffer(name, t)

    def forward(self, x: torch.Tensor, cache: KVCache, pos: int, ops) -> torch.Tensor:
        """x (B, T, hidden): T new tokens at positions pos .. pos + T - 1 of every sequence;
        writes their k, v into the cache and returns the layer's output (B, T, hidden)."""
        cfg = self.cfg
        B, T, _ = x.shape
        Hq, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        if cfg.ngpt:
            qkv = ops.linear(x, self.w_qkv)
        else:
            qkv = ops.rmsnorm_linear(x, self.attn_norm, self.w_qkv, cfg.eps)
        q, k, v = qkv.split([Hq * D, Hkv * D, Hkv * D], dim=-1)
        q, k, v = q.view(B, T, Hq, D), k.view(B, T, Hkv, D), v.view(B, T, Hkv, D)
        if cfg.qk_norm or cfg.ngpt:
            q, k = ops.rms_norm(q, self.q_norm, cfg.eps), ops.rms_norm(k, self.k_norm, cfg.eps)
        q, k = rope(q, pos, cfg.rope_theta), rope(k, pos, cfg.rope_theta)
        cache.k[:, pos:pos + T] = k
        cache.v[:, pos:pos + T] = v
        attn = ops.attention(q, cache.k, cache.v, pos + T)
        o = ops.linear(attn.reshape(B, T, Hq * D), self.w_o)

        if cfg.ngpt:
            h = ops.ngpt_update(x, o, self.alpha_attn)
            return ops.ngpt_update(h, ops.linear(ops.gated_mlp(h, self.w1, self.w3), self.w2), self.alpha_mlp)
        y, h = ops.fused_add_rms_norm(o, x, self.ffn_norm, cfg.eps)
        if cfg.lora_rank:
            s = cfg.lora_scale
            a = ops.lora_linear(y, self.w1, self.lora_a1, self.lora_b1, s)
            c = ops.lora_linear(y, self.w3, self.lora_a3, self.lora_b3, s)
            return h + ops.lora_linear(F.silu(a) * c, self.w2, self.lora_a2, self.lora_b2, s)
        return h + ops.linear(ops.gated_mlp(y, self.w1, self.w3), self.w2)
