"""The PyTorch reference of GQA attention over a KV cache: the one definition of the math.

`compute_dtype` sets the precision of every step (scores, softmax, weighted sum): float64
gives the exact answer; the input dtype gives the naive low-precision computation whose
error sets the kernels' tolerance: a kernel's largest error against float64 may be at
most twice that computation's, plus one rounding of the output (the rule flash-attention's
own tests apply).
"""
from __future__ import annotations

import torch


def gqa_attention_reference(q, k_cache, v_cache, kv_lens=None, scale=None, causal=True,
                            compute_dtype=torch.float32, return_lse=False, mask=None):
    """q (B, T, Hq, D); k_cache, v_cache (B, S, Hkv, D); kv_lens (B,) or None (= S).
    Causal: query t of T sits at position kv_len - T + t. mask: a boolean (B, Hq, T, S)
    (broadcastable) of the keys each query may see besides that, for sparse attention.
    Returns out (B, T, Hq, D) in q's dtype (float64 when compute_dtype is float64) and, if
    asked, lse (B, Hq, T)."""
    B, T, Hq, D = q.shape
    S, Hkv = k_cache.shape[1], k_cache.shape[2]
    group = Hq // Hkv
    scale = D ** -0.5 if scale is None else scale
    lens = torch.full((B,), S, dtype=torch.long) if kv_lens is None else kv_lens.detach().to("cpu", torch.long)
    qc = q.to(compute_dtype)
    kc = k_cache.to(compute_dtype).repeat_interleave(group, dim=2)
    vc = v_cache.to(compute_dtype).repeat_interleave(group, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", qc, kc) * scale
    pos = torch.arange(S)
    visible = pos[None, None, :] < lens[:, None, None]                       # (B, 1, S)
    if causal:
        last = lens[:, None] - T + torch.arange(T)[None, :]                  # (B, T)
        visible = visible & (pos[None, None, :] <= last[:, :, None])         # (B, T, S)
    visible = visible.expand(B, T, S)[:, None].to(scores.device)             # (B, 1, T, S)
    if mask is not None:
        visible = visible & mask.to(scores.device)
    scores = scores.masked_fill(~visible, float("-inf"))
    any_key = visible.any(dim=-1, keepdim=True)
    p = torch.softmax(scores, dim=-1).masked_fill(~any_key, 0.0)
    out = _weighted_values(p, vc, visible.expand_as(p))
    if compute_dtype != torch.float64:
        out = out.to(q.dtype)
    if not return_lse:
        return out
    lse = torch.logsumexp(scores.to(torch.float64 if compute_dtype == torch.float64 else torch.float32), dim=-1)
    return out, lse


def _weighted_values(p, v, visible):
    """sum over the visible keys of p * v, (B, T, H, D): a NaN or infinite value of a key
    reaches only the rows that see it (a plain product would also carry it, as 0 * NaN, into
    every row that does not), as an infinity weighted by p = 0 gives NaN."""
    finite = torch.isfinite(v)
    out = torch.einsum("bhts,bshd->bthd", p, torch.where(finite, v, 0))
    if bool(finite.all()):
        return out
    seen = visible.to(v.dtype)
    weighted = (visible & (p > 0)).to(v.dtype)
    hits = lambda w, bad: torch.einsum("bhts,bshd->bthd", w, bad.to(v.dtype)) > 0  # noqa: E731
    pos_inf, neg_inf = hits(weighted, v == float("inf")), hits(weighted, v == float("-inf"))
    nan = hits(seen, torch.isnan(v)) | hits((visible & (p == 0)).to(v.dtype), torch.isinf(v)) | (pos_inf & neg_inf)
    out = out.masked_fill(pos_inf, float("inf")).masked_fill(neg_inf, float("-inf"))
    return out.masked_fill(nan, float("nan"))


def rope_reference(x, cos, sin, pos, compute_dtype=torch.float32):
    """Rotate-half rotary embedding of x (B, T, H, D) at positions pos .. pos + T - 1, with
    cos, sin (positions, D / 2) from rope_tables. float64 returns float64; otherwise the
    rotation runs in fp32 and rounds once to x's dtype."""
    T = x.shape[1]
    cdt = torch.float64 if compute_dtype == torch.float64 else torch.float32
    c = cos[pos:pos + T].to(x.device, cdt)[None, :, None, :]
    s = sin[pos:pos + T].to(x.device, cdt)[None, :, None, :]
    x1, x2 = x.to(cdt).chunk(2, dim=-1)
    out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    return out if compute_dtype == torch.float64 else out.to(x.dtype)


def rope_kv_write_reference(q, k, v, k_cache, v_cache, pos, cos, sin, q_norm_weight=None, k_norm_weight=None,
                            eps=1e-6, compute_dtype=torch.float32):
    """What kernels/attention/rope.py computes: optional RMSNorm of q and k over the head
    dim (rounded to the input dtype, as the unfused model stores it), RoPE, and k, v
    written into the caches (in place) at pos .. pos + T - 1. Returns the new q."""
    from kernels.norm.reference import rms_norm_reference

    if q_norm_weight is not None:
        q = rms_norm_reference(q, q_norm_weight, eps, compute_dtype)
        k = rms_norm_reference(k, k_norm_weight, eps, compute_dtype)
    q, k = rope_reference(q, cos, sin, pos, compute_dtype), rope_reference(k, cos, sin, pos, compute_dtype)
    T = q.shape[1]
    k_cache[:, pos:pos + T] = k.to(k_cache.dtype)
    v_cache[:, pos:pos + T] = v.to(v_cache.dtype)
    return q


def sequence_kv(k_pool, v_pool, tree, k_suffix, v_suffix, suffix_lens=None, seqs=slice(None)):
    """Each sequence's keys and values as one row of a dense cache: its path's nodes (copied
    out of the pool, root first) then its suffix, zero-padded to the longest. seqs: which
    sequences (a slice; all by default). Returns (k, v, lengths (B,) int64 on the CPU)."""
    B, S = k_suffix.shape[0], k_suffix.shape[1]
    lens = [S] * B if suffix_lens is None else (
        [int(suffix_lens)] * B if isinstance(suffix_lens, int) else suffix_lens.detach().cpu().tolist())
    lens, k_suffix, v_suffix = lens[seqs], k_suffix[seqs], v_suffix[seqs]
    B = len(lens)
    paths = [torch.cat([torch.arange(tree.kv_start[n], tree.kv_start[n] + tree.kv_len[n]) for n in path])
             if path else torch.zeros(0, dtype=torch.long) for path in tree.paths[seqs]]
    total = torch.tensor([len(p) + n for p, n in zip(paths, lens)], dtype=torch.long)
    longest = int(total.max()) if B else 0
    k = k_suffix.new_zeros(B, longest, *k_suffix.shape[2:])
    v = v_suffix.new_zeros(B, longest, *v_suffix.shape[2:])
    for b, rows in enumerate(paths):
        rows = rows.to(k_pool.device)
        k[b, :len(rows)], v[b, :len(rows)] = k_pool[rows], v_pool[rows]
        k[b, len(rows):total[b]], v[b, len(rows):total[b]] = k_suffix[b, :lens[b]], v_suffix[b, :lens[b]]
    return k, v, total


def shared_prefix_reference(q, k_pool, v_pool, tree, k_suffix, v_suffix, suffix_lens=None, scale=None,
                            compute_dtype=torch.float32, return_lse=False, seqs_at_once=None):
    """Shared-prefix decode as plain attention over per-sequence copies (sequence_kv), the
    queries the last q_tokens positions of each sequence. seqs_at_once: how many sequences'
    copies exist at a time (all by default); fewer is the same attention in less memory."""
    B = q.shape[0]
    step = max(B, 1) if seqs_at_once is None else seqs_at_once
    if step < 1:
        raise ValueError(f"seqs_at_once must be at least 1, got {seqs_at_once}")
    parts = []
    for lo in range(0, max(B, 1), step):
        seqs = slice(lo, lo + step)
        k, v, total = sequence_kv(k_pool, v_pool, tree, k_suffix, v_suffix, suffix_lens, seqs)
        parts.append(gqa_attention_reference(q[seqs], k, v, total, scale=scale, causal=True,
                                             compute_dtype=compute_dtype, return_lse=return_lse))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(p) for p in zip(*parts)) if return_lse else torch.cat(parts)


def vertical_slash_mask(T, columns, diagonals, block=64):
    """The keys a vertical-slash pattern lets each query see, built plainly from the chosen
    key columns (B, H, NC) and diagonals (B, H, ND) (query position - key position; -1
    pads): the queries of each `block`-row block see every key on one of the chosen
    diagonals of any row of the block, and the chosen columns; causal on top. Returns a
    boolean (B, H, T, T)."""
    B, H = columns.shape[:2]
    rows = torch.arange(T)
    keys = torch.arange(T)
    m0 = rows // block * block                                               # each row's block start
    mask = torch.zeros(B, H, T, T, dtype=torch.bool)
    cols = columns.cpu().long()
    for c in range(cols.shape[-1]):  # key in the column set
        ok = (cols[..., c] >= 0)[..., None, None]
        mask |= ok & (keys[None, None, None, :] == cols[..., c, None, None])
    diags = diagonals.cpu().long()
    for j in range(diags.shape[-1]):  # key on diagonal d of some row of the block: m0 - d <= key <= m0 + block - 1 - d
        d = diags[..., j, None, None]
        lo, hi = m0[None, None, :, None] - d, m0[None, None, :, None] + block - 1 - d
        mask |= (d >= 0) & (keys >= lo) & (keys <= hi)
    return mask & (keys[None, :] <= rows[:, None])


def vertical_slash_estimate_reference(q, k, last_q=64, scale=None, compute_dtype=torch.float64):
    """The scores MInference's vertical-slash estimate ranks keys and diagonals by: the causal
    softmax of the last `last_q` queries over all keys of a prefill from scratch (q (B, T,
    Hq, D), k (B, T, Hkv, D)), summed per key (vertical) and per diagonal (slash, query
    position - key position). Returns (vertical, slash), each (B, Hq, T)."""
    B, T, Hq, D = q.shape
    rows = min(last_q, T)
    scale = D ** -0.5 if scale is None else scale
    kc = k.to(compute_dtype).repeat_interleave(Hq // k.shape[2], dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q[:, T - rows:].to(compute_dtype), kc) * scale
    pos = torch.arange(T - rows, T, device=q.device)[:, None]
    keys = torch.arange(T, device=q.device)[None, :]
    p = torch.softmax(scores.masked_fill(keys > pos, float("-inf")), dim=-1)
    diag = (pos - keys).clamp(min=0).expand(B, Hq, rows, T)        # p is 0 where the key is past the query
    slash = torch.zeros(B, Hq, T, dtype=p.dtype, device=p.device).scatter_add_(-1, diag.reshape(B, Hq, -1),
                                                                               p.reshape(B, Hq, -1))
    return p.sum(2), slash


def sparse_index_rows_mask(index, rows):
    """The keys a sparse prefill index (kernels/attention/sparse_prefill.py: SparseIndex or
    BlockIndex) lets the query rows `rows` (ascending positions) see: boolean (B, H, len(rows),
    T), causal. Built block by block from the index's fields (no T x T matrix)."""
    T = index.tokens
    rows = torch.as_tensor(rows, dtype=torch.long)
    block = 64
    keys = torch.arange(T)
    tensors = index.blocks if hasattr(index, "blocks") else index.intervals
    B, H = tensors.shape[:2]
    out = torch.zeros(B, H, len(rows), T, dtype=torch.bool, device=tensors.device)
    for blk in torch.unique(rows // block).tolist():
        m0 = blk * block
        sel = (rows // block == blk).nonzero().flatten()
        if hasattr(index, "blocks"):
            kb = index.blocks[:, :, blk].long()
            listed = torch.arange(kb.shape[-1], device=kb.device) < index.counts[:, :, blk, None].long()
            seen_blocks = torch.zeros(B, H, T // block + 2, dtype=torch.bool, device=kb.device)
            seen_blocks.scatter_(-1, torch.where(listed, kb, T // block + 1), True)
            keymask = seen_blocks[..., keys.to(kb.device) // block]
        else:
            n = index.n_intervals.long()[..., None]
            a, last = index.intervals[..., 0].long(), index.intervals[..., 1].long()
            ok = torch.arange(a.shape[-1], device=a.device) < n
            lo = (m0 - last).clamp(min=0, max=T)
            hi = (m0 + block - a).clamp(min=0, max=T)  # one past the range
            ok = ok & (lo < hi)
            diff = torch.zeros(B, H, T + 1, dtype=torch.long, device=a.device)
            diff.scatter_add_(-1, torch.where(ok, lo, T), ok.long())
            diff.scatter_add_(-1, torch.where(ok, hi, T), -ok.long())
            keymask = diff.cumsum(-1) > 0  # (B, H, T + 1): the last slot takes what is not listed
            cols = index.columns.long()
            listed = torch.arange(cols.shape[-1], device=cols.device) < index.block_columns[:, :, blk].long()[..., None]
            keymask = keymask.scatter(-1, torch.where(listed, cols, T), True)[..., :T]
        r = rows[sel].to(keymask.device)
        out[:, :, sel.to(out.device)] = keymask[:, :, None, :] & (keys.to(keymask.device)[None, :] <= r[:, None])
    return out
