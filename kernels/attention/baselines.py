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
For rope_kv_write: the same QK-norm, rotation and cache write as model code (torch_rope_kv_write).
For sparse prefill: FlexAttention with a block mask of exactly the keys a sparse index
selects (flex_sparse). Each returns out in q's layout. A backend that refuses the inputs raises; the perf case
records the reason and skips that baseline.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .reference import rope_reference


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


FLEX_BLOCK = 128  # FlexAttention's default tile, in query rows and keys


def causal_block_mask(length: int, device="cuda"):
    """FlexAttention's causal BlockMask built from its block lists: each query tile's earlier
    key tiles whole (no mask_mod), its diagonal tile masked. create_block_mask evaluates the
    mask over every (query, key) pair: 128 GiB asked for at 128K tokens."""
    from torch.nn.attention.flex_attention import BlockMask

    nb = -(-length // FLEX_BLOCK)
    tiles = torch.arange(nb, device=device, dtype=torch.int32)
    diag = ((tiles[:, None] + tiles[None, :]) % max(nb, 1)).view(1, 1, nb, nb)  # row i lists tile i first
    return BlockMask.from_kv_blocks(
        torch.ones(1, 1, nb, dtype=torch.int32, device=device), diag,
        tiles.view(1, 1, nb), tiles.expand(nb, nb).contiguous().view(1, 1, nb, nb),  # tile i: tiles 0 .. i - 1 whole
        BLOCK_SIZE=FLEX_BLOCK, mask_mod=lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, seq_lengths=(length, length))


def flex_causal(batch: int, q_heads: int, length: int):
    """FlexAttention with a causal block mask (built once for the shape: its blocks past the
    diagonal are skipped)."""
    mask = causal_block_mask(length)
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


# Shared-prefix decode (one query token a sequence): q (B, 1, Hq, D), the nodes' KV in a pool
# (P, Hkv, D), suffixes (B, S, Hkv, D) in full (the perf cases store both in one packed
# tensor, the pool then the suffixes). The copies baselines read per-sequence copies of
# [path | suffix] (reference.sequence_kv, made with the inputs).

def merge_by_lse(parts):
    """softmax-merge of [(out (B, T, H, D), lse (B, H, T) natural log), ...]: float32 out."""
    lses = torch.stack([lse.float() for _, lse in parts])          # (n, B, H, T)
    m = lses.amax(0).clamp_min(torch.finfo(torch.float32).min)   # a part that saw no key: -inf, weight 0
    w = torch.exp(lses - m)                                        # (n, B, H, T)
    out = sum(o.float() * wi.transpose(1, 2)[..., None] for (o, _), wi in zip(parts, w))
    return out / w.sum(0).transpose(1, 2)[..., None]


def copies_sdpa(q, k_copy, v_copy):
    """SDPA (its own backend choice) over each sequence's copy of [prefix | suffix]."""
    o = F.scaled_dot_product_attention(_bhtd(q), _bhtd(k_copy), _bhtd(v_copy), enable_gqa=True)
    return o.transpose(1, 2)


def shared_read_decode(q, k_pool, v_pool, prefix_len, k_suffix, v_suffix):
    """No copies, no sharing: every sequence reads the one prefix (a stride-0 batch view, as
    a paged-KV server's block table points all sequences at the same blocks) with the
    suite's split-KV decode, its suffix apart, merged by lse."""
    from .decode import gqa_decode

    B = q.shape[0]
    prefix = (k_pool[:prefix_len][None].expand(B, -1, -1, -1), v_pool[:prefix_len][None].expand(B, -1, -1, -1))
    return merge_by_lse([gqa_decode(q, *prefix, return_lse=True),
                         gqa_decode(q, k_suffix, v_suffix, return_lse=True)]).to(q.dtype)


def hydragen_torch(q, k_pool, v_pool, prefix_len, k_suffix, v_suffix):
    """Hydragen in PyTorch: the prefix attended by one flash-attention call with every
    sequence's queries (and the query heads of each KV head) folded into its query length,
    the suffixes by another, both with their log-sum-exp, then the merge."""
    B, T, Hq, D = q.shape
    Hkv = k_suffix.shape[2]
    g = Hq // Hkv
    # (B, T, Hkv, g, D) -> (1, Hkv, B*T*g, D): one query sequence per KV head
    q_all = q.view(B, T, Hkv, g, D).permute(2, 0, 1, 3, 4).reshape(1, Hkv, B * T * g, D)
    kp, vp = (t[:prefix_len].transpose(0, 1)[None] for t in (k_pool, v_pool))  # (1, Hkv, P, D)
    o_p, lse_p = torch.ops.aten._scaled_dot_product_flash_attention(q_all, kp, vp)[:2]
    o_p = o_p.view(Hkv, B, T, g, D).permute(1, 2, 0, 3, 4).reshape(B, T, Hq, D)
    lse_p = lse_p.view(Hkv, B, T, g).permute(1, 0, 3, 2).reshape(B, Hq, T)
    q_seq = q.view(B, T, Hkv, g, D).permute(0, 2, 1, 3, 4).reshape(B, Hkv, T * g, D)  # non-causal: T = 1
    o_s, lse_s = torch.ops.aten._scaled_dot_product_flash_attention(q_seq, _bhtd(k_suffix), _bhtd(v_suffix))[:2]
    o_s = o_s.view(B, Hkv, T, g, D).permute(0, 2, 1, 3, 4).reshape(B, T, Hq, D)
    lse_s = lse_s.view(B, Hkv, T, g).permute(0, 1, 3, 2).reshape(B, Hq, T)
    return merge_by_lse([(o_p, lse_p), (o_s, lse_s)]).to(q.dtype)


def flex_tree(tree, suffix_len: int, q_heads: int):
    """FlexAttention over the packed tree: the pool then every suffix as one key sequence,
    all sequences' queries as one query sequence, a block mask letting sequence b see its
    path's nodes and its own suffix (the mask's empty blocks are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, pool = tree.n_seqs, tree.pool_tokens
    owner = torch.full((pool,), -1, dtype=torch.long)        # a pool row's node
    for n in range(tree.n_nodes):
        owner[tree.kv_start[n]:tree.kv_start[n] + tree.kv_len[n]] = n
    on_path = torch.zeros(B, tree.n_nodes + 1, dtype=torch.bool)  # (sequence, node); column -1: no node
    for b, path in enumerate(tree.paths):
        on_path[b, path] = True
    owner, on_path = owner.to(tree.device), on_path.to(tree.device)

    def visible(b, h, q_idx, kv_idx):
        in_pool = kv_idx < pool
        node = owner[torch.clamp(kv_idx, max=pool - 1)]
        own_suffix = (kv_idx - pool) // suffix_len == q_idx
        return (in_pool & on_path[q_idx, node]) | (~in_pool & own_suffix)

    mask = create_block_mask(visible, None, None, B, pool + B * suffix_len, device=tree.device)
    flex_fn = _compiled_flex()

    def run(q, k_packed, v_packed):
        """k_packed, v_packed (pool + B * suffix_len, Hkv, D): the pool, then the suffixes."""
        o = flex_fn(q.transpose(0, 1).transpose(1, 2), k_packed.transpose(0, 1)[None], v_packed.transpose(0, 1)[None],
                    block_mask=mask, enable_gqa=True)                    # (1, Hq, B, D)
        return o[0].transpose(0, 1)[:, None]                              # (B, 1, Hq, D)

    return run


# Sparse prefill (kernels/attention/sparse_prefill.py): FlexAttention over the same keys.

def sparse_block_mask(index):
    """FlexAttention's BlockMask of exactly the keys a sparse prefill index selects
    (SparseIndex or BlockIndex, one per query head), built from the index's own fields: a
    (tokens x tokens) mask, as create_block_mask would evaluate, does not fit at 128K."""
    from torch.nn.attention.flex_attention import BlockMask

    from kernels.attention.sparse_prefill import BLOCK

    T = index.tokens
    if hasattr(index, "blocks"):  # BlockIndex: chosen 64-key blocks of each 64-row block
        B, H, nb, _ = index.blocks.shape
        listed = torch.arange(index.blocks.shape[-1], device=index.blocks.device) < index.counts[..., None].long()
        chosen = torch.zeros(B, H, nb, nb + 1, dtype=torch.bool, device=index.blocks.device)
        chosen.scatter_(-1, torch.where(listed, index.blocks.long(), nb), True)
        chosen = chosen[..., :nb]

        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & chosen[b, h, q_idx // BLOCK, kv_idx // BLOCK]

        pairs = chosen
    else:  # SparseIndex: per 64-row block, key ranges from its intervals, plus its columns
        B, H = index.n_intervals.shape
        dev = index.intervals.device
        # covered[b, h, m0 - key + BLOCK - 1]: the block starting at row m0 sees the key through a range
        a, last = index.intervals[..., 0].long(), index.intervals[..., 1].long()
        ok = torch.arange(a.shape[-1], device=dev) < index.n_intervals[..., None].long()
        size = T + BLOCK
        diff = torch.zeros(B, H, size + 1, dtype=torch.long, device=dev)
        diff.scatter_add_(-1, torch.where(ok, a, size), ok.long())
        diff.scatter_add_(-1, torch.where(ok, (last + BLOCK).clamp(max=size), size), -ok.long())
        covered = diff.cumsum(-1)[..., :size] > 0
        is_col = torch.zeros(B, H, T + 1, dtype=torch.bool, device=dev)
        is_col.scatter_(-1, index.columns.long().clamp(max=T), True)
        is_col = is_col[..., :T].contiguous()

        def mask_mod(b, h, q_idx, kv_idx):
            slot = (q_idx // BLOCK) * BLOCK - kv_idx + BLOCK - 1  # >= 0 for every causal pair
            return (kv_idx <= q_idx) & (covered[b, h, slot.clamp(0, size - 1)] | is_col[b, h, kv_idx])

        # which (64-row block, 64-key block) pairs hold a selected key, by prefix sums
        nb = -(-T // BLOCK)
        csum = torch.nn.functional.pad(covered.long().cumsum(-1), (1, 0))
        m0 = torch.arange(nb, device=dev)[:, None] * BLOCK
        k0 = torch.arange(nb, device=dev)[None, :] * BLOCK
        lo = (m0 - k0).clamp(0, size)  # covered's slots of the pair's keys: m0 - k0 .. m0 - k0 + BLOCK - 1
        hi = (m0 - k0 + BLOCK).clamp(0, size)
        ranges = (csum[..., hi] - csum[..., lo]) > 0
        cols = torch.nn.functional.pad(is_col, (0, nb * BLOCK - T)).view(B, H, nb, BLOCK).any(-1)
        pairs = (ranges | cols[:, :, None, :]) & (k0 <= m0)
    # FlexAttention's tiles hold FLEX_BLOCK // BLOCK of the pattern's blocks each way
    f = FLEX_BLOCK // BLOCK
    nf = -(-pairs.shape[-1] // f)
    pairs = torch.nn.functional.pad(pairs, (0, nf * f - pairs.shape[-1], 0, nf * f - pairs.shape[-2]))
    tiles = pairs.view(B, H, nf, f, nf, f).any(5).any(3)
    order = torch.argsort(tiles.to(torch.int8), dim=-1, descending=True, stable=True)
    return BlockMask.from_kv_blocks(tiles.sum(-1).to(torch.int32), order.to(torch.int32),
                                    BLOCK_SIZE=FLEX_BLOCK, mask_mod=mask_mod, seq_lengths=(T, T))


def flex_sparse(index):
    """FlexAttention (compiled) over exactly the keys `index` selects: the same function as
    the sparse prefill, for its perf cases."""
    mask = sparse_block_mask(index)
    flex_fn = _compiled_flex()

    def run(q, k, v):
        return flex_fn(_bhtd(q), _bhtd(k), _bhtd(v), block_mask=mask, enable_gqa=True).transpose(1, 2)

    return run


def torch_rope_kv_write(q, k, v, k_cache, v_cache, pos, cos, sin, q_norm_weight=None, k_norm_weight=None,
                        eps=1e-6):
    """QK-norm (F.rms_norm), RoPE in fp32 from the tables (rope_reference: the rotation is
    plain PyTorch), and the cache write, as model code."""
    T = q.shape[1]
    if q_norm_weight is not None:
        q, k = F.rms_norm(q, (q.shape[-1],), q_norm_weight, eps), F.rms_norm(k, (k.shape[-1],), k_norm_weight, eps)
    q, k = rope_reference(q, cos, sin, pos), rope_reference(k, cos, sin, pos)
    k_cache[:, pos:pos + T] = k
    v_cache[:, pos:pos + T] = v
    return q
