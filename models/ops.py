"""The one switch between the suite's Triton kernels and plain PyTorch for every model.

`get_ops("triton")` and `get_ops("torch")` return the same set of operations; a layer takes
one and never calls a kernel directly. The torch set is ordinary model code in the model's
dtype (the kernels' PyTorch baselines, kernels/*/baselines.py) and is the plain-PyTorch
layer the Triton layer is checked and timed against.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F


def _torch_attention(q, k_cache, v_cache, kv_len, causal=True):
    """SDPA over the first kv_len cached positions; q's T tokens are the last T of them."""
    T = q.shape[1]
    k, v = k_cache[:, :kv_len].transpose(1, 2), v_cache[:, :kv_len].transpose(1, 2)
    mask, from_scratch = None, causal and T > 1 and T == kv_len
    if causal and T > 1 and not from_scratch:  # bottom-right aligned: query t sees keys 0 .. kv_len - T + t
        mask = torch.ones(T, kv_len, dtype=torch.bool, device=q.device).tril(diagonal=kv_len - T)
    # a whole prompt from position 0: is_causal, which SDPA's flash and cuDNN backends take (a
    # mask would send it to the efficient or math backend, the latter T^2 scores in memory)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask, is_causal=from_scratch,
                                       enable_gqa=True)
    return o.transpose(1, 2)


def _torch_shared_prefix_attention(q, k_pool, v_pool, tree, k_suffix, v_suffix, suffix_len):
    """Without sharing, as a model without it runs: each sequence's copy of [its path |
    its suffix] (every path is as long: no padding), then SDPA."""
    from kernels.attention.reference import sequence_kv

    k, v, total = sequence_kv(k_pool, v_pool, tree, k_suffix, v_suffix, suffix_len)
    return _torch_attention(q, k, v, int(total[0]) if len(total) else 0)


def _torch_ops():
    from kernels.attention.baselines import torch_rope_kv_write
    from kernels.linear.baselines import eager_gated_mlp, eager_lora_linear, torch_rmsnorm_linear
    from kernels.norm.baselines import eager_ngpt_update, torch_fused_add_rms_norm, torch_rms_norm

    def linear(x, w, residual=None):
        y = x @ w
        return y if residual is None else residual + y

    def lora_linear(x, w, a, b, scale, residual=None):
        y = eager_lora_linear(x, w, a, b, scale)
        return y if residual is None else residual + y

    return SimpleNamespace(
        name="torch",
        rms_norm=torch_rms_norm,
        fused_add_rms_norm=torch_fused_add_rms_norm,
        rmsnorm_linear=torch_rmsnorm_linear,
        linear=linear,
        gated_mlp=eager_gated_mlp,
        lora_linear=lora_linear,
        attention=_torch_attention,
        shared_prefix_attention=_torch_shared_prefix_attention,
        rope_kv_write=torch_rope_kv_write,
        ngpt_update=eager_ngpt_update,
    )


DECODE_MAX_TOKENS = 32  # query tokens the decode kernel takes; more go to the prefill kernel


def _triton_ops():
    from kernels.attention import gqa_decode, prefill_attention, rope_kv_write, shared_prefix_decode
    from kernels.linear import gated_mlp, linear, lora_linear, rmsnorm_linear
    from kernels.norm import fused_add_rms_norm, ngpt_update, rms_norm

    def attention(q, k_cache, v_cache, kv_len):
        # a decode step or a short chunk: split-KV decode; a prompt: the prefill kernel
        if q.shape[1] <= DECODE_MAX_TOKENS:
            return gqa_decode(q, k_cache, v_cache, kv_len, causal=True)
        return prefill_attention(q, k_cache, v_cache, kv_len, causal=True)

    return SimpleNamespace(
        name="triton",
        rms_norm=rms_norm,
        fused_add_rms_norm=fused_add_rms_norm,
        rmsnorm_linear=rmsnorm_linear,
        linear=linear,
        gated_mlp=gated_mlp,
        lora_linear=lora_linear,
        attention=attention,
        shared_prefix_attention=shared_prefix_decode,
        rope_kv_write=rope_kv_write,
        ngpt_update=ngpt_update,
    )


def get_ops(backend: str):
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str ('triton' or 'torch'), got {type(backend).__name__}")
    if backend == "triton":
        return _triton_ops()
    if backend == "torch":
        return _torch_ops()
    raise ValueError(f"unknown backend {backend!r}: use 'triton' or 'torch'")
