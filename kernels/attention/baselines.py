"""Baselines for GQA decode, called with the kernel's layouts (q (B, T, Hq, D), caches
(B, S, Hkv, D)) and no mask: the perf cases use full caches and either one query token
or non-causal attention, which every baseline computes exactly.

- sdpa_<backend>: torch SDPA restricted to one backend (flash, cudnn, efficient), GQA
  through enable_gqa (no copies of the KV heads).
- flex: FlexAttention (compiled), enable_gqa.
- flash_attn: flash-attn's flash_attn_with_kvcache, where flash-attn is installed.
For dense causal prefill (below): the same SDPA backends and FlexAttention with a causal
block mask, flash-attn's flash_attn_func and flash-attn 4's (flash_attn.cute) where they
import.
Each returns out in q's layout. A backend that refuses the inputs raises; the perf case
records the reason and skips that baseline.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def _bhtd(t):
    return t.transpose(1, 2)  # a view: (B, T, H, D) -> (B, H, T, D)


def sdpa(backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend_name]

    def run(q, k, v):
        with sdpa_kernel(backend):
            o = F.scaled_dot_product_attention(_bhtd(q), _bhtd(k), _bhtd(v), enable_gqa=True)
        return o.transpose(1, 2)

    return run


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    from kernels.providers import compiled  # the recompile limit raised, and hitting it an error

    return compiled(flex_attention)


def flex(q, k, v):
    o = _compiled_flex()(_bhtd(q), _bhtd(k), _bhtd(v), enable_gqa=True)
    return o.transpose(1, 2)


def flash_attn_available() -> str | None:
    """None if flash-attn's KV-cache decode imports, else why not."""
    try:
        from flash_attn import flash_attn_with_kvcache  # noqa: F401
    except Exception as exc:  # ImportError, or a build that does not match this torch
        return f"flash-attn not importable ({type(exc).__name__}: {exc})"
    return None


def flash_attn(q, k, v):
    from flash_attn import flash_attn_with_kvcache

    return flash_attn_with_kvcache(q, k, v, causal=False)


# Dense causal prefill (q, k, v all (B, T, H, D), queries at the T positions of the keys).

def sdpa_causal(backend_name: str):
    """SDPA restricted to one backend, causal, GQA through enable_gqa."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend_name]

    def run(q, k, v):
        with sdpa_kernel(backend):
            o = F.scaled_dot_product_attention(_bhtd(q), _bhtd(k), _bhtd(v), is_causal=True, enable_gqa=True)
        return o.transpose(1, 2)

    return run


def flex_causal(batch: int, q_heads: int, length: int):
    """FlexAttention with a causal block mask (built once for the shape: its blocks past the
    diagonal are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    mask = create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None, length, length)
    flex_fn = _compiled_flex()

    def run(q, k, v):
        return flex_fn(_bhtd(q), _bhtd(k), _bhtd(v), block_mask=mask, enable_gqa=True).transpose(1, 2)

    return run


def flash_attn_causal(q, k, v):
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v, causal=True)


def flash_attn_4_causal(q, k, v):
    from flash_attn.cute import flash_attn_func

    out = flash_attn_func(q, k, v, causal=True)
    return out[0] if isinstance(out, tuple) else out
