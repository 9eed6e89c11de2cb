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

from kernels.attention import rope_tables
from kernels.checks import check_int

from .config import ModelConfig


@dataclass
class KVCache:
    k: torch.Tensor  # (batch, capacity, kv_heads, head_dim)
    v: torch.Tensor

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, capacity: int, dtype, device):
        _check_config(cfg)
        shape = (check_int("batch", batch, minimum=0), check_int("capacity", capacity, minimum=0), cfg.n_kv_heads,
                 cfg.head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))


@dataclass
class SharedPrefixCache(KVCache):
    """A layer's cache for sequences that share prefixes (kernels/attention/shared_prefix.py):
    k, v hold each sequence's own suffix (batch, capacity, kv_heads, head_dim), its slot 0
    at position `offset`; pool_k, pool_v (pool_tokens, kv_heads, head_dim) hold the tree's
    shared nodes, read by every sequence under them. Every sequence's path through the tree
    is `offset` tokens long (one position for each token of the batch)."""
    pool_k: torch.Tensor = None
    pool_v: torch.Tensor = None
    tree: object = None   # kernels.attention.shared_prefix.PrefixTree
    offset: int = 0


LAYER_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_config(cfg) -> None:
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype=torch.bfloat16, device="cpu", seed: int = 0, weights: dict | None = None):
        """Random weights drawn from `seed`, or `weights` (the buffers below by name, any
        float dtype and device: converted to the layer's)."""
        _check_config(cfg)
        if dtype not in LAYER_DTYPES:
            raise TypeError(f"dtype must be one of {', '.join(str(d) for d in LAYER_DTYPES)}; got {dtype!r}")
        check_int("seed", seed)
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        # With given weights the buffers below only name the shapes: drawn on "meta", no data
        at = "meta" if weights is not None else device

        def w(k, n):  # (in, out), scaled so activations keep unit size
            if weights is not None:
                return torch.empty(k, n, device="meta")
            return (torch.randn(k, n, generator=g) * k ** -0.5).to(dtype).to(device)

        def norm(n):
            if weights is not None:
                return torch.empty(n, device="meta")
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
            bufs.update(alpha_attn=torch.full((H,), 0.05, dtype=dtype, device=at),
                        alpha_mlp=torch.full((H,), 0.05, dtype=dtype, device=at))
        if weights is not None:
            unknown, missing = set(weights) - set(bufs), set(bufs) - set(weights)
            if unknown or missing:
                raise ValueError(f"weights: unknown {sorted(unknown)}, missing {sorted(missing)}")
            for name, t in weights.items():
                if tuple(t.shape) != tuple(bufs[name].shape):
                    raise ValueError(f"weights[{name!r}] has shape {tuple(t.shape)}; this layer's is {tuple(bufs[name].shape)}")
            bufs = {name: t.to(device=device, dtype=dtype).contiguous() for name, t in weights.items()}
        for name, t in bufs.items():
            self.register_buffer(name, t)
        self._rope = None  # (cos, sin) tables, grown on demand (never inside a CUDA graph)
        self.tp_group = None  # the process group this layer's shard sums over (models/tp.py); None: whole

    def rope_tables(self, n_positions: int, device):
        """cos, sin covering positions 0 .. n_positions - 1 (float64 for a float64 layer,
        else float32; kernels/attention/rope.py). Grown in powers of two."""
        dtype = torch.float64 if self.w_qkv.dtype == torch.float64 else torch.float32
        if self._rope is None or self._rope[0].shape[0] < n_positions or self._rope[0].device != torch.device(device):
            n = max(4096, 1 << (n_positions - 1).bit_length())
            self._rope = rope_tables(n, self.cfg.head_dim, self.cfg.rope_theta, device, dtype)
        return self._rope

    def forward(self, x: torch.Tensor, cache: KVCache, pos: int, ops) -> torch.Tensor:
        """x (B, T, hidden): T new tokens at positions pos .. pos + T - 1 of every sequence;
        writes their k, v into the cache and returns the layer's output (B, T, hidden)."""
        self._check_step(x, cache, pos, ops)
        cfg = self.cfg
        B, T, _ = x.shape
        Hq, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        if cfg.ngpt:
            qkv = ops.linear(x, self.w_qkv)
        else:
            qkv = ops.rmsnorm_linear(x, self.attn_norm, self.w_qkv, cfg.eps)
        q, k, v = qkv.split([Hq * D, Hkv * D, Hkv * D], dim=-1)
        q, k, v = q.view(B, T, Hq, D), k.view(B, T, Hkv, D), v.view(B, T, Hkv, D)
        cos, sin = self.rope_tables(pos + T, x.device)
        qk_norm = (self.q_norm, self.k_norm) if cfg.qk_norm or cfg.ngpt else (None, None)
        if isinstance(cache, SharedPrefixCache):  # the suffix's slot 0 is position offset: the tables shift with it
            slot = pos - cache.offset
            q = ops.rope_kv_write(q, k, v, cache.k, cache.v, slot, cos[cache.offset:], sin[cache.offset:], *qk_norm,
                                  cfg.eps)
            attn = ops.shared_prefix_attention(q, cache.pool_k, cache.pool_v, cache.tree, cache.k, cache.v, slot + T)
        else:
            q = ops.rope_kv_write(q, k, v, cache.k, cache.v, pos, cos, sin, *qk_norm, cfg.eps)
            attn = ops.attention(q, cache.k, cache.v, pos + T)
        o = self._sum_shards(ops.linear(attn.reshape(B, T, Hq * D), self.w_o))

        if cfg.ngpt:
            h = ops.ngpt_update(x, o, self.alpha_attn)
            mlp = self._sum_shards(ops.linear(ops.gated_mlp(h, self.w1, self.w3), self.w2))
            return ops.ngpt_update(h, mlp, self.alpha_mlp)
        y, h = ops.fused_add_rms_norm(o, x, self.ffn_norm, cfg.eps)
        if cfg.lora_rank:
            s = cfg.lora_scale
            a = ops.lora_linear(y, self.w1, self.lora_a1, self.lora_b1, s)
            c = ops.lora_linear(y, self.w3, self.lora_a3, self.lora_b3, s)
            return ops.lora_linear(F.silu(a) * c, self.w2, self.lora_a2, self.lora_b2, s, residual=h)
        mlp = ops.gated_mlp(y, self.w1, self.w3)
        if self.tp_group is not None:  # the residual once, after the shards' sum
            return h + self._sum_shards(ops.linear(mlp, self.w2))
        return ops.linear(mlp, self.w2, residual=h)

    def _sum_shards(self, partial: torch.Tensor) -> torch.Tensor:
        """A row-split projection's output: the sum of every shard's partial product under
        tensor parallelism (models/tp.py), the whole product alone."""
        if self.tp_group is not None:
            torch.distributed.all_reduce(partial, group=self.tp_group)
        return partial

    def _check_shared_prefix(self, cache, batch, like_layer) -> None:
        """The tree, pool and offset of a SharedPrefixCache agree with each other and the batch
        (the attention reads the pool where the tree says, at positions from the offset)."""
        from kernels.attention.shared_prefix import PrefixTree

        cfg = self.cfg
        if not isinstance(cache.tree, PrefixTree):
            raise TypeError(f"cache.tree must be a PrefixTree (kernels.attention.prefix_tree), got "
                            f"{type(cache.tree).__name__}")
        if cache.tree.n_seqs != batch:
            raise ValueError(f"cache.tree holds {cache.tree.n_seqs} sequences; the batch has {batch}")
        for name in ("pool_k", "pool_v"):
            t = getattr(cache, name)
            like_layer(f"cache.{name}", t)
            if t.dim() != 3 or t.shape[1:] != (cfg.n_kv_heads, cfg.head_dim) or t.shape[0] < cache.tree.pool_tokens:
                raise ValueError(f"cache.{name} must have shape (pool_tokens >= {cache.tree.pool_tokens}, "
                                 f"{cfg.n_kv_heads}, {cfg.head_dim}) for the tree's nodes; got {tuple(t.shape)}")
        check_int("cache.offset", cache.offset, minimum=0)
        lengths = cache.tree.path_lengths
        if lengths and lengths != {cache.offset}:
            raise ValueError(f"every sequence's path through the tree must be cache.offset = {cache.offset} tokens "
                             f"long (its tokens' positions start there); the paths hold {sorted(lengths)}")

    def _check_step(self, x, cache, pos, ops) -> None:
        """forward's arguments, named in errors before any kernel sees them (shapes, dtypes and
        devices only: nothing that would break torch.compile of forward)."""
        cfg, w = self.cfg, self.w_qkv

        def like_layer(name, t):  # a tensor of the layer's dtype on its device
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != w.dtype:
                raise TypeError(f"{name} has dtype {t.dtype}; the layer's is {w.dtype}")
            if t.device != w.device:
                raise ValueError(f"{name} is on {t.device}; the layer is on {w.device}")

        like_layer("x", x)
        if x.dim() != 3 or x.shape[2] != cfg.hidden:
            raise ValueError(f"x must have shape (batch, tokens, hidden={cfg.hidden}); got {tuple(x.shape)}")
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
        B, T = x.shape[:2]
        for name, t in (("cache.k", cache.k), ("cache.v", cache.v)):
            like_layer(name, t)
            if t.dim() != 4 or t.shape[0] != B or t.shape[2:] != (cfg.n_kv_heads, cfg.head_dim):
                raise ValueError(f"{name} must have shape (batch={B}, capacity, {cfg.n_kv_heads}, {cfg.head_dim}); "
                                 f"got {tuple(t.shape)}")
        if cache.k.shape != cache.v.shape:
            raise ValueError(f"cache.k {tuple(cache.k.shape)} and cache.v {tuple(cache.v.shape)} differ in shape")
        if isinstance(pos, torch.Tensor):
            raise TypeError("pos must be an int, got a Tensor: pass int(pos)")
        check_int("pos", pos, minimum=0)
        offset = cache.offset if isinstance(cache, SharedPrefixCache) else 0
        if isinstance(cache, SharedPrefixCache):
            self._check_shared_prefix(cache, B, like_layer)
        if pos < offset:
            raise ValueError(f"position {pos} lies in the shared prefix (positions 0 .. {offset - 1}): new tokens go "
                             "after it")
        if pos - offset + T > cache.k.shape[1]:
            raise ValueError(f"positions {pos} .. {pos + T - 1} do not fit the cache capacity {cache.k.shape[1]}"
                             + (f" after the {offset}-token shared prefix" if offset else ""))
        if getattr(ops, "name", None) not in ("triton", "torch"):
            raise TypeError(f"ops must come from models.get_ops('triton' or 'torch'), got {type(ops).__name__}")
