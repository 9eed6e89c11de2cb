"""kernels/attention/shared_prefix.py against shared_prefix_reference (plain attention over
per-sequence copies of [path nodes | suffix], float64) by the tolerance rule
(tests/helpers/tolerance.py). Hypothesis draws trees (depth, fan-out, node lengths, empty
nodes, sequences with no shared node), query tokens, GQA ratios, head dims and dtypes."""
import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernels.attention import prefix_tree, shared_prefix_decode, shared_prefix_reference
from kernels.attention.shared_prefix import (PROGRAM_KEYS, PrefixTree, _even_chunk, _plan, _whole_wave_chunk,
                                            unshared_tree)
from kernels.launch import sm_count
from kernels.platform import PDL_ENV
from tests.helpers.tolerance import HALF_DTYPES, assert_within_rule

pytestmark = pytest.mark.correctness


def _tree_from_draw(fanouts, lengths, loners, device):
    """A tree of len(fanouts) levels: each node of level i has fanouts[i] children; the
    leaves each carry one sequence; `loners` sequences with no shared node come last."""
    parents, kv_len, level, seq_node = [-1], [lengths[0]], [0], []
    for depth, fan in enumerate(fanouts[1:], start=1):
        for p in [n for n in range(len(parents)) if level[n] == depth - 1]:
            for _ in range(fan):
                parents.append(p)
                kv_len.append(lengths[len(parents) % len(lengths)])
                level.append(depth)
    deepest = max(level)
    # depth-first order of the leaves, so the sequences under every node are adjacent
    order = []

    def visit(n):
        kids = [c for c in range(len(parents)) if parents[c] == n]
        if not kids:
            order.append(n)
        for c in kids:
            visit(c)
    visit(0)
    seq_node = [n for n in order for _ in range(fanouts[0])] + [-1] * loners
    assert all(level[n] == deepest for n in order)
    return prefix_tree(parents, kv_len, seq_node, device=device)


def _inputs(tree, t, hq, hkv, d, dtype, device, seed, capacity=40):
    g = torch.Generator().manual_seed(seed)
    b = tree.n_seqs
    q = torch.randn(b, t, hq, d, generator=g).to(device, dtype)
    kp = torch.randn(max(tree.pool_tokens, 1), hkv, d, generator=g).to(device, dtype)
    vp = torch.randn(max(tree.pool_tokens, 1), hkv, d, generator=g).to(device, dtype)
    ks = torch.randn(b, capacity, hkv, d, generator=g).to(device, dtype)
    vs = torch.randn(b, capacity, hkv, d, generator=g).to(device, dtype)
    lens = torch.randint(t, capacity + 1, (b,), generator=g).to(device)
    return q, kp, vp, ks, vs, lens


def _check(tree, q, kp, vp, ks, vs, lens, dt, k=2, **kw):
    out, lse = shared_prefix_decode(q, kp, vp, tree, ks, vs, lens, return_lse=True, **kw)
    exact, lse_exact = shared_prefix_reference(q, kp, vp, tree, ks, vs, lens, compute_dtype=torch.float64,
                                               return_lse=True)
    lowp = shared_prefix_reference(q, kp, vp, tree, ks, vs, lens, compute_dtype=dt)
    assert_within_rule(out, exact, lowp, dt, k=k, what="out")
    torch.testing.assert_close(lse.double().cpu(), lse_exact.cpu(), rtol=1e-4, atol=1e-4)


@settings(deadline=None)
@given(fanouts=st.lists(st.integers(1, 3), min_size=1, max_size=3), lengths=st.lists(st.integers(0, 90), min_size=1,
       max_size=4), loners=st.integers(0, 2), t=st.integers(1, 4), kv=st.sampled_from([(1, 1), (4, 1), (8, 1), (6, 2)]),
       d=st.sampled_from([64, 128]), dtype=st.sampled_from(list(HALF_DTYPES)), tma=st.booleans(),
       seed=st.integers(0, 2 ** 16))
@example(fanouts=[2, 3], lengths=[70, 33], loners=1, t=1, kv=(8, 1), d=128, dtype="bf16", tma=True, seed=0)  # Hydragen's heads
@example(fanouts=[1, 2, 2], lengths=[5, 0, 64], loners=0, t=3, kv=(4, 1), d=64, dtype="fp16", tma=False, seed=1)  # an empty node
def test_shared_prefix_matches_reference(device, fanouts, lengths, loners, t, kv, d, dtype, tma, seed):
    hq, hkv = kv
    dt = HALF_DTYPES[dtype]
    tree = _tree_from_draw(fanouts, lengths, loners, device)
    _check(tree, *_inputs(tree, t, hq, hkv, d, dt, device, seed), dt, config=dict(tma=tma))


@pytest.mark.parametrize("scale", [-1.0, 0.0, 0.3])
def test_any_scale_matches_reference(device, scale):
    """Whole key blocks take max(q k) * scale as the scaled maximum, which holds for a
    positive scale only: at -1 it is the minimum, and exp2 of the scores above it overflows
    half precision. 150 keys in chunks of whole 64-key blocks and a masked tail."""
    dt = torch.float16
    tree = prefix_tree([-1], [150], [0, 0, 0], device=device)
    q, kp, vp, ks, vs, lens = _inputs(tree, 1, 4, 1, 64, dt, device, 11)
    out = shared_prefix_decode(q, kp, vp, tree, ks, vs, lens, scale=scale)
    exact = shared_prefix_reference(q, kp, vp, tree, ks, vs, lens, scale=scale, compute_dtype=torch.float64)
    lowp = shared_prefix_reference(q, kp, vp, tree, ks, vs, lens, scale=scale, compute_dtype=dt)
    assert_within_rule(out, exact, lowp, dt, what="out")


def test_natural_log_lse_of_a_long_prefix_and_a_short_suffix(device):
    """The merge's log-sum-exp is natural-log at the API (peers mixing base 2 and e have
    shipped a 12% error): a 3072-token prefix under 4 sequences, 64-token suffixes, against
    dense attention over the concatenation."""
    tree = prefix_tree([-1], [3072], [0, 0, 0, 0], device=device)
    q, kp, vp, ks, vs, _ = _inputs(tree, 1, 8, 1, 128, torch.bfloat16, device, 3, capacity=64)
    _check(tree, q, kp, vp, ks, vs, 64, torch.bfloat16)


def test_speculative_query_tokens_see_the_prefix_and_their_causal_suffix(device):
    """32 query tokens a sequence (speculative decoding): every token sees every prefix key,
    and its suffix up to itself."""
    tree = prefix_tree([-1, 0], [50, 20], [1, 1], device=device)
    q, kp, vp, ks, vs, _ = _inputs(tree, 32, 2, 1, 64, torch.float16, device, 4, capacity=48)
    _check(tree, q, kp, vp, ks, vs, torch.tensor([32, 48], device=device), torch.float16)


def test_the_unshared_tree_reads_the_same_keys_one_sequence_at_a_time(device):
    tree = prefix_tree([-1, 0, 0], [20, 6, 9], [1, 1, 2, 2, 2], device=device)
    alone = unshared_tree(tree)
    assert alone.n_nodes == 10 and all(c == 1 for c in alone.seq_count)
    q, kp, vp, ks, vs, lens = _inputs(tree, 2, 4, 2, 64, torch.float16, device, 8)
    shared = shared_prefix_decode(q, kp, vp, tree, ks, vs, lens)
    torch.testing.assert_close(shared_prefix_decode(q, kp, vp, alone, ks, vs, lens), shared, rtol=0, atol=2e-3)
    _check(alone, q, kp, vp, ks, vs, lens, torch.float16)


def test_the_reference_a_few_sequences_at_a_time_is_the_same_attention(device):
    """seqs_at_once bounds the reference's memory (a perf case checks 32 sequences of an 8K
    prefix in each of the tuner's processes at once); the attention is the same."""
    tree = _tree_from_draw([2, 3], [30, 7], 1, device)  # 7 sequences: chunks of 3 leave one over
    q, kp, vp, ks, vs, lens = _inputs(tree, 2, 4, 2, 64, torch.float16, device, 5)
    f64 = dict(compute_dtype=torch.float64, return_lse=True)
    whole = shared_prefix_reference(q, kp, vp, tree, ks, vs, lens, **f64)
    for at_once in (1, 3, 7, 50):
        parts = shared_prefix_reference(q, kp, vp, tree, ks, vs, lens, seqs_at_once=at_once, **f64)
        for got, want in zip(parts, whole):  # each chunk pads to its own longest: sums in another order
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="seqs_at_once must be at least 1, got 0"):
        shared_prefix_reference(q, kp, vp, tree, ks, vs, lens, seqs_at_once=0)


@pytest.mark.parametrize("splits", [1, 3])
def test_the_merge_in_the_decode_kernel_and_the_merge_kernel_agree(device, monkeypatch, splits):
    """The suffix's decode merges the node partials into each row when it does not split
    its keys; split, it leaves them to the merge kernel. Both against the reference."""
    from kernels.attention import shared_prefix as module

    seen = []

    def launch(*args, **kw):
        args = list(args)
        args[8] = splits  # num_splits
        got = real(*args, **kw)
        seen.append(got[2])
        return got
    real = module.decode_launch
    monkeypatch.setattr(module, "decode_launch", launch)
    tree = prefix_tree([-1, 0, 0], [70, 30, 12], [1, 1, 2], device=device)
    q, kp, vp, ks, vs, _ = _inputs(tree, 2, 4, 1, 64, torch.bfloat16, device, 9, capacity=300)
    _check(tree, q, kp, vp, ks, vs, torch.tensor([300, 150, 2], device=device), torch.bfloat16)
    assert seen == [splits == 1]  # merged in the decode kernel exactly when it did not split


def test_long_nodes_are_split_and_every_key_is_covered(device):
    """The plan splits a long node under few sequences into key chunks (one partial each)
    and covers each node's rows and keys exactly once per KV head."""
    tree = prefix_tree([-1, 0, 0], [4000, 100, 0], [1, 1, 2], device=device)
    plan = _plan(tree, q_tokens=1, group=4, kv_heads=2, block_m=16, block_n=64)
    work = plan.work.cpu().tolist()
    root = sorted((k0, k1) for n, r0, k0, k1, p in work if n == 0)
    assert len(root) > 1 and root[0][0] == 0 and root[-1][1] == 4000
    assert all(a[1] == b[0] for a, b in zip(root, root[1:]))  # chunks tile the node's keys
    assert not [w for w in work if w[0] == 2]  # an empty node: no work
    node1 = {p for n, r0, k0, k1, p in work if n == 1}
    parts = plan.seq_parts.cpu().tolist()
    assert len([p for p in parts[0] if p >= 0]) == len(root) + len(node1)  # the root's chunks and node 1's
    assert len([p for p in parts[2] if p >= 0]) == len(root)               # node 2 is empty


def test_waves_set_how_finely_long_nodes_split(device):
    """The launch option `waves`: more programs an SM, more key chunks (and float32 partials);
    every setting computes the same attention."""
    # a node long enough that 4 waves of programs (4 SMs on the CPU lane) still find a key block each
    long_node = prefix_tree([-1], [64 * 4 * sm_count(torch.device(device)) + 64], [0, 0], device=device)
    chunks = [len({(k0, k1) for n, r0, k0, k1, p in _plan(long_node, 1, 4, 1, 16, 64, waves=w).work.cpu().tolist()})
              for w in (1, 2, 4)]
    assert chunks[0] < chunks[1] < chunks[2]
    tree = prefix_tree([-1], [4000], [0, 0], device=device)
    q, kp, vp, ks, vs, lens = _inputs(tree, 1, 4, 1, 64, torch.bfloat16, device, 12)
    for waves in (1, 4):
        _check(tree, q, kp, vp, ks, vs, lens, torch.bfloat16, config=dict(waves=waves))
    for bad in (0, -1, True, "2"):
        with pytest.raises(ValueError, match="waves must be a positive finite number"):
            shared_prefix_decode(q, kp, vp, tree, ks, vs, lens, config=dict(waves=bad))


def test_whole_waves_pick_the_chunk_that_fills_the_last_wave():
    """64 row tiles of 2048 keys on 132 SMs: two chunks (128 programs, one wave), where a
    share of the programs asks for three (192 programs: a second wave under half full); 128
    tiles of 8192 keys: one chunk, since two would take two waves of half the keys."""
    assert _even_chunk(2048, _whole_wave_chunk({2048: 64}, 64, 132), 64) == 1024
    assert _even_chunk(8192, _whole_wave_chunk({8192: 128}, 64, 132), 64) == 8192
    assert _even_chunk(40, _whole_wave_chunk({40: 1}, 64, 4), 64) == 64  # shorter than a block: one block


@settings(max_examples=80, deadline=None)
@given(tiles=st.integers(1, 600), length=st.integers(1, 12000), slots=st.integers(1, 300))
def test_whole_wave_chunk_ends_no_later_than_any_chunk_count(tiles, length, slots):
    """One node: its even split by the chosen limit takes no more rounds x (longest chunk +
    a program's price) than splitting it into any number of chunks."""
    def cost(chunks):
        size = math.ceil(math.ceil(length / chunks) / 64) * 64
        return math.ceil(tiles * chunks / slots) * (size + PROGRAM_KEYS)
    limit = _whole_wave_chunk({length: tiles}, 64, slots)
    assert limit % 64 == 0 and limit >= 64
    assert cost(math.ceil(length / limit)) == min(cost(k) for k in range(1, math.ceil(length / 64) + 1))


def test_whole_waves_cover_every_key_once_and_compute_the_same(device):
    tree = prefix_tree([-1, 0, 0], [4000, 100, 0], [1, 1, 2], device=device)
    plan = _plan(tree, q_tokens=1, group=4, kv_heads=2, block_m=16, block_n=64, whole_waves=True)
    work = plan.work.cpu().tolist()
    for node, length in ((0, 4000), (1, 100)):
        for r0 in {w[1] for w in work if w[0] == node}:
            spans = sorted((k0, k1) for n, r, k0, k1, p in work if n == node and r == r0)
            assert spans[0][0] == 0 and spans[-1][1] == length
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    q, kp, vp, ks, vs, lens = _inputs(tree, 1, 4, 2, 64, torch.bfloat16, device, 13)
    for waves in (1, 2):
        _check(tree, q, kp, vp, ks, vs, lens, torch.bfloat16, config=dict(whole_waves=True, waves=waves))
    with pytest.raises(TypeError, match="whole_waves must be a bool"):
        shared_prefix_decode(q, kp, vp, tree, ks, vs, lens, config=dict(whole_waves=1))


def test_nan_in_a_node_reaches_only_the_sequences_under_it(device):
    tree = prefix_tree([-1, 0, 0], [30, 10, 10], [1, 1, 2, 2], device=device)
    q, kp, vp, ks, vs, lens = _inputs(tree, 1, 4, 2, 64, torch.bfloat16, device, 5)
    kp[tree.kv_start[2] + 3, 1, 7] = float("nan")  # node 2, KV head 1
    vp[tree.kv_start[2] + 3, 0, 7] = float("nan")  # and its value for KV head 0
    for tma in (False, True):  # through TMA a block of node 1 reads on into node 2's rows: masked
        out = shared_prefix_decode(q, kp, vp, tree, ks, vs, lens, config=dict(tma=tma, BLOCK_N=64)).float().cpu()
        under = out[2:]                                             # the sequences under node 2
        assert torch.isnan(under[:, :, 2:]).all(), tma              # KV head 1's query heads: a NaN score
        assert torch.isnan(under[:, :, :2, 7]).all(), tma           # KV head 0's: a NaN value, in its column
        assert torch.isnan(under[:, :, :2]).sum() == under[:, :, :2, 7].numel(), tma
        assert not torch.isnan(out[:2]).any(), tma


def test_bad_input_is_named(device):
    with pytest.raises(ValueError, match=r"node 1's parent 2 must be -1 \(a root\) or a node before it"):
        prefix_tree([-1, 2, 0], [4, 4, 4], [1], device=device)
    with pytest.raises(ValueError, match="sequence 1's node 5 is not a node of the tree"):
        prefix_tree([-1], [4], [0, 5], device=device)
    with pytest.raises(ValueError, match=r"the sequences under node 1 \(\[0, 2\]\) are not adjacent"):
        prefix_tree([-1, 0, 0], [4, 4, 4], [1, 2, 1], device=device)
    with pytest.raises(ValueError, match="node 0 has a negative length"):
        prefix_tree([-1], [-1], [0], device=device)
    tree = prefix_tree([-1, 0], [8, 4], [1, 1], device=device)
    q, kp, vp, ks, vs, lens = _inputs(tree, 1, 4, 2, 64, torch.float16, device, 6)
    with pytest.raises(ValueError, match="the tree's nodes reach pool row 12; k_pool has 10 rows"):
        shared_prefix_decode(q, kp[:10], vp, tree, ks, vs, lens)
    with pytest.raises(ValueError, match="q has 1 sequences; the tree has 2"):
        shared_prefix_decode(q[:1], kp, vp, tree, ks[:1], vs[:1], lens[:1])
    with pytest.raises(TypeError, match="k_pool has dtype torch.bfloat16; it must match q's torch.float16"):
        shared_prefix_decode(q, kp.bfloat16(), vp, tree, ks, vs, lens)
    with pytest.raises(ValueError, match=r"k_pool holds \(kv_heads, head_dim\) \(1, 64\)"):
        shared_prefix_decode(q, kp[:, :1], vp[:, :1], tree, ks, vs, lens)
    with pytest.raises(ValueError, match="not a multiple of 3 KV heads"):
        shared_prefix_decode(q, kp, vp, tree, torch.cat([ks, ks[:, :, :1]], 2), torch.cat([vs, vs[:, :, :1]], 2), lens)
    with pytest.raises(ValueError, match=r"suffix_lens must lie in \[q_tokens=2, capacity=40\]"):
        shared_prefix_decode(torch.cat([q, q], 1), kp, vp, tree, ks, vs, torch.tensor([1, 5], device=device))
    with pytest.raises(TypeError, match="tree must be a PrefixTree"):
        shared_prefix_decode(q, kp, vp, {"parents": [-1]}, ks, vs, lens)
    assert isinstance(tree, PrefixTree)


@pytest.mark.gpu
def test_a_decode_step_replays_in_a_cuda_graph():
    """All the tree's metadata is on the device: a captured step replays to the eager result."""
    tree = prefix_tree([-1, 0, 0], [300, 64, 64], [1, 1, 2, 2], device="cuda")
    q, kp, vp, ks, vs, lens = _inputs(tree, 1, 8, 1, 128, torch.bfloat16, "cuda", 7)
    eager = shared_prefix_decode(q, kp, vp, tree, ks, vs, lens)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = shared_prefix_decode(q, kp, vp, tree, ks, vs, lens)
    q.normal_()
    graph.replay()
    torch.testing.assert_close(captured, shared_prefix_decode(q, kp, vp, tree, ks, vs, lens), rtol=0, atol=0)
    assert not torch.equal(captured, eager)


@pytest.mark.gpu
@pytest.mark.parametrize("early_suffix", [False, True])
def test_the_suffix_decode_started_early_by_pdl_still_merges_finished_partials(monkeypatch, early_suffix):
    """With PDL the suffix decode launches while the node kernel stores its partials
    (early_suffix: as soon as every node program has started), reads its suffix, and waits
    only before the merge: every step, after the inputs were rewritten by the kernels before
    it, equals the call without PDL bit for bit (the same kernels and launches, the decode
    only starting later)."""
    tree = prefix_tree([-1], [4096], [0] * 512, device="cuda")  # a long node kernel, short suffixes
    q, kp, vp, ks, vs, lens = _inputs(tree, 1, 8, 1, 128, torch.bfloat16, "cuda", 8, capacity=16)
    config = dict(early_suffix=early_suffix)
    for step in range(8):
        q.normal_()
        ks.normal_()
        (kp if step % 2 else vp).normal_()
        step_lens = lens if step % 2 else lens.to(torch.int32)  # cast by the call, or read as given
        monkeypatch.setenv(PDL_ENV, "1")
        early = shared_prefix_decode(q, kp, vp, tree, ks, vs, step_lens, config=config)
        monkeypatch.setenv(PDL_ENV, "0")
        late = shared_prefix_decode(q, kp, vp, tree, ks, vs, step_lens, config=config)
        torch.testing.assert_close(early, late, rtol=0, atol=0)


def test_early_suffix_is_a_bool_and_computes_the_same(device):
    tree = prefix_tree([-1, 0], [300, 70], [0, 1, 1], device=device)
    q, kp, vp, ks, vs, lens = _inputs(tree, 1, 4, 2, 64, torch.bfloat16, device, 21)
    _check(tree, q, kp, vp, ks, vs, lens, torch.bfloat16, config=dict(early_suffix=True))
    with pytest.raises(TypeError, match="early_suffix must be a bool"):
        shared_prefix_decode(q, kp, vp, tree, ks, vs, lens, config=dict(early_suffix=1))


def test_the_suffix_decode_attends_early_only_on_lengths_made_before_the_node_kernel(device, monkeypatch):
    """The decode may read its suffix before waiting (PDL) only if no kernel came between
    the node kernel and it: lengths given as int64 are cast before the node kernel, so the
    decode reads them as given; a cast inside decode_launch would come after it."""
    import kernels.attention.decode as decode

    launches = []

    class Recorder:
        def __getitem__(self, grid):
            return lambda *args, **kw: launches.append(kw.get("EARLY"))

    tree = prefix_tree([-1], [100], [0, 0, 0], device=device)
    q, kp, vp, ks, vs, lens = _inputs(tree, 1, 4, 1, 64, torch.float16, device, 3)
    monkeypatch.setattr(decode, "_decode_kernel", Recorder())
    shared_prefix_decode(q, kp, vp, tree, ks, vs, lens)  # int64 lengths
    shared_prefix_decode(q, kp, vp, tree, ks, vs, lens.to(torch.int32))
    extra = (q, q, q, q, q, q, 0)  # only handed on to the (recorded) launch
    decode.decode_launch(q, ks, vs, lens, None, True, True, None, 1, False, None, None, None, 1e-6, None, False,
                         extra_parts=extra, early_extra=True)  # cast here, after whatever came before
    decode.decode_launch(q, ks, vs, lens.to(torch.int32), None, True, True, None, 1, False, None, None, None, 1e-6,
                         None, False, extra_parts=extra, early_extra=True)
    assert launches == [True, True, False, True]


def test_zero_query_heads_give_an_empty_result(device):
    """No query heads: an empty result, as gqa_decode gives (the plan divided by zero)."""
    tree = prefix_tree([-1, 0], [8, 4], [1, 1], device=device)
    g = torch.Generator().manual_seed(0)
    pool = [torch.randn(12, 2, 64, generator=g).half().to(device) for _ in range(2)]
    suffix = [torch.randn(2, 40, 2, 64, generator=g).half().to(device) for _ in range(2)]
    q = torch.empty(2, 1, 0, 64, dtype=torch.float16, device=device)
    out, lse = shared_prefix_decode(q, *pool, tree, *suffix, torch.tensor([5, 7], device=device), return_lse=True)
    assert out.shape == (2, 1, 0, 64) and lse.shape == (2, 0, 1)
