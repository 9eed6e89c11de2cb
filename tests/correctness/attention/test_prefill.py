"""kernels/attention/prefill.py against the float64 reference (gqa_attention_reference) by
the tolerance rule (tests/helpers/tolerance.py): at most twice the error of the same
attention computed in the input dtype, plus one rounding of the output. Hypothesis draws
batch, lengths (queries the last T of each sequence's keys, per-sequence lengths, shorter
than T too), heads (any GQA ratio), head dim, dtype, causal or not."""
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernels.attention import gqa_attention_reference, prefill_attention
from kernels.attention.cost import prefill_attention_cost
from tests.helpers.tolerance import HALF_DTYPES, assert_within_rule

pytestmark = pytest.mark.correctness


def _inputs(b, t, s, hq, hkv, d, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, hq, d, generator=g).to(device, dtype)
    k = torch.randn(b, s, hkv, d, generator=g).to(device, dtype)
    v = torch.randn(b, s, hkv, d, generator=g).to(device, dtype)
    return q, k, v


@settings(deadline=None)
@given(b=st.integers(1, 2), t=st.integers(1, 80), extra=st.integers(0, 70),
       kv=st.sampled_from([(1, 1), (4, 1), (3, 1), (6, 2), (8, 2)]),
       d=st.sampled_from([64, 128]), dtype=st.sampled_from(list(HALF_DTYPES)), causal=st.booleans(),
       per_seq=st.booleans(), tma=st.booleans(), halves=st.sampled_from([0, 32, 128]), pack=st.sampled_from([1, 2, 4]),
       seed=st.integers(0, 2 ** 16))
@example(b=1, t=70, extra=0, kv=(4, 1), d=64, dtype="fp16", causal=True, per_seq=False, tma=False, halves=0, pack=1,
         seed=0)  # from scratch, two row blocks
@example(b=2, t=40, extra=33, kv=(3, 1), d=128, dtype="bf16", causal=True, per_seq=True, tma=True, halves=0, pack=1,
         seed=1)  # a chunk after a prefix
@example(b=1, t=1, extra=0, kv=(1, 1), d=64, dtype="fp16", causal=True, per_seq=False, tma=False, halves=0, pack=1,
         seed=2)  # one token
@example(b=2, t=80, extra=20, kv=(4, 1), d=128, dtype="bf16", causal=True, per_seq=True, tma=True, halves=128, pack=1,
         seed=3)
@example(b=2, t=70, extra=9, kv=(8, 2), d=128, dtype="bf16", causal=True, per_seq=True, tma=True, halves=0, pack=2,
         seed=4)  # two heads a program over two KV heads, rows past T and before position 0
@example(b=1, t=45, extra=0, kv=(4, 1), d=64, dtype="fp16", causal=True, per_seq=False, tma=False, halves=0, pack=4,
         seed=5)  # four heads a program
def test_prefill_matches_reference(device, b, t, extra, kv, d, dtype, causal, per_seq, tma, halves, pack, seed):
    """halves: the rows of a program (BLOCK_M) when it runs two softmax streams of half of them (0: one stream).
    pack: query heads a program, where the KV head's query heads divide by it (else one)."""
    hq, hkv = kv
    dt = HALF_DTYPES[dtype]
    s = t + extra
    q, k, v = _inputs(b, t, s, hq, hkv, d, dt, device, seed)
    lens = None
    if per_seq:  # each sequence its own length, some shorter than T: their first rows see no key
        g = torch.Generator().manual_seed(seed + 1)
        lens = torch.randint(0, s + 1, (b,), generator=g).to(device)
    config = dict(tma=tma, **(dict(BLOCK_M=halves, halves=True) if halves else {}))
    if not halves and (hq // hkv) % pack == 0:
        config.update(BLOCK_M=32, pack=pack)
    out, lse = prefill_attention(q, k, v, lens, causal=causal, return_lse=True, config=config)
    exact, lse_exact = gqa_attention_reference(q, k, v, lens, causal=causal, compute_dtype=torch.float64,
                                               return_lse=True)
    lowp = gqa_attention_reference(q, k, v, lens, causal=causal, compute_dtype=dt)
    assert_within_rule(out, exact, lowp, dt, what="out")
    seen = torch.isfinite(lse_exact)
    assert torch.equal(torch.isfinite(lse).cpu(), seen.cpu())  # -inf exactly where a row sees no key
    assert torch.allclose(lse.double().cpu()[seen.cpu()], lse_exact.cpu()[seen.cpu()], rtol=1e-4, atol=1e-4)


def _window_mask(lens, t, s, window, sink):
    """(B, 1, T, S): the keys a query at position p sees through a window, plainly: p - window < key, or key < sink."""
    pos = lens.cpu().long()[:, None] - t + torch.arange(t)[None, :]          # (B, T)
    keys = torch.arange(s)[None, None, :]
    return ((keys > pos[:, :, None] - window) | (keys < sink))[:, None]


@settings(deadline=None)
@given(b=st.integers(1, 2), t=st.integers(1, 150), extra=st.integers(0, 60), kv=st.sampled_from([(1, 1), (4, 1), (6, 2)]),
       d=st.sampled_from([64, 128]), dtype=st.sampled_from(list(HALF_DTYPES)), per_seq=st.booleans(),
       window=st.integers(1, 120), sink=st.integers(0, 50), tiles=st.sampled_from([(16, 16), (64, 32), (128, 64)]),
       tma=st.booleans(), pack=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
@example(b=1, t=150, extra=0, kv=(4, 1), d=64, dtype="fp16", per_seq=False, window=40, sink=20, tiles=(16, 16),
         tma=False, pack=1, seed=0)   # the window past the sink: sink blocks, edge blocks, whole blocks, diagonal blocks
@example(b=1, t=150, extra=0, kv=(1, 1), d=64, dtype="bf16", per_seq=False, window=30, sink=50, tiles=(64, 32),
         tma=True, pack=1, seed=1)    # a sink block the window reaches into
@example(b=2, t=20, extra=50, kv=(6, 2), d=128, dtype="bf16", per_seq=True, window=1, sink=0, tiles=(128, 64),
         tma=False, pack=1, seed=2)   # each row its own key only, a chunk after a prefix
@example(b=1, t=150, extra=0, kv=(4, 1), d=64, dtype="bf16", per_seq=False, window=40, sink=20, tiles=(16, 16),
         tma=False, pack=2, seed=3)   # two heads a program through the same blocks
def test_window_matches_reference(device, b, t, extra, kv, d, dtype, per_seq, window, sink, tiles, tma, pack, seed):
    hq, hkv = kv
    dt = HALF_DTYPES[dtype]
    s = t + extra
    q, k, v = _inputs(b, t, s, hq, hkv, d, dt, device, seed)
    lens = torch.full((b,), s)
    if per_seq:
        lens = torch.randint(0, s + 1, (b,), generator=torch.Generator().manual_seed(seed + 1))
    kv_lens = lens.to(device) if per_seq else None
    packs = (hq // hkv) % pack == 0 and tiles[0] * pack <= 128  # a program holds at most 128 rows
    config = dict(BLOCK_M=tiles[0], BLOCK_N=tiles[1], tma=tma, pack=pack if packs else 1)
    out, lse = prefill_attention(q, k, v, kv_lens, window=window, sink=sink, return_lse=True, config=config)
    mask = _window_mask(lens, t, s, window, sink)
    exact, lse_exact = gqa_attention_reference(q, k, v, kv_lens, compute_dtype=torch.float64, return_lse=True,
                                               mask=mask)
    lowp = gqa_attention_reference(q, k, v, kv_lens, compute_dtype=dt, mask=mask)
    assert_within_rule(out, exact, lowp, dt, what="out")
    seen = torch.isfinite(lse_exact)
    assert torch.equal(torch.isfinite(lse).cpu(), seen.cpu())
    assert torch.allclose(lse.double().cpu()[seen.cpu()], lse_exact.cpu()[seen.cpu()], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("key", [2, 30])  # a sink key; a key that leaves the window
def test_nan_in_a_key_reaches_only_the_rows_whose_window_or_sink_holds_it(device, key):
    q, k, v = _inputs(1, 64, 64, 1, 1, 64, torch.float16, device, 11)
    k[0, key, 0, 5] = float("nan")
    out = prefill_attention(q, k, v, window=8, sink=4, config=dict(BLOCK_M=16, BLOCK_N=16)).float().cpu()
    rows = torch.arange(64)
    sees = (rows >= key) & ((key < 4) | (rows - key < 8))
    assert torch.equal(torch.isnan(out[0, :, 0]).all(-1), sees)


def test_a_window_over_every_key_is_causal_attention(device):
    q, k, v = _inputs(1, 90, 90, 2, 1, 64, torch.float16, device, 9)
    dense = prefill_attention(q, k, v, config=dict(BLOCK_M=32, BLOCK_N=16))
    for window, sink in ((90, 0), (1000, 0), (5, 90)):  # every key in the window, or in the sink
        got = prefill_attention(q, k, v, window=window, sink=sink, config=dict(BLOCK_M=32, BLOCK_N=16))
        assert torch.allclose(got.float(), dense.float(), atol=2e-3, rtol=1e-2), (window, sink)


def test_a_window_launches_under_its_own_key(device):
    """A window's programs read a fixed number of keys, causal ones a growing number: the
    tuner keeps them apart, by the window rounded up to a power of two."""
    from kernels import tuning

    q, k, v = _inputs(1, 100, 100, 2, 1, 64, torch.float16, device, 10)
    keys = []
    for window in (None, 40):
        with tuning.recording() as seen:
            prefill_attention(q, k, v, window=window)
        keys += [key for space, key in seen if space.kernel == "prefill_attention"]
    assert keys == [dict(head_dim=64, rows=128), dict(head_dim=64, rows=128, window=64)]


def test_rows_that_see_no_key_are_zero(device):
    q, k, v = _inputs(1, 8, 8, 2, 1, 64, torch.float16, device, 3)
    out, lse = prefill_attention(q, k, v, torch.tensor([3], device=device), return_lse=True)
    assert torch.all(out[0, :5] == 0) and torch.all(lse[0, :, :5] == float("-inf"))
    assert torch.all(torch.isfinite(out[0, 5:].float()))


def test_nan_in_a_visible_key_reaches_only_the_rows_that_see_it(device):
    q, k, v = _inputs(1, 16, 16, 1, 1, 64, torch.float16, device, 4)
    k[0, 9, 0, 3] = float("nan")
    for cfg in (None, dict(BLOCK_M=32, halves=True)):
        out = prefill_attention(q, k, v, config=cfg).float().cpu()
        assert torch.isnan(out[0, 9:]).all() and not torch.isnan(out[0, :9]).any(), cfg


@pytest.mark.parametrize("block_m,block_n", [(16, 16), (64, 32), (32, 64), (128, 64)])
def test_nan_in_a_value_reaches_the_rows_that_see_it_and_no_row_before_its_key_tile(device, block_m, block_n):
    """The documented bound (docs/correctness.md): rows that see a NaN value are NaN; rows of a
    query tile that reads the value's key tile without seeing it may be too (p @ v multiplies
    their zero weight by it); no row of an earlier query tile is touched."""
    q, k, v = _inputs(1, 256, 256, 2, 1, 64, torch.float16, device, 7)
    key = 200
    v[0, key, 0, 3] = float("nan")
    out = prefill_attention(q, k, v, config=dict(BLOCK_M=block_m, BLOCK_N=block_n)).float().cpu()
    first_reader = (key // block_n * block_n) // block_m * block_m
    assert torch.isnan(out[0, key:, :, 3]).all()
    assert not torch.isnan(out[0, :first_reader]).any()
    assert not torch.isnan(out[0, :, :, [0, 1, 2, 4]]).any()   # the other value columns stay clean


def test_the_cache_past_a_sequences_end_is_never_used(device):
    """A KV cache's capacity past kv_len holds whatever was there (NaN here): no output row
    may see it, whatever the block shapes (the last key block straddles the end)."""
    q, k, v = _inputs(2, 24, 100, 2, 1, 64, torch.bfloat16, device, 6)
    lens = torch.tensor([37, 90], device=device)
    clean = prefill_attention(q, k, v, lens).float()
    for b, n in enumerate(lens.tolist()):
        k[b, n:], v[b, n:] = float("nan"), float("nan")
    assert torch.equal(prefill_attention(q, k, v, lens).float(), clean)
    for cfg in (dict(BLOCK_M=16, BLOCK_N=64), dict(BLOCK_M=64, BLOCK_N=128), dict(BLOCK_N=64, tma=True),
                dict(BLOCK_M=16, BLOCK_N=128, tma=True), dict(BLOCK_M=128, BLOCK_N=64, tma=True, halves=True),
                dict(BLOCK_M=64, BLOCK_N=32, halves=True)):
        assert not torch.isnan(prefill_attention(q, k, v, lens, config=cfg)).any(), cfg


def test_launch_options_compute_the_same_attention(device):
    q, k, v = _inputs(1, 50, 70, 4, 2, 64, torch.float16, device, 5)
    base = prefill_attention(q, k, v)
    for cfg in (dict(BLOCK_M=64, BLOCK_N=32), dict(BLOCK_M=16, BLOCK_N=16), dict(BLOCK_M=128, BLOCK_N=128),
                dict(tma=True), dict(BLOCK_M=128, BLOCK_N=128, tma=True), dict(BLOCK_M=128, halves=True),
                dict(BLOCK_M=128, BLOCK_N=64, halves=True, tma=True), dict(BLOCK_M=32, pack=2),
                dict(BLOCK_M=64, BLOCK_N=128, pack=2, tma=True)):
        assert torch.allclose(prefill_attention(q, k, v, config=cfg).float(), base.float(), atol=2e-3, rtol=1e-2), cfg
    with pytest.raises(ValueError, match="BLOCK_N must be 16, 32, 64 or 128"):
        prefill_attention(q, k, v, config=dict(BLOCK_N=48))
    with pytest.raises(ValueError, match="tma must be True or False"):
        prefill_attention(q, k, v, config=dict(tma="auto"))
    with pytest.raises(ValueError, match="halves must be True or False"):
        prefill_attention(q, k, v, config=dict(halves=2))
    with pytest.raises(ValueError, match="halves needs BLOCK_M of at least 32"):
        prefill_attention(q, k, v, config=dict(BLOCK_M=16, halves=True))
    for bad in (3, 2.0, "2"):
        with pytest.raises(ValueError, match="pack must be 1, 2 or 4"):
            prefill_attention(q, k, v, config=dict(pack=bad))
    with pytest.raises(ValueError, match="BLOCK_M x pack is a program's rows, at most 128; got 128 x 2"):
        prefill_attention(q, k, v, config=dict(BLOCK_M=128, pack=2))
    with pytest.raises(ValueError, match="halves and pack > 1 do not combine"):
        prefill_attention(q, k, v, config=dict(pack=2, halves=True))
    # 4 query heads over 2 KV heads: two a KV head, so a pack of 4 spans two KV heads
    with pytest.raises(ValueError, match="pack=4 needs a whole number of packs in each KV head's 2 query heads"):
        prefill_attention(q, k, v, config=dict(BLOCK_M=32, pack=4))


def test_a_tables_pack_falls_back_to_one_head(device):
    """The launch key has no head counts: a table's pack that does not divide a model's
    query heads per KV head (or a head list's launch) runs one head a program, unchanged."""
    from kernels import tuning

    q, k, v = _inputs(1, 40, 40, 3, 1, 64, torch.float16, device, 8)
    base = prefill_attention(q, k, v)
    with tuning.forcing("prefill_attention", dict(pack=2)):
        assert torch.equal(prefill_attention(q, k, v), base)


def test_a_callers_rows_or_streams_override_a_tables_pack(device):
    """The caller's BLOCK_M keeps its meaning (rows a program) and halves its two streams of
    one head where the table packs four heads: one head a program, as without the table (these
    raised, or ran 512-row programs, before)."""
    from kernels import tuning

    q, k, v = _inputs(1, 40, 40, 4, 1, 64, torch.float16, device, 9)
    own = {cfg["BLOCK_M"]: prefill_attention(q, k, v, config=cfg) for cfg in (dict(BLOCK_M=128), dict(BLOCK_M=64))}
    streams = prefill_attention(q, k, v, config=dict(BLOCK_M=64, halves=True))
    with tuning.forcing("prefill_attention", dict(BLOCK_M=32, pack=4)):
        for rows, out in own.items():
            assert torch.equal(prefill_attention(q, k, v, config=dict(BLOCK_M=rows)), out)
        assert torch.equal(prefill_attention(q, k, v, config=dict(BLOCK_M=64, halves=True)), streams)
    with tuning.forcing("prefill_attention", dict(halves=True)):  # a table's streams give way to the caller's pack
        packed = prefill_attention(q, k, v, config=dict(BLOCK_M=32, pack=2))
    assert torch.equal(packed, prefill_attention(q, k, v, config=dict(BLOCK_M=32, pack=2)))


def test_tma_needs_a_flat_cache_and_a_tables_choice_falls_back(device):
    """Through TMA k and v read as (batch * tokens, heads * head_dim) matrices: a layout that
    is not one is refused when the caller asks for TMA, and read by pointers when the tuned
    table chose it (the table cannot know the caller's layout)."""
    from kernels import tuning

    q, k, v = _inputs(2, 20, 30, 2, 1, 64, torch.float16, device, 7)
    k_gapped, v_gapped = (torch.cat([t, t], dim=2)[:, :, ::2] for t in (k, v))  # heads 2*head_dim apart
    base = prefill_attention(q, k, v)
    with pytest.raises(ValueError, match=r"tma=True needs k and v each readable as one \(batch \* kv_len"):
        prefill_attention(q, k_gapped, v_gapped, config=dict(tma=True))
    with tuning.forcing("prefill_attention", dict(tma=True)):
        assert torch.equal(prefill_attention(q, k_gapped, v_gapped), base)
        assert torch.allclose(prefill_attention(q, k, v).float(), base.float(), atol=2e-3, rtol=1e-2)


@pytest.mark.parametrize("scale", [0.3, -0.2, 0.0])
def test_every_sign_of_scale_matches_the_reference(device, scale):
    """A positive scale takes the kernel's fused path (the scaled maximum is max(qk) * scale);
    zero or negative ones the plain path, where that would be the minimum, and the scores
    (spread over hundreds of units here) would overflow exp2 against it."""
    q, k, v = _inputs(1, 90, 90, 2, 1, 64, torch.bfloat16, device, 8)
    q, k = q * 4, k * 4
    out = prefill_attention(q, k, v, scale=scale, config=dict(BLOCK_M=16, BLOCK_N=16))  # many unmasked blocks
    exact = gqa_attention_reference(q, k, v, scale=scale, compute_dtype=torch.float64)
    lowp = gqa_attention_reference(q, k, v, scale=scale, compute_dtype=torch.bfloat16)
    assert_within_rule(out, exact, lowp, torch.bfloat16, what=f"scale {scale}")


def test_bad_input_is_named(device):
    q, k, v = _inputs(1, 4, 4, 2, 1, 64, torch.float16, device, 6)
    with pytest.raises(TypeError, match="q has dtype float32"):
        prefill_attention(q.float(), k, v)
    with pytest.raises(ValueError, match="head_dim 32 is not supported"):
        prefill_attention(q[..., :32], k[..., :32], v[..., :32])
    with pytest.raises(ValueError, match="not a multiple of the 2 KV heads"):
        prefill_attention(q[:, :, :1], torch.cat([k, k], 2), torch.cat([v, v], 2))
    with pytest.raises(ValueError, match=r"kv_lens must lie in \[0, 4\]"):
        prefill_attention(q, k, v, 5)
    with pytest.raises(TypeError, match="kv_lens must be an int32 or int64 tensor of shape"):
        prefill_attention(q, k, v, torch.tensor([1.0]))
    with pytest.raises(TypeError, match="v has dtype torch.bfloat16; it must match q's torch.float16"):
        prefill_attention(q, k, v.bfloat16())
    with pytest.raises(ValueError, match="sink=4 needs a window"):
        prefill_attention(q, k, v, sink=4)
    with pytest.raises(ValueError, match="window must be an int >= 1, got 0"):
        prefill_attention(q, k, v, window=0)
    with pytest.raises(TypeError, match="sink must be an int, got float"):
        prefill_attention(q, k, v, window=2, sink=1.0)
    with pytest.raises(ValueError, match="a window counts the keys up to each query's own: it needs causal=True"):
        prefill_attention(q, k, v, window=2, causal=False)
    with pytest.raises(ValueError, match="halves .* has no window"):
        prefill_attention(q, k, v, window=2, config=dict(BLOCK_M=32, halves=True))


def test_cost_counts_the_causal_pairs():
    c = prefill_attention_cost(1, 4, 1, 1, 4, 64, 2)  # 1 + 2 + 3 + 4 pairs
    assert c.flops == 4 * 64 * 10
    assert prefill_attention_cost(1, 4, 1, 1, 6, 64, 2).flops == 4 * 64 * (3 + 4 + 5 + 6)
    assert prefill_attention_cost(1, 4, 1, 1, 2, 64, 2).flops == 4 * 64 * (1 + 2)
    assert prefill_attention_cost(1, 4, 1, 1, 4, 64, 2, causal=False).flops == 4 * 64 * 16


def test_a_prompt_past_the_grid_limit_is_refused_by_name(device):
    """The query blocks are the grid's second dimension (CUDA's limit 65535): a longer prompt
    is refused before any launch (an expanded q: no memory behind its 1M rows)."""
    t = 65535 * 16 + 1
    q = torch.zeros(1, 1, 1, 64, dtype=torch.float16, device=device).expand(1, t, 1, 64)
    k = torch.zeros(1, 4, 1, 64, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match=r"1048561 query tokens is past this kernel's limit of 1048560 at BLOCK_M 16"):
        prefill_attention(q, k, k, config=dict(BLOCK_M=16))


@pytest.mark.parametrize("t", [300, 256])
def test_flex_causal_mask_is_causal_attention(t):
    """The perf cases' FlexAttention baseline: its block mask, built from block lists, is
    causal attention (partial last tile included)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    from torch.nn.attention.flex_attention import flex_attention

    from kernels.attention.baselines import causal_block_mask

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, t, h, 64, generator=g) for h in (4, 2, 2))
    got = flex_attention(*(x.transpose(1, 2) for x in (q, k, v)), block_mask=causal_block_mask(t, "cpu"),
                         enable_gqa=True).transpose(1, 2)
    want = gqa_attention_reference(q.double(), k.double(), v.double(), causal=True)
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_flex_causal_mask_fits_at_128k_tokens():
    """create_block_mask evaluated every (query, key) pair: it asked for 128 GiB at 128K
    tokens and failed the whole perf case; the block lists hold (T / 128)^2 entries."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    from kernels.attention.baselines import causal_block_mask

    mask = causal_block_mask(131072, "cpu")
    assert mask.full_kv_indices.shape == (1, 1, 1024, 1024) and mask.kv_num_blocks.sum() == 1024
