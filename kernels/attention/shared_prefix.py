"""Decode attention for sequences that share prefixes (Hydragen), over a prefix tree.

    out = softmax(scale * q [K_path | K_suffix]^T + mask) [V_path | V_suffix]

Each sequence's keys are the nodes on its path through a tree of shared prefixes (a
system prompt shared by all, a document shared by a group, ...) followed by its own
suffix. Attention over the concatenation is the merge of the attention over each part by
their log-sum-exp, so:

1. every shared node's keys are read once, by one batched product with the queries of
   all the sequences under it (the rows of a program are (sequence, query token, query
   head of the KV head's group); a long node is also split along its keys to fill the GPU);
   one launch covers every node of the tree, from a work list on the device;
2. each suffix goes through the split-KV decode kernel (gqa_decode, causal within the
   suffix: the query tokens are its last positions);
3. one merge kernel combines, per query row, the partials of its path's nodes with its
   suffix's attention.

Layout: q (batch, q_tokens, q_heads, head_dim), the sequences in an order where the
sequences under every node are adjacent (a depth-first order of the tree); the nodes'
keys and values in one pool (pool_tokens, kv_heads, head_dim), node n at rows
tree.kv_start[n] .. + tree.kv_len[n]; suffixes (batch, capacity, kv_heads, head_dim) with
suffix_lens (batch,). The log-sum-exp returned is natural-log (base e), float32.
All the tree's metadata lives on the device: a decode step replays in a CUDA graph.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.checks import check_bool, check_number, check_positive_option, check_tensor
from kernels.interpreter import exact_operand
from kernels.launch import cdiv, next_power_of_2, pdl_launch_dependents, pdl_options, sm_count, tma_ok
from kernels.tuning import LaunchSpace, pow2_bucket

from .decode import DTYPES, LN2, decode_launch, gqa_decode, merge_extra_parts
from .decode import _check_inputs as _check_decode_inputs
from .prefill import _attend_block, check_tile_config

PREFIX_BLOCK_N = 64   # keys per step of the node kernel (default)
MERGE_BLOCK_M = 64    # query rows a merge program takes
TARGET_WAVES = 2      # the node kernel's programs: about this many per SM, by splitting long nodes (default)
PROGRAM_KEYS = 256    # whole_waves' price of a program beyond its keys, in keys: its query tile and float32 partial


@dataclass
class PrefixTree:
    """A tree of shared prefixes and the sequences under it (see prefix_tree)."""
    parents: list             # node -> parent node (-1: a root); a parent comes before its children
    kv_start: list            # node -> its first row in the KV pool
    kv_len: list              # node -> its number of tokens
    seq_node: list            # sequence -> its deepest shared node (-1: none, only its suffix)
    seq_start: list           # node -> first sequence under it
    seq_count: list           # node -> number of sequences under it
    paths: list               # sequence -> its nodes, root first
    device: torch.device
    _plans: dict = field(default_factory=dict, repr=False)

    @property
    def n_nodes(self) -> int:
        return len(self.parents)

    @property
    def n_seqs(self) -> int:
        return len(self.seq_node)

    @property
    def shared_nodes(self) -> list:
        """The nodes some sequence reads that hold keys: the ones the node kernel attends."""
        return [n for n in range(self.n_nodes) if self.seq_count[n] and self.kv_len[n]]

    @property
    def pool_tokens(self) -> int:
        """Rows of the KV pool the nodes use."""
        return max((s + n for s, n in zip(self.kv_start, self.kv_len)), default=0)

    @functools.cached_property
    def path_lengths(self) -> frozenset:
        """The token counts of the sequences' paths through the tree, each once (computed once:
        a decoder layer checks its cache against them every step)."""
        return frozenset(sum(self.kv_len[n] for n in path) for path in self.paths)


def _int_list(name, values) -> list:
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    values = list(values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must hold ints, got {v!r}")
    return values


def prefix_tree(parents, kv_len, seq_node, kv_start=None, device="cuda") -> PrefixTree:
    """The tree of shared nodes: parents[n] is node n's parent (-1 for a root; a parent's
    index below its children's), kv_len[n] its tokens, seq_node[b] sequence b's deepest
    shared node (-1: none). kv_start[n] places node n in the KV pool (default: the nodes
    one after another in index order). The sequences under each node must be adjacent."""
    parents, kv_len, seq_node = _int_list("parents", parents), _int_list("kv_len", kv_len), _int_list("seq_node", seq_node)
    n = len(parents)
    if len(kv_len) != n:
        raise ValueError(f"kv_len has {len(kv_len)} entries for {n} nodes")
    for i, p in enumerate(parents):
        if not -1 <= p < i:
            raise ValueError(f"node {i}'s parent {p} must be -1 (a root) or a node before it (0 .. {i - 1})")
    for i, length in enumerate(kv_len):
        if length < 0:
            raise ValueError(f"node {i} has a negative length {length}")
    if kv_start is None:
        kv_start = [sum(kv_len[:i]) for i in range(n)]
    kv_start = _int_list("kv_start", kv_start)
    if len(kv_start) != n or any(s < 0 for s in kv_start):
        raise ValueError(f"kv_start must give {n} non-negative pool rows, got {kv_start}")
    paths = []
    for b, leaf in enumerate(seq_node):
        if not -1 <= leaf < n:
            raise ValueError(f"sequence {b}'s node {leaf} is not a node of the tree (0 .. {n - 1}) or -1")
        path = []
        while leaf != -1:
            path.append(leaf)
            leaf = parents[leaf]
        paths.append(path[::-1])
    seq_start, seq_count = [0] * n, [0] * n
    for node in range(n):
        under = [b for b, path in enumerate(paths) if node in path]
        if under and under != list(range(under[0], under[0] + len(under))):
            raise ValueError(f"the sequences under node {node} ({under}) are not adjacent: order the batch so that "
                             "every node's sequences follow one another (depth first)")
        seq_start[node], seq_count[node] = (under[0], len(under)) if under else (0, 0)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda" is the current device: name it, as tensors do
        device = torch.device("cuda", torch.cuda.current_device())
    return PrefixTree(parents, kv_start, kv_len, seq_node, seq_start, seq_count, paths, device)


def unshared_tree(tree: PrefixTree) -> PrefixTree:
    """The same sequences reading the same pool rows with no node shared: each sequence gets
    its own copy of its path's nodes (metadata only; the keys stay where they are), so
    each reads its prefix on its own, as decode without sharing does."""
    parents, kv_start, kv_len, seq_node = [], [], [], []
    for path in tree.paths:
        last = -1
        for n in path:
            parents.append(last)
            kv_start.append(tree.kv_start[n])
            kv_len.append(tree.kv_len[n])
            last = len(parents) - 1
        seq_node.append(last)
    return prefix_tree(parents, kv_len, seq_node, kv_start, tree.device)


@dataclass
class _Plan:
    """The node kernel's work list and where each partial goes, on the device."""
    work: torch.Tensor        # (items, 5) int32: node, first row, first key, end key, partial
    part_row0: torch.Tensor   # (parts,) int64: a partial's first row in the partial buffers
    part_node: torch.Tensor   # (parts,) int32
    seq_parts: torch.Tensor   # (batch, max_parts) int32: a sequence's partials (-1: none)
    node_meta: torch.Tensor   # (nodes, 4) int32: kv_start, kv_len, seq_start, seq_count
    part_rows: int            # rows of the partial buffers
    max_parts: int
    n_items: int              # programs of the node kernel per KV head


def _plan(tree: PrefixTree, q_tokens: int, group: int, kv_heads: int, block_m: int, block_n: int,
          waves: float = TARGET_WAVES, whole_waves: bool = False) -> _Plan:
    """Row tiles per node, then each node's keys split so that the programs fill the GPU
    about `waves` times (a long prefix under few sequences: many chunks). Each chunk's
    partial output goes through memory in float32, so fewer waves trade idle SMs for less
    of that traffic. whole_waves: every node split evenly under one chunk limit, the one
    that ends the work soonest in whole rounds of `waves` programs an SM (_whole_wave_chunk)."""
    key = (q_tokens, group, kv_heads, block_m, block_n, waves, whole_waves)
    if key in tree._plans:
        return tree._plans[key]
    rows_per_seq = q_tokens * group
    shared = tree.shared_nodes
    tiles = {n: cdiv(tree.seq_count[n] * rows_per_seq, block_m) for n in shared}
    programs = waves * sm_count(tree.device)
    work_total = sum(tiles[n] * tree.kv_len[n] for n in shared) or 1
    limit = None
    if whole_waves:
        tiles_by_len: dict = {}
        for n in shared:
            tiles_by_len[tree.kv_len[n]] = tiles_by_len.get(tree.kv_len[n], 0) + tiles[n] * kv_heads
        limit = _whole_wave_chunk(tiles_by_len, block_n, programs)
    work, part_row0, part_node, seq_parts = [], [], [], [[] for _ in range(tree.n_seqs)]
    row = 0
    for n in shared:
        if limit is not None:
            size = _even_chunk(tree.kv_len[n], limit, block_n)
        else:
            # the node's share of the programs, by its share of the work (tiles x keys), made of
            # key chunks of at least one key block
            share = programs * tiles[n] * tree.kv_len[n] / work_total
            chunks = max(1, min(cdiv(int(share), tiles[n] * kv_heads), cdiv(tree.kv_len[n], block_n)))
            size = cdiv(cdiv(tree.kv_len[n], chunks), block_n) * block_n
        for k0 in range(0, tree.kv_len[n], size):
            part = len(part_row0)
            part_row0.append(row)
            part_node.append(n)
            row += kv_heads * tree.seq_count[n] * rows_per_seq
            for t in range(tiles[n]):
                work.append((n, t * block_m, k0, min(k0 + size, tree.kv_len[n]), part))
            for b in range(tree.seq_start[n], tree.seq_start[n] + tree.seq_count[n]):
                seq_parts[b].append(part)
    max_parts = max((len(p) for p in seq_parts), default=0)
    dev = tree.device
    plan = _Plan(
        work=torch.tensor(work or [(0, 0, 0, 0, 0)], dtype=torch.int32, device=dev),
        part_row0=torch.tensor(part_row0 or [0], dtype=torch.int64, device=dev),
        part_node=torch.tensor(part_node or [0], dtype=torch.int32, device=dev),
        seq_parts=torch.tensor([p + [-1] * (max_parts - len(p)) for p in seq_parts] if max_parts else
                               [[-1]] * tree.n_seqs, dtype=torch.int32, device=dev),
        node_meta=torch.tensor([[tree.kv_start[n], tree.kv_len[n], tree.seq_start[n], tree.seq_count[n]]
                                for n in range(tree.n_nodes)] or [[0, 0, 0, 0]], dtype=torch.int32, device=dev),
        part_rows=max(row, 1), max_parts=max(max_parts, 1), n_items=len(work))
    tree._plans[key] = plan
    return plan


def _even_chunk(length: int, limit: int, block_n: int) -> int:
    """A node's keys in the fewest chunks of at most `limit`, of about equal lengths (multiples of block_n)."""
    chunks = cdiv(length, limit)
    return cdiv(cdiv(length, chunks), block_n) * block_n


def _whole_wave_chunk(tiles_by_len: dict, block_n: int, slots: float) -> int:
    """The chunk limit (a multiple of block_n) whose programs end soonest when `slots` of
    them run at a time: each node (length -> its row tiles over all KV heads) split evenly
    into chunks of at most that many keys, the work counted as whole rounds of programs
    times the longest chunk plus PROGRAM_KEYS; a tie goes to the longer chunks.
    Splitting by a share of the programs instead leaves a last wave part empty (64 tiles
    of 2048 keys on 132 SMs: 3 chunks, 192 programs; here 2 chunks, 128 programs)."""
    longest = max(tiles_by_len, default=block_n)
    best_cost, best = None, block_n
    for limit in range(block_n, cdiv(longest, block_n) * block_n + 1, block_n):
        programs = sum(t * cdiv(n, limit) for n, t in tiles_by_len.items())
        size = max(_even_chunk(n, limit, block_n) for n in tiles_by_len)
        cost = math.ceil(programs / slots) * (size + PROGRAM_KEYS)
        if best_cost is None or cost <= best_cost:
            best_cost, best = cost, limit
    return best


@triton.jit
def _node_kernel(Q, KP, VP, desc_k, desc_v, O_PART, LSE_PART, WORK, NODE_META, PART_ROW0,
                 stride_qb, stride_qt, stride_qh, stride_kp, stride_kh, stride_vp, stride_vh,
                 q_tokens, group, n_kv_heads, scale_log2,
                 HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, USE_TMA: tl.constexpr,
                 POS_SCALE: tl.constexpr = True, PDL: tl.constexpr = False, EARLY_SUFFIX: tl.constexpr = False):
    """One work item: BLOCK_M query rows of the sequences under one node, one KV head, one
    chunk of the node's keys. Rows are (sequence, query token, head of the group); every
    row sees every key of the node (the node lies wholly before the queries). Writes the
    normalized partial output and its base-2 log-sum-exp, float32. PDL: the suffix decode
    launches once every item is past its keys (EARLY_SUFFIX: once every item has started,
    its memory-bound programs then sharing the SMs with this kernel's tensor-core work) and
    attends the suffixes meanwhile."""
    if EARLY_SUFFIX:
        pdl_launch_dependents(PDL)
    item = tl.program_id(0)
    hkv = tl.program_id(1)
    node = tl.load(WORK + item * 5)
    row0 = tl.load(WORK + item * 5 + 1)
    k0 = tl.load(WORK + item * 5 + 2)
    k1 = tl.load(WORK + item * 5 + 3)
    part = tl.load(WORK + item * 5 + 4)
    kv_start = tl.load(NODE_META + node * 4)
    seq0 = tl.load(NODE_META + node * 4 + 2)
    n_rows = tl.load(NODE_META + node * 4 + 3) * q_tokens * group
    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    seq = seq0 + rows // (q_tokens * group)
    tok = (rows // group) % q_tokens
    head = hkv * group + rows % group
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + seq[:, None].to(tl.int64) * stride_qb + tok[:, None] * stride_qt + head[:, None] * stride_qh
                + d[None, :], mask=row_ok[:, None], other=0.0)
    k_base = KP + kv_start.to(tl.int64) * stride_kp + hkv * stride_kh
    v_base = VP + kv_start.to(tl.int64) * stride_vp + hkv * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # every row sees every key of its node: whole key blocks need no mask, the chunk's tail
    # does (through TMA it reads on into the pool; its scores are masked, its values zeroed)
    full_end = k0 + (k1 - k0) // BLOCK_N * BLOCK_N
    for n0 in range(k0, full_end, BLOCK_N):
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, k_base, v_base, desc_k, desc_v, kv_start, hkv * HEAD_DIM,
                                      rows, n0, k1, stride_kp, stride_vp, d, scale_log2, BLOCK_N, False, False,
                                      USE_TMA, POS_SCALE, rows, False)
    for n0 in range(full_end, k1, BLOCK_N):
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, k_base, v_base, desc_k, desc_v, kv_start, hkv * HEAD_DIM,
                                      rows, n0, k1, stride_kp, stride_vp, d, scale_log2, BLOCK_N, False, True,
                                      USE_TMA, POS_SCALE, rows, False)
    if not EARLY_SUFFIX:
        pdl_launch_dependents(PDL)
    out = acc / l_i[:, None]
    lse2 = tl.where(m_i == float("inf"), m_i, m_i + tl.math.log2(l_i))
    dst = tl.load(PART_ROW0 + part) + hkv * n_rows + rows
    tl.store(O_PART + dst[:, None] * HEAD_DIM + d[None, :], out, mask=row_ok[:, None])
    tl.store(LSE_PART + dst, lse2, mask=row_ok)


@triton.jit
def _merge_kernel(O_SUF, LSE_SUF, O_PART, LSE_PART, SEQ_PARTS, PART_ROW0, PART_NODE, NODE_META, O, LSE,
                  stride_sb, stride_st, stride_sh, stride_lsb, stride_lsh, stride_ob, stride_ot, stride_oh,
                  stride_lb, stride_lh, q_tokens, group, n_kv_heads, max_parts,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, WRITE_LSE: tl.constexpr):
    """The rows of one (sequence, KV head): its suffix's attention merged with the partials
    of its path's nodes by their log-sum-exp (when the suffix's decode was split along its
    keys; otherwise the decode kernel merged them itself)."""
    b = tl.program_id(0) // n_kv_heads
    hkv = tl.program_id(0) % n_kv_heads
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    n_rows = q_tokens * group
    row_ok = rows < n_rows
    tok = rows // group
    head = hkv * group + rows % group
    d = tl.arange(0, HEAD_DIM)
    # the suffix: gqa_decode's out and natural-log lse (zeros and -inf where it saw no key)
    o_s = tl.load(O_SUF + b.to(tl.int64) * stride_sb + tok[:, None] * stride_st + head[:, None] * stride_sh
                  + d[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
    lse_s = tl.load(LSE_SUF + b * stride_lsb + head * stride_lsh + tok, mask=row_ok, other=float("-inf"))
    out, lse2 = merge_extra_parts(o_s, lse_s * 1.4426950408889634, b, hkv, rows, row_ok, n_rows, d, O_PART,
                                  LSE_PART, SEQ_PARTS, PART_ROW0, PART_NODE, NODE_META, max_parts)
    tl.store(O + b.to(tl.int64) * stride_ob + tok[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None])
    if WRITE_LSE:
        tl.store(LSE + b * stride_lb + head * stride_lh + tok, lse2 * 0.6931471805599453, mask=row_ok)


def _default_config(head_dim: int, rows: int, kv: int) -> dict:
    """Up to 64 rows a tile (fewer when no node has that many), 64-key blocks, 4 warps,
    pointer loads (tma: the keys through TMA descriptors, Hopper and newer), long nodes split
    into about TARGET_WAVES programs an SM."""
    return dict(BLOCK_M=max(16, min(64, rows)), BLOCK_N=PREFIX_BLOCK_N, num_warps=4, num_stages=2, tma=False,
                waves=TARGET_WAVES, whole_waves=False, early_suffix=False)


def _candidates(head_dim: int, rows: int, kv: int) -> list[dict]:
    tiles = [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st, tma=tma)
             for bm in (16, 32, 64, 128) if bm <= max(16, rows)
             for bn in (32, 64, 128) for w in (4, 8) for st in (2, 3) for tma in (False, True)
             if not (bm == 128 and bn == 128 and st > 2)]
    splits = [dict(BLOCK_M=bm, BLOCK_N=64, num_warps=w, num_stages=3, tma=tma, waves=wv)
              for bm, w in ((64, 4), (128, 8)) if bm <= max(16, rows) for tma in (False, True) for wv in (1, 4)]
    whole = [dict(BLOCK_M=bm, BLOCK_N=64, num_warps=w, num_stages=3, tma=tma, waves=wv, whole_waves=True)
             for bm, w in ((64, 4), (128, 8)) if bm <= max(16, rows) for tma in (False, True) for wv in (1, 2)]
    early = [dict(c, early_suffix=True) for c in splits + whole]  # the suffix decode beside the node kernel
    return tiles + splits + whole + early


def _check_config(cfg: dict) -> None:
    check_tile_config(cfg)
    check_positive_option(cfg, "waves")
    check_bool("whole_waves", cfg["whole_waves"])
    check_bool("early_suffix", cfg["early_suffix"])


def _pool_tma_ok(t: torch.Tensor) -> bool:
    """Whether a pool reads as one (pool_tokens, kv_heads * head_dim) matrix through TMA."""
    return t.stride(1) == t.shape[2] and tma_ok(t, need_hopper=False)


LAUNCH = LaunchSpace("shared_prefix", _default_config, _candidates, _check_config)


def _check(q, k_pool, v_pool, tree, k_suffix, v_suffix, suffix_lens):
    if not isinstance(tree, PrefixTree):
        raise TypeError(f"tree must be a PrefixTree (kernels.attention.prefix_tree), got {type(tree).__name__}")
    _check_decode_inputs(q, k_suffix, v_suffix, suffix_lens, names=("k_suffix", "v_suffix", "suffix_lens"))
    for name, t in (("k_pool", k_pool), ("v_pool", v_pool)):
        check_tensor(name, t, dtypes=DTYPES)
        if t.dim() != 3:
            raise ValueError(f"{name} must be 3-D (pool_tokens, kv_heads, head_dim); got shape {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}; it must match q's {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, q on {q.device}")
        if t.shape[1:] != k_suffix.shape[2:]:
            raise ValueError(f"{name} holds (kv_heads, head_dim) {tuple(t.shape[1:])}; the suffixes "
                             f"{tuple(k_suffix.shape[2:])}")
        if t.stride(2) != 1:
            raise ValueError(f"{name} must have unit stride along head_dim (got strides {t.stride()})")
        if t.shape[0] < tree.pool_tokens:
            raise ValueError(f"the tree's nodes reach pool row {tree.pool_tokens}; {name} has {t.shape[0]} rows")
    if q.shape[0] != tree.n_seqs:
        raise ValueError(f"q has {q.shape[0]} sequences; the tree has {tree.n_seqs}")
    if tree.device != q.device:
        raise ValueError(f"the tree's metadata is on {tree.device}, q on {q.device}: build it with device={q.device}")
    T, capacity = q.shape[1], k_suffix.shape[1]
    if suffix_lens is None:
        bad = capacity < T
    elif isinstance(suffix_lens, int):
        bad = not T <= suffix_lens <= capacity
    else:  # one sync, as gqa_decode's own check of the lengths; none while a graph is captured
        capturing = q.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        bad = not capturing and q.shape[0] > 0 and bool(((suffix_lens < T) | (suffix_lens > capacity)).any())
    if bad:
        got = suffix_lens.tolist() if isinstance(suffix_lens, torch.Tensor) else (
            capacity if suffix_lens is None else suffix_lens)
        raise ValueError(f"suffix_lens must lie in [q_tokens={T}, capacity={capacity}] (the new tokens are in the "
                         f"suffix); got {got}")


def shared_prefix_decode(q, k_pool, v_pool, tree: PrefixTree, k_suffix, v_suffix, suffix_lens=None, *,
                         scale: float | None = None, return_lse: bool = False, config: dict | None = None):
    """Attention of each sequence's q_tokens queries over its path's nodes and its suffix
    (see the module doc). Returns out (batch, q_tokens, q_heads, head_dim) in q's dtype,
    or (out, lse (batch, q_heads, q_tokens), natural log, float32).
    config: the node kernel's launch options (BLOCK_M, BLOCK_N, num_warps, num_stages, tma,
    waves, whole_waves, early_suffix; a table's tma falls back to pointer loads where the
    pool cannot be read through TMA)."""
    _check(q, k_pool, v_pool, tree, k_suffix, v_suffix, suffix_lens)
    if scale is not None:
        check_number("scale", scale)
    check_bool("return_lse", return_lse)
    B, T, Hq, D = q.shape
    Hkv = k_suffix.shape[2]
    group = Hq // Hkv
    rows_per_seq = T * group
    shared = tree.shared_nodes
    if B == 0 or T == 0 or Hq == 0 or not shared:
        out, lse = gqa_decode(q, k_suffix, v_suffix, suffix_lens, scale=scale, return_lse=True)
        return (out, lse) if return_lse else out
    most_rows = max(tree.seq_count[n] for n in shared) * rows_per_seq
    key = dict(head_dim=D, rows=pow2_bucket(most_rows), kv=pow2_bucket(max(tree.kv_len[n] for n in shared)))
    cfg = LAUNCH.choose(q.device, key, config)
    plan = _plan(tree, T, group, Hkv, cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["waves"], cfg["whole_waves"])
    tma = cfg["tma"] and _pool_tma_ok(k_pool) and _pool_tma_ok(v_pool)
    if cfg["tma"] and not tma and config and config.get("tma"):
        raise ValueError("tma=True needs k_pool and v_pool each readable as one (pool_tokens, kv_heads * head_dim) "
                         "matrix: heads adjacent, 16-byte aligned base and token stride")
    desc_k, desc_v = ((TensorDescriptor(t, [t.shape[0], Hkv * D], [t.stride(0), 1], [cfg["BLOCK_N"], D])
                       for t in (k_pool, v_pool)) if tma else (k_pool, v_pool))
    o_part = torch.empty(plan.part_rows, D, dtype=torch.float32, device=q.device)
    lse_part = torch.empty(plan.part_rows, dtype=torch.float32, device=q.device)
    scale_log2 = (D ** -0.5 if scale is None else float(scale)) / LN2
    if isinstance(suffix_lens, torch.Tensor):  # as the decode reads them, made before the node kernel (early_extra)
        suffix_lens = suffix_lens.to(q.device, torch.int32).contiguous()
    _node_kernel[(plan.n_items, Hkv)](
        q, k_pool, v_pool, desc_k, desc_v, o_part, lse_part, plan.work, plan.node_meta, plan.part_row0,
        q.stride(0), q.stride(1), q.stride(2), k_pool.stride(0), k_pool.stride(1), v_pool.stride(0), v_pool.stride(1),
        T, group, Hkv, scale_log2,
        HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], USE_TMA=tma, POS_SCALE=scale_log2 > 0,
        EARLY_SUFFIX=cfg["early_suffix"], num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"],
        **pdl_options(q.device, launch_early=False))  # it starts after all earlier work: the decode relies on it
    # the suffixes through the split-KV decode kernel, which merges the node partials into each
    # row before its store when it does not split the suffix (the usual case: many sequences)
    extra = (o_part, lse_part, plan.seq_parts, plan.part_row0, plan.part_node, plan.node_meta, plan.max_parts)
    o_suf, lse_suf, merged = decode_launch(q, k_suffix, v_suffix, suffix_lens, scale, True, True, None, None, False,
                                           None, None, None, 1e-6, None, False, extra_parts=extra, early_extra=True)
    if merged:
        return (o_suf, lse_suf) if return_lse else o_suf
    out = torch.empty_like(q)
    lse = torch.empty(B, Hq, T, dtype=torch.float32, device=q.device) if return_lse else None
    stride_lb, stride_lh = (lse.stride(0), lse.stride(1)) if lse is not None else (0, 0)
    block_m = max(16, min(MERGE_BLOCK_M, next_power_of_2(rows_per_seq)))
    _merge_kernel[(B * Hkv, cdiv(rows_per_seq, block_m))](
        o_suf, lse_suf, o_part, lse_part, plan.seq_parts, plan.part_row0, plan.part_node, plan.node_meta, out,
        lse if lse is not None else out,
        o_suf.stride(0), o_suf.stride(1), o_suf.stride(2), lse_suf.stride(0), lse_suf.stride(1),
        out.stride(0), out.stride(1), out.stride(2), stride_lb, stride_lh, T, group, Hkv, plan.max_parts,
        HEAD_DIM=D, BLOCK_M=block_m, WRITE_LSE=return_lse, num_warps=4)
    return (out, lse) if return_lse else out
