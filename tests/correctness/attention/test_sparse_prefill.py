"""kernels/attention/sparse_prefill.py: the estimate against its float64 reference, the
compact index against the plain mask of the same columns and diagonals, the attention
against the float64 masked reference over exactly the selected keys (the tolerance rule of
tests/helpers/tolerance.py), and the whole prefill against attention over the pattern it chose."""
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernels.attention import gqa_attention_reference
from kernels.attention.reference import (sparse_index_rows_mask, vertical_slash_estimate_reference,
                                         vertical_slash_mask)
from kernels.attention.sparse_prefill import (
    BLOCK, LOCAL_DIAGONALS, SINK_COLUMNS, BlockIndex, SparseIndex, WindowPattern, a_shape_index, block_sparse_attention,
    block_sparse_index, estimate_vertical_slash, head_patterns, pattern_indexes, sparse_prefill,
    vertical_slash_attention, vertical_slash_index, vertical_slash_pattern, vertical_slash_prefill,
)
from tests.helpers.host_sync import no_host_sync
from tests.helpers.tolerance import HALF_DTYPES, assert_within_rule

pytestmark = pytest.mark.correctness


def _qkv(b, t, hq, hkv, d, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, t, h, d, generator=g).to(device, dtype) for h in (hq, hkv, hkv))


def _pattern(b, h, t, n_cols, n_diags, seed, per_head=False):
    """Random distinct columns and diagonals of each head; per_head: each head uses a
    random count of them."""
    g = torch.Generator().manual_seed(seed)
    nc, nd = min(n_cols, t), min(n_diags, t)
    cols = torch.stack([torch.randperm(t, generator=g)[:nc] for _ in range(b * h)]).view(b, h, nc)
    diags = torch.stack([torch.randperm(t, generator=g)[:nd] for _ in range(b * h)]).view(b, h, nd)
    if not per_head:
        return cols, diags, None, None
    return cols, diags, torch.randint(0, nc + 1, (b, h), generator=g), torch.randint(0, nd + 1, (b, h), generator=g)


def _used(t, n):
    """The first n[b, h] entries of each head, the rest -1 (the mask's padding)."""
    if n is None:
        return t
    return torch.where(torch.arange(t.shape[-1]) < n[..., None], t, -1)


def _mask_of_index(index: SparseIndex, t: int) -> torch.Tensor:
    """The keys the index lets each row see, read back from its own fields: each merged
    interval's range per block, the block's counted columns, causal."""
    iv, n_iv, cols, per_block = (x.cpu().long() for x in index.tensors())
    B, H = n_iv.shape
    mask = torch.zeros(B, H, t, t, dtype=torch.bool)
    keys = torch.arange(t)
    for b in range(B):
        for h in range(H):
            for blk in range(per_block.shape[-1]):
                m0 = blk * BLOCK
                rows = slice(m0, min(m0 + BLOCK, t))
                for a, last in iv[b, h, :n_iv[b, h]].tolist():
                    mask[b, h, rows] |= (keys >= m0 - last) & (keys <= m0 + BLOCK - 1 - a)
                mask[b, h, rows, cols[b, h, :per_block[b, h, blk]]] = True
    return mask & (keys[None, :] <= keys[:, None])


@settings(deadline=None, max_examples=25)
@given(b=st.integers(1, 2), t=st.integers(1, 200), kv=st.sampled_from([(1, 1), (4, 1), (6, 2)]),
       d=st.sampled_from([64, 128]), dtype=st.sampled_from(list(HALF_DTYPES)), last_q=st.sampled_from([16, 64, 100]),
       seed=st.integers(0, 2 ** 16))
@example(b=1, t=200, kv=(4, 1), d=64, dtype="bf16", last_q=64, seed=0)  # many key tiles, the default rows
def test_estimate_matches_reference(device, b, t, kv, d, dtype, last_q, seed):
    q, k, _ = _qkv(b, t, kv[0], kv[1], d, HALF_DTYPES[dtype], device, seed)
    vert, slash = estimate_vertical_slash(q, k, last_q=last_q)
    vert_ref, slash_ref = vertical_slash_estimate_reference(q, k, last_q)
    # probabilities from half-precision scores, summed over at most last_q rows: errors of a
    # few units of the scores' rounding, relative to the scale of one row's mass
    for got, want in ((vert, vert_ref), (slash, slash_ref)):
        assert torch.allclose(got.double().cpu(), want.cpu(), atol=2e-2, rtol=2e-2)
    rows = min(last_q, t)  # each row's probabilities sum to one, over keys and over diagonals alike
    assert torch.allclose(vert.sum(-1).double().cpu(), torch.full((b, kv[0]), float(rows), dtype=torch.float64), rtol=1e-4)
    assert torch.allclose(slash.sum(-1).double().cpu(), torch.full((b, kv[0]), float(rows), dtype=torch.float64), rtol=1e-4)


@settings(deadline=None, max_examples=30)
@given(b=st.integers(1, 2), h=st.integers(1, 3), t=st.integers(1, 300), n_cols=st.integers(0, 40),
       n_diags=st.integers(0, 40), per_head=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_index_selects_what_the_plain_mask_does(b, h, t, n_cols, n_diags, per_head, seed):
    cols, diags, nc, nd = _pattern(b, h, t, n_cols, n_diags, seed, per_head)
    index = vertical_slash_index(cols, diags, t, nc, nd)
    assert torch.equal(_mask_of_index(index, t), vertical_slash_mask(t, _used(cols, nc), _used(diags, nd)))


def test_merged_intervals_are_sorted_and_far_apart():
    diags = torch.tensor([[[5, 0, 64, 200, 128, 300, 364, 429]]])
    index = vertical_slash_index(torch.zeros(1, 1, 0, dtype=torch.long), diags, 500)
    n = int(index.n_intervals[0, 0])
    assert index.intervals[0, 0, :n].tolist() == [[0, 128], [200, 200], [300, 364], [429, 429]]  # merged where a gap <= 64


@settings(deadline=None, max_examples=25)
@given(b=st.integers(1, 2), t=st.integers(1, 200), kv=st.sampled_from([(1, 1), (4, 1), (3, 1), (6, 2)]),
       d=st.sampled_from([64, 128]), dtype=st.sampled_from(list(HALF_DTYPES)), n_cols=st.integers(0, 50),
       n_diags=st.integers(0, 50), per_head=st.booleans(), block_n=st.sampled_from([32, 64]), flat=st.booleans(),
       rows=st.sampled_from([64, 128]), tma=st.booleans(), seed=st.integers(0, 2 ** 16))
@example(b=1, t=200, kv=(4, 1), d=64, dtype="fp16", n_cols=30, n_diags=10, per_head=False, block_n=64, flat=False,
         rows=64, tma=False, seed=0)
@example(b=1, t=130, kv=(1, 1), d=128, dtype="bf16", n_cols=0, n_diags=0, per_head=False, block_n=32, flat=True,
         rows=64, tma=False, seed=1)  # no key
@example(b=1, t=200, kv=(4, 1), d=64, dtype="fp16", n_cols=5, n_diags=40, per_head=True, block_n=32, flat=True,
         rows=64, tma=False, seed=2)  # many ranges walked in one loop
@example(b=2, t=200, kv=(4, 1), d=64, dtype="fp16", n_cols=30, n_diags=40, per_head=True, block_n=64, flat=False,
         rows=128, tma=False, seed=3)  # two pattern blocks a program, the last one partial
@example(b=1, t=190, kv=(3, 1), d=128, dtype="bf16", n_cols=20, n_diags=45, per_head=False, block_n=32, flat=True,
         rows=128, tma=False, seed=4)
@example(b=2, t=200, kv=(6, 2), d=128, dtype="bf16", n_cols=10, n_diags=45, per_head=True, block_n=64, flat=True,
         rows=64, tma=True, seed=5)  # range tiles through TMA: reads past a range's end, into the next sequence
@example(b=1, t=190, kv=(4, 1), d=64, dtype="fp16", n_cols=20, n_diags=30, per_head=False, block_n=32, flat=False,
         rows=128, tma=True, seed=6)
@example(b=2, t=200, kv=(4, 1), d=128, dtype="bf16", n_cols=0, n_diags=150, per_head=False, block_n=64, flat=False,
         rows=64, tma=True, seed=7)  # a loop per range through TMA: long ranges, unmasked inner tiles (A-shape)
def test_attention_matches_masked_reference(device, b, t, kv, d, dtype, n_cols, n_diags, per_head, block_n, flat,
                                            rows, tma, seed):
    """Both walks of the ranges: a loop per range, or (flat) one loop over all of a
    program's range tiles; a program of one pattern block or of two (rows = 128: each row
    keeps to its own block's ranges); the range tiles by pointer loads or through TMA."""
    dt = HALF_DTYPES[dtype]
    q, k, v = _qkv(b, t, kv[0], kv[1], d, dt, device, seed)
    cols, diags, nc, nd = _pattern(b, kv[0], t, n_cols, n_diags, seed + 1, per_head)
    index = vertical_slash_index(cols.to(device), diags.to(device), t, *(None if n is None else n.to(device)
                                                                        for n in (nc, nd)))
    out, lse = vertical_slash_attention(q, k, v, index, return_lse=True,
                                        config={"BLOCK_M": rows, "BLOCK_N": block_n, "flat": flat, "tma": tma})
    mask = vertical_slash_mask(t, _used(cols, nc), _used(diags, nd))
    exact, lse_exact = gqa_attention_reference(q, k, v, compute_dtype=torch.float64, return_lse=True, mask=mask)
    lowp = gqa_attention_reference(q, k, v, compute_dtype=dt, mask=mask)
    assert_within_rule(out, exact, lowp, dt, what="out")
    seen = torch.isfinite(lse_exact).cpu()
    assert torch.equal(torch.isfinite(lse).cpu(), seen)  # -inf exactly where a row sees no key
    assert torch.allclose(lse.double().cpu()[seen], lse_exact.cpu()[seen], rtol=1e-4, atol=1e-4)
    assert torch.all(out.cpu().transpose(1, 2)[~seen] == 0)


def test_a_shape_and_vertical_slash_launch_under_their_own_keys(device):
    """The launch table keeps A-shape's window and the estimate's scattered ranges apart:
    the index says which pattern made it, through .to() too."""
    from kernels import tuning

    q, k, v = _qkv(1, 150, 4, 2, 64, torch.float16, device, 8)
    cols, diags, _, _ = _pattern(1, 4, 150, 10, 20, 9)
    keys = {}
    for name, index in (("a-shape", a_shape_index(1, 4, 150, sink=16, window=40)),
                        ("vertical-slash", vertical_slash_index(cols, diags, 150))):
        with tuning.recording() as seen:
            vertical_slash_attention(q, k, v, index.to(device))
        keys[name] = [key for space, key in seen if space.kernel == "vertical_slash_attention"]
    assert keys == {"a-shape": [dict(head_dim=64, tokens=256, pattern="a-shape")],
                    "vertical-slash": [dict(head_dim=64, tokens=256, pattern="vertical-slash")]}


def test_every_key_chosen_is_dense_attention(device):
    q, k, v = _qkv(1, 150, 4, 2, 64, torch.float16, device, 5)
    out = vertical_slash_prefill(q, k, v, 150, 150)
    exact = gqa_attention_reference(q, k, v, compute_dtype=torch.float64)
    assert_within_rule(out, exact, gqa_attention_reference(q, k, v, compute_dtype=torch.float16), torch.float16)


@pytest.mark.parametrize("per_head", [False, True])
def test_prefill_attends_the_pattern_its_estimate_chose(device, per_head):
    t, hq = 180, 4
    q, k, v = _qkv(1, t, hq, 2, 64, torch.bfloat16, device, 6)
    n_cols, n_diags = (torch.tensor([[40, 0, 70, 35]]), torch.tensor([[110, 101, 5, 130]])) if per_head else (40, 110)
    out = vertical_slash_prefill(q, k, v, n_cols, n_diags)
    vert, slash = estimate_vertical_slash(q, k)  # (checked against float64 above; deterministic)
    cols, nc, diags, nd = vertical_slash_pattern(vert, slash, n_cols, n_diags)
    mask = vertical_slash_mask(t, _used(cols.cpu(), nc.cpu()), _used(diags.cpu(), nd.cpu()))
    exact = gqa_attention_reference(q, k, v, compute_dtype=torch.float64, mask=mask)
    lowp = gqa_attention_reference(q, k, v, compute_dtype=torch.bfloat16, mask=mask)
    assert_within_rule(out, exact, lowp, torch.bfloat16)


def test_pattern_keeps_the_sink_columns_and_local_diagonals():
    vert = torch.rand(1, 2, 500)
    slash = torch.rand(1, 2, 500)
    vert[..., :SINK_COLUMNS] = -1  # the least likely keys: kept anyway
    slash[..., :LOCAL_DIAGONALS] = -1
    cols, nc, diags, nd = vertical_slash_pattern(vert, slash, 50, 120)
    assert set(range(SINK_COLUMNS)) <= set(cols[0, 0].tolist())
    assert set(range(LOCAL_DIAGONALS)) <= set(diags[0, 1].tolist())
    assert set(cols[0, 0].tolist()) - set(range(SINK_COLUMNS)) == set(vert[0, 0, SINK_COLUMNS:].topk(20).indices.add(
        SINK_COLUMNS).tolist())


def test_a_nan_estimate_ranks_below_the_kept_keys():
    """A NaN in q makes a head's estimates NaN, which torch.topk ranks above +inf: the sink
    columns and local diagonals must still be chosen (they were not), and so must the
    block-sparse sink and diagonal."""
    vert, slash = torch.rand(1, 2, 500), torch.rand(1, 2, 500)
    vert[0, 0], slash[0, 0] = float("nan"), float("nan")
    cols, nc, diags, nd = vertical_slash_pattern(vert, slash, 50, 120)
    assert set(range(SINK_COLUMNS)) <= set(cols[0, 0].tolist())
    assert set(range(LOCAL_DIAGONALS)) <= set(diags[0, 0].tolist())
    q, k, _ = _qkv(1, 64 * 5, 2, 1, 64, torch.float16, "cpu", 21)
    q[0, 150, 0, 0] = float("nan")  # in query block 2
    index = block_sparse_index(q, k, 2)
    assert index.blocks[0, 0, 2, :int(index.counts[0, 0, 2])].tolist() == [0, 2]


def test_a_block_budget_of_one_keeps_the_diagonal():
    q, k, _ = _qkv(1, 64 * 4, 2, 1, 64, torch.float16, "cpu", 22)
    index = block_sparse_index(q, k, 1)
    assert index.counts.eq(1).all() and index.blocks[0, :, :, 0].tolist() == [[0, 1, 2, 3]] * 2


def test_a_shape_is_the_sink_and_the_local_window():
    t = 300
    index = a_shape_index(1, 1, t, sink=16, window=100)
    mask = _mask_of_index(index, t)[0, 0]
    rows, keys = torch.arange(t)[:, None], torch.arange(t)[None, :]
    block_start = rows // BLOCK * BLOCK
    want = (keys <= rows) & ((keys < 16) | (keys >= block_start - 99))  # the window of the block's first row
    assert torch.equal(mask, want)


def test_index_is_compact_at_128k_tokens():
    """MInference's per-block lists for 32 heads at 128K with budget (1000, 6096) take
    heads x blocks x (columns + diagonals) ints (1.6 GB); this index takes under 1% of that."""
    t, h = 131072, 32
    g = torch.Generator().manual_seed(0)
    cols = torch.stack([torch.randperm(t, generator=g)[:1000] for _ in range(h)])[None]
    diags = torch.stack([torch.randperm(t, generator=g)[:6096] for _ in range(h)])[None]
    index = vertical_slash_index(cols, diags, t)
    dense_format = h * (t // 64) * (1000 + 6096) * 4
    assert index.nbytes() < 0.01 * dense_format


@pytest.mark.parametrize("rows", [64, 128])
@pytest.mark.parametrize("flat", [False, True])
def test_a_row_that_sees_no_key_is_zero(device, flat, rows):
    q, k, v = _qkv(1, 128, 1, 1, 64, torch.float16, device, 7)
    index = vertical_slash_index(torch.zeros(1, 1, 0, dtype=torch.long), torch.tensor([[[100]]]), 128)
    out, lse = vertical_slash_attention(q.to(device), k, v, index.to(device), return_lse=True,
                                        config={"flat": flat, "BLOCK_M": rows})
    # block 0's rows: diagonal 100 lies before key 0; block 1 (rows 64..127) sees keys 0..27
    assert torch.all(out[0, :64] == 0) and torch.all(lse[0, 0, :64] == float("-inf"))
    assert torch.all(torch.isfinite(out[0, 64:].float())) and torch.all(torch.isfinite(lse[0, 0, 64:]))


@pytest.mark.parametrize("rows", [64, 128])
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("where", ["selected", "unselected"])
def test_nan_in_a_key_reaches_only_the_rows_that_select_it(device, where, flat, rows):
    t = 128
    q, k, v = _qkv(1, t, 2, 1, 64, torch.float16, device, 8)
    cols = torch.tensor([[[3], [3]]])
    index = vertical_slash_index(cols, torch.tensor([[[0], [0]]]), t).to(device)
    key = 3 if where == "selected" else 10  # 10: only rows of block 0 see it (their own diagonal-0 range)
    k[0, key, 0, 0] = float("nan")
    out = vertical_slash_attention(q, k, v, index, config={"flat": flat, "BLOCK_M": rows})
    mask = vertical_slash_mask(t, cols, torch.tensor([[[0], [0]]]))[0, 0]
    nan_rows = torch.isnan(out[0, :, 0].float()).all(-1).cpu()
    assert torch.equal(nan_rows, mask[:, key])
    assert not torch.isnan(out[0][~nan_rows.to(out.device)].float()).any()


def _with(t, at, value):
    t = t.clone()
    t[at] = value
    return t


@pytest.mark.parametrize("field,at,value,message", [
    ("n_intervals", (0, 0), 1000, r"n_intervals must lie in \[0, 8\]"),  # read past the intervals: a crash before
    ("block_columns", (0, 0, 1), 1000, "block_columns must count"),  # read past the columns: a crash before
    ("block_columns", (0, 0, 1), 1, "block_columns must count"),  # a column left out of block 1
    ("intervals", (0, 0, 1, 0), 40, "sorted and merged"),  # ranges of one block overlap: keys counted twice
    ("intervals", (0, 0, 1, 1), 300, "first <= last < T = 256"),
    ("columns", (0, 0, 1), 5, "sorted without repeats"),  # a key counted twice
    ("columns", (0, 0, 2), 300, r"columns must lie in \[0, 256\]"),
])
def test_vertical_slash_refuses_an_index_it_cannot_walk(device, field, at, value, message):
    """A valid index (columns 5, 70, 200; diagonals 0-3 and 100-103) with one value spoiled."""
    q, k, v = _qkv(1, 256, 2, 1, 64, torch.float16, device, 24)
    index = vertical_slash_index(torch.tensor([[[5, 70, 200]] * 2]), torch.tensor([[[0, 1, 2, 3, 100, 101, 102, 103]] * 2]),
                                 256)
    vertical_slash_attention(q, k, v, index.to(device))  # as made: accepted
    bad = index._replace(**{field: _with(getattr(index, field), at, value)}).to(device)
    with pytest.raises(ValueError, match=message):
        vertical_slash_attention(q, k, v, bad)


def test_bad_input_is_refused_with_a_clear_error(device):
    q, k, v = _qkv(1, 64, 2, 1, 64, torch.float16, device, 9)
    index = vertical_slash_index(torch.tensor([[[0], [1]]]), torch.tensor([[[0], [0]]]), 64).to(device)
    with pytest.raises(ValueError, match="must lie in"):
        vertical_slash_index(torch.tensor([[[64]]]), torch.tensor([[[0]]]), 64)
    for scale in (float("nan"), float("inf")):  # the estimate took them and gave NaN scores
        with pytest.raises(ValueError, match="scale must be a finite number"):
            estimate_vertical_slash(q, k, scale=scale)
    with pytest.raises(TypeError, match="scale must be a number"):
        estimate_vertical_slash(q, k, scale=True)
    with pytest.raises(ValueError, match="repeat"):
        vertical_slash_index(torch.tensor([[[1, 1]]]), torch.tensor([[[0]]]), 64)
    with pytest.raises(ValueError, match="columns is on meta: its values are read"):  # PyTorch-only inputs too
        vertical_slash_index(torch.tensor([[[1]]], device="meta"), torch.tensor([[[0]]]), 64)
    with pytest.raises(ValueError, match="share"):
        vertical_slash_index(torch.tensor([[[1]]]), torch.tensor([[[0], [0]]]), 64)
    with pytest.raises(ValueError, match="made for 64 tokens"):
        vertical_slash_attention(q[:, :32], k[:, :32], v[:, :32], index)  # its columns would address keys past 32
    with pytest.raises(ValueError, match="block_columns"):
        vertical_slash_attention(q, k, v, index._replace(block_columns=index.block_columns.long()))
    with pytest.raises(TypeError, match="SparseIndex"):
        vertical_slash_attention(q, k, v, tuple(index))
    with pytest.raises(ValueError, match="BLOCK_N must be"):
        vertical_slash_attention(q, k, v, index, config={"BLOCK_N": 48})
    with pytest.raises(ValueError, match="one or two of the pattern's 64-row blocks"):
        vertical_slash_attention(q, k, v, index, config={"BLOCK_M": 32})  # a program holds whole pattern blocks
    with pytest.raises(ValueError, match="unknown launch option"):
        vertical_slash_attention(q, k, v, index, config={"BLOCK_K": 64})
    with pytest.raises(ValueError, match="flat must be True or False"):
        vertical_slash_attention(q, k, v, index, config={"flat": 1})
    with pytest.raises(ValueError, match="tma must be True or False"):
        vertical_slash_attention(q, k, v, index, config={"tma": 1})
    padded = torch.zeros(1, 64, 1, 128, dtype=k.dtype, device=k.device)[..., :64]  # head rows 256 bytes apart
    padded.copy_(k)
    with pytest.raises(ValueError, match="tma=True needs k and v each readable as one"):
        vertical_slash_attention(q, padded, v, index, config={"tma": True})
    with pytest.raises(ValueError, match="head_dim"):
        vertical_slash_attention(q[..., :32], k[..., :32], v[..., :32], index)
    with pytest.raises(ValueError, match="prefill from scratch"):
        vertical_slash_attention(q, k[:, :32], v[:, :32], index)
    with pytest.raises(ValueError, match="last_q"):
        estimate_vertical_slash(q, k, last_q=256)
    with pytest.raises(ValueError, match="n_columns"):
        vertical_slash_prefill(q, k, v, torch.tensor([5]), 10)


def test_reference_keeps_a_bad_value_to_the_rows_that_see_it():
    """The reference's weighted sum once carried a NaN value of a masked key into every row
    (0 x NaN); the rows that do not see the key stay finite, an infinity seen with weight 0
    is NaN."""
    q, k, v = _qkv(1, 8, 1, 1, 64, torch.float16, "cpu", 10)
    mask = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 2] = False  # no row sees key 2
    v[0, 2, 0, 0], v[0, 5, 0, 1] = float("nan"), float("inf")
    out = gqa_attention_reference(q, k, v, compute_dtype=torch.float64, mask=mask)[0, :, 0]
    assert torch.isfinite(out[:, 0]).all()                       # key 2's NaN reaches no row
    assert torch.isinf(out[5:, 1]).all() and torch.isfinite(out[:5, 1]).all()  # key 5: rows 5.. see it


def _block_mask(index: BlockIndex, t: int) -> torch.Tensor:
    """The keys a block index lets each row see: its query block's listed key blocks, causal."""
    blocks, counts = index.blocks.cpu().long(), index.counts.cpu().long()
    B, H, nb, _ = blocks.shape
    listed = torch.zeros(B, H, nb, nb + 1, dtype=torch.bool)
    listed.scatter_(-1, torch.where(torch.arange(blocks.shape[-1]) < counts[..., None], blocks, nb), True)
    rows, keys = torch.arange(t), torch.arange(t)
    mask = listed[:, :, rows // BLOCK][..., keys // BLOCK]
    return mask & (keys[None, :] <= rows[:, None])


@settings(deadline=None, max_examples=20)
@given(t=st.integers(1, 300), kv=st.sampled_from([(1, 1), (4, 1), (6, 2)]), d=st.sampled_from([64, 128]),
       dtype=st.sampled_from(list(HALF_DTYPES)), top_k=st.integers(1, 6), seed=st.integers(0, 2 ** 16))
@example(t=300, kv=(4, 1), d=64, dtype="bf16", top_k=2, seed=0)  # five blocks, two kept: the sink and the diagonal
def test_block_sparse_matches_masked_reference(device, t, kv, d, dtype, top_k, seed):
    dt = HALF_DTYPES[dtype]
    q, k, v = _qkv(1, t, kv[0], kv[1], d, dt, device, seed)
    index = block_sparse_index(q, k, top_k)
    out, lse = block_sparse_attention(q, k, v, index, return_lse=True)
    mask = _block_mask(index, t)
    exact, lse_exact = gqa_attention_reference(q, k, v, compute_dtype=torch.float64, return_lse=True, mask=mask)
    assert_within_rule(out, exact, gqa_attention_reference(q, k, v, compute_dtype=dt, mask=mask), dt)
    assert torch.allclose(lse.double().cpu(), lse_exact.cpu(), rtol=1e-4, atol=1e-4)


def test_block_sparse_index_keeps_the_sink_the_diagonal_and_the_best_blocks():
    t, top_k = 64 * 9, 4
    q, k, _ = _qkv(1, t, 2, 1, 64, torch.float16, "cpu", 11)
    index = block_sparse_index(q, k, top_k)
    pq = q.double().view(1, 9, 64, 2, 64).mean(2)
    pk = k.double().view(1, 9, 64, 1, 64).mean(2).expand(1, 9, 2, 64)
    scores = torch.einsum("bqhd,bkhd->bhqk", pq, pk)
    for h in range(2):
        for qb in range(9):
            n = int(index.counts[0, h, qb])
            chosen = index.blocks[0, h, qb, :n].tolist()
            assert n == min(top_k, qb + 1) and 0 in chosen and qb in chosen and chosen == sorted(chosen)
            others = [kb for kb in range(1, qb) if kb not in chosen]
            free = [kb for kb in chosen if kb not in (0, qb)]
            if others and free:  # the blocks picked on score beat every block left out
                assert min(scores[0, h, qb, free]) >= max(scores[0, h, qb, others]) - 1e-3


def test_block_sparse_with_every_block_is_dense_attention(device):
    q, k, v = _qkv(1, 200, 4, 2, 64, torch.float16, device, 12)
    out = block_sparse_attention(q, k, v, block_sparse_index(q, k, 100))
    exact = gqa_attention_reference(q, k, v, compute_dtype=torch.float64)
    assert_within_rule(out, exact, gqa_attention_reference(q, k, v, compute_dtype=torch.float16), torch.float16)


def test_block_sparse_refuses_bad_input(device):
    q, k, v = _qkv(1, 128, 2, 1, 64, torch.float16, device, 13)
    index = block_sparse_index(q, k, 2)
    with pytest.raises(ValueError, match="made for 128 tokens"):
        block_sparse_attention(q[:, :64], k[:, :64], v[:, :64], index)
    with pytest.raises(ValueError, match="index.counts must be"):
        block_sparse_attention(q, k, v, index._replace(counts=index.counts.long()))
    with pytest.raises(TypeError, match="BlockIndex"):
        block_sparse_attention(q, k, v, tuple(index))
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        block_sparse_index(q, k, 0)
    with pytest.raises(ValueError, match="index.blocks must be"):  # three dimensions: an IndexError before
        block_sparse_attention(q, k, v, index._replace(blocks=index.blocks[..., 0].contiguous()))


def _edited(t, edit):
    t = t.clone()
    edit(t)
    return t


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.add_(1000), r"counts must lie in \[1, 2\]"),  # read past the list: a crash on the CPU lane
    (lambda c: c[..., 1].zero_(), r"counts must lie in \[1, 2\]"),  # no key: NaN rows
])
def test_block_sparse_refuses_bad_counts(device, edit, message):
    q, k, v = _qkv(1, 128, 2, 1, 64, torch.float16, device, 13)
    index = block_sparse_index(q, k, 2)
    with pytest.raises(ValueError, match=message):
        block_sparse_attention(q, k, v, index._replace(counts=_edited(index.counts, edit)))


@pytest.mark.parametrize("blocks,message", [
    ([0, 0, 2], "sorted without repeats"),  # attended twice
    ([0, 1, 3], r"lie in \[0, query block\]"),  # a key block past the query block
    ([0, 1, 1], "sorted without repeats"),
    ([1, 0, 2], "sorted without repeats"),
    ([0, 1], "diagonal"),  # the diagonal block left out
])
def test_block_sparse_refuses_bad_block_lists(device, blocks, message):
    """Query block 2 of 3 lists `blocks`; every other block is valid."""
    q, k, v = _qkv(1, 64 * 3, 2, 1, 64, torch.float16, device, 23)
    index = block_sparse_index(q, k, 3)
    kb, counts = index.blocks.clone(), index.counts.clone()
    kb[0, 0, 2, :len(blocks)] = torch.tensor(blocks, dtype=torch.int32)
    counts[0, 0, 2] = len(blocks)
    with pytest.raises(ValueError, match=message):
        block_sparse_attention(q, k, v, index._replace(blocks=kb.to(device), counts=counts.to(device)))



def test_sparse_prefill_runs_each_head_with_its_pattern(device):
    """Four heads, four patterns (one default), two launches; each head against the float64
    reference over the keys its own pattern selects."""
    t = 300
    q, k, v = _qkv(1, t, 4, 2, 64, torch.bfloat16, device, 14)
    pattern = {"0": ["vertical_and_slash", 40, 110, 0.9], "1": ["stream_llm", 16, 100, 0.9], 2: ["block_sparse", 2, 0]}
    out, lse = sparse_prefill(q, k, v, pattern, dense_below=0, return_lse=True)
    vert, slash = estimate_vertical_slash(q, k)
    cols, nc, diags, nd = vertical_slash_pattern(vert[:, :1], slash[:, :1], 40, 110)
    masks = [vertical_slash_mask(t, cols.cpu(), diags.cpu())[0, 0],
             vertical_slash_mask(t, torch.arange(16)[None, None], torch.arange(100)[None, None])[0, 0],
             _block_mask(block_sparse_index(q, k, 2), t)[0, 2],
             torch.ones(t, t, dtype=torch.bool)]  # the default budget (1000, 6096) covers every key here
    mask = torch.stack(masks)[None]
    exact, lse_exact = gqa_attention_reference(q, k, v, compute_dtype=torch.float64, return_lse=True, mask=mask)
    assert_within_rule(out, exact, gqa_attention_reference(q, k, v, compute_dtype=torch.bfloat16, mask=mask),
                       torch.bfloat16)
    assert torch.allclose(lse.double().cpu(), lse_exact.cpu(), rtol=1e-4, atol=1e-4)


@settings(deadline=None, max_examples=15)
@given(t=st.integers(1, 300), heads=st.sampled_from([[0], [1, 3], [0, 1, 2, 3]]), sink=st.integers(0, 150),
       window=st.integers(1, 300), tiles=st.sampled_from([(64, 64), (128, 64), (128, 128), (64, 32)]),
       seed=st.integers(0, 2 ** 16))
@example(t=300, heads=[1, 3], sink=16, window=100, tiles=(128, 64), seed=0)   # two pattern blocks a program
@example(t=300, heads=[0, 1, 2, 3], sink=70, window=40, tiles=(64, 32), seed=1)  # the window inside the sink
def test_a_shape_heads_run_as_a_window_of_the_dense_kernel(device, t, heads, sink, window, tiles, seed):
    """Heads sharing one A-shape take the dense kernel's window, each 64-row block held to
    its first row's window as the index's diagonals are: the same keys as the index, on
    heads of either KV head, beside the other heads' own launch."""
    from kernels import tuning

    q, k, v = _qkv(1, t, 4, 2, 64, torch.bfloat16, device, seed)
    specs = [("stream_llm", sink, window) if h in heads else ("vertical_and_slash", 30, 60) for h in range(4)]
    groups = pattern_indexes(q, k, specs)
    a_heads, shape = groups["a_shape"]
    assert a_heads.tolist() == heads and shape == WindowPattern(min(sink, t), min(window, t), t)
    assert ("vertical_slash" in groups) == (len(heads) < 4)
    with tuning.forcing("prefill_attention", dict(BLOCK_M=tiles[0], BLOCK_N=tiles[1])):
        with tuning.recording() as seen:
            out, lse = sparse_prefill(q, k, v, {h: list(s) for h, s in enumerate(specs)}, dense_below=0,
                                      return_lse=True)
    assert [key for space, key in seen if space.kernel == "prefill_attention"] == [
        dict(head_dim=64, rows=tuning.pow2_bucket(t), window=tuning.pow2_bucket(min(window, t)))]
    mask = torch.zeros(1, 4, t, t, dtype=torch.bool)
    mask[:, a_heads.long().cpu()] = _mask_of_index(a_shape_index(1, len(heads), t, sink, window), t)
    if "vertical_slash" in groups:
        vs_heads, vs_index = groups["vertical_slash"]
        mask[:, vs_heads.long().cpu()] = _mask_of_index(vs_index, t)
    exact, lse_exact = gqa_attention_reference(q, k, v, compute_dtype=torch.float64, return_lse=True, mask=mask)
    lowp = gqa_attention_reference(q, k, v, compute_dtype=torch.bfloat16, mask=mask)
    assert_within_rule(out, exact, lowp, torch.bfloat16)
    assert torch.allclose(lse.double().cpu(), lse_exact.cpu(), rtol=1e-4, atol=1e-4)


def test_a_shape_heads_of_different_shapes_walk_the_index_under_the_a_shape_key(device):
    """Two A-shapes in one layer share the range walk's launch; its index says a-shape, so
    the launch table's a-shape key is the one it reads (it read the vertical-slash key)."""
    q, k, _ = _qkv(1, 200, 2, 1, 64, torch.float16, device, 19)
    groups = pattern_indexes(q, k, [("stream_llm", 16, 100), ("stream_llm", 8, 50)])
    assert list(groups) == ["vertical_slash"] and groups["vertical_slash"][1].pattern == "a-shape"
    groups = pattern_indexes(q, k, [("stream_llm", 16, 100), ("vertical_and_slash", 8, 50)])
    assert groups["vertical_slash"][1].pattern == "vertical-slash" and groups["a_shape"][1] == WindowPattern(16, 100, 200)


def test_sparse_prefill_runs_dense_below_the_crossover(device):
    q, k, v = _qkv(1, 100, 2, 1, 64, torch.float16, device, 15)
    from kernels.attention import prefill_attention
    assert torch.equal(sparse_prefill(q, k, v, {0: ["stream_llm", 4, 8, 1]}, dense_below=101), prefill_attention(q, k, v))
    assert not torch.equal(sparse_prefill(q, k, v, {0: ["stream_llm", 4, 8, 1]}, dense_below=100),
                           prefill_attention(q, k, v))


def test_head_patterns_read_minference_configs_and_refuse_bad_ones():
    assert head_patterns({"1": ["block_sparse", 100, 0, 0.95]}, 2) == [("vertical_and_slash", 1000, 6096),
                                                                       ("block_sparse", 100, 0)]
    for bad, match in ((["x"], "pattern must be a dict"), ({"a": ["stream_llm", 1, 1]}, "not a head number"),
                       ({2: ["stream_llm", 1, 1]}, "names head 2; q has 2 heads"),
                       ({0: ["dense", 1, 1]}, "type one of"), ({0: ["stream_llm", -1, 1]}, "head 0's a must be"),
                       ({0: ["block_sparse", 0, 1]}, "at least 1")):
        with pytest.raises((ValueError, TypeError), match=match):
            head_patterns(bad, 2)


@settings(deadline=None, max_examples=20)
@given(t=st.integers(1, 300), n_cols=st.integers(0, 40), n_diags=st.integers(0, 40), per_head=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_selected_pairs_count_the_mask(t, n_cols, n_diags, per_head, seed):
    cols, diags, nc, nd = _pattern(1, 2, t, n_cols, n_diags, seed, per_head)
    index = vertical_slash_index(cols, diags, t, nc, nd)
    assert torch.equal(index.selected_pairs(), vertical_slash_mask(t, _used(cols, nc), _used(diags, nd)).sum((-1, -2)))


@pytest.mark.parametrize("t,top_k", [(300, 2), (64, 1), (130, 3)])
def test_block_pairs_count_the_mask(t, top_k):
    q, k, _ = _qkv(1, t, 2, 1, 64, torch.float16, "cpu", 16)
    index = block_sparse_index(q, k, top_k)
    assert torch.equal(index.selected_pairs(), _block_mask(index, t).sum((-1, -2)))


@settings(deadline=None, max_examples=15)
@given(t=st.integers(1, 260), n_cols=st.integers(0, 30), n_diags=st.integers(0, 30), first=st.integers(0, 259),
       seed=st.integers(0, 2 ** 16))
def test_rows_mask_of_an_index_is_its_plain_mask(t, n_cols, n_diags, first, seed):
    """The perf cases' reference selects rows of a long prompt from the index itself; it must
    be the plain mask's rows."""
    cols, diags, nc, nd = _pattern(1, 2, t, n_cols, n_diags, seed, True)
    rows = torch.arange(min(first, t - 1), t)
    index = vertical_slash_index(cols, diags, t, nc, nd)
    assert torch.equal(sparse_index_rows_mask(index, rows), vertical_slash_mask(t, _used(cols, nc), _used(diags, nd))[:, :, rows])
    q, k, _ = _qkv(1, t, 2, 1, 64, torch.float16, "cpu", seed)
    blocks = block_sparse_index(q, k, 2)
    assert torch.equal(sparse_index_rows_mask(blocks, rows), _block_mask(blocks, t)[:, :, rows])


def test_the_pytorch_index_builders_take_cpu_tensors_on_a_gpu_machine(monkeypatch):
    """The index builders are PyTorch code, so a CPU pattern must work where the kernels run
    on CUDA (the GPU lane once refused it as a kernel input); the kernels still refuse CPU."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # what a GPU machine sees
    q, k, v = _qkv(1, 130, 2, 1, 64, torch.float16, "cpu", 17)
    index = vertical_slash_index(torch.tensor([[[0], [5]]]), torch.tensor([[[0], [3]]]), 130)
    assert index.intervals.device.type == "cpu" and int(index.selected_pairs().sum()) > 0
    assert block_sparse_index(q, k, 2).counts.device.type == "cpu"
    with pytest.raises(ValueError, match="need CUDA tensors"):
        vertical_slash_attention(q, k, v, index)


@pytest.mark.parametrize("pattern", [("vertical_and_slash", 30, 100), ("stream_llm", 16, 64), ("block_sparse", 2, 0)])
def test_sparse_prefill_never_waits_on_the_host(device, pattern):
    """A read-back inside the prefill stalls the GPU on every call; the perf harness found the
    whole prefill host-bound (no clean sample) while the index's checks read their values back."""
    q, k, v = _qkv(1, 200, 4, 2, 64, torch.bfloat16, device, 18)
    mixed = {0: list(pattern), 1: ["stream_llm", 8, 32], 2: ["block_sparse", 1, 0]}
    with no_host_sync():
        sparse_prefill(q, k, v, mixed, dense_below=0)


@pytest.mark.parametrize("t", [256, 200])
def test_flex_baseline_attends_exactly_the_index_keys(t):
    """The perf cases' FlexAttention baseline computes the sparse prefill's function: its
    block mask, built from the index's fields, selects exactly the index's keys."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    from torch.nn.attention.flex_attention import flex_attention

    from kernels.attention.baselines import sparse_block_mask

    q, k, v = (x.float() for x in _qkv(1, t, 4, 2, 64, torch.float16, "cpu", 19))
    cols, diags, _, _ = _pattern(1, 4, t, 9, 5, 19)
    for index in (vertical_slash_index(cols, diags, t), block_sparse_index(q.half(), k.half(), 2)):
        mask = sparse_index_rows_mask(index, torch.arange(t))
        want = gqa_attention_reference(q.double(), k.double(), v.double(), causal=True, mask=mask)
        got = flex_attention(*(x.transpose(1, 2) for x in (q, k, v)), block_mask=sparse_block_mask(index),
                             enable_gqa=True).transpose(1, 2)
        assert torch.allclose(got.double(), want, atol=1e-5), type(index).__name__


def test_the_perf_inputs_give_the_vertical_slash_pattern_something_to_find(device):
    """On Gaussian q and k the top diagonals scatter and a budget selects every key (the perf
    cases once timed vs-1000-6096 as dense attention at 32K); the perf inputs' locality keeps
    the same budget well below that."""
    from tests.perf.attention.test_sparse_prefill import long_prompt_qkv

    t, spec = 8192, [("vertical_and_slash", 250, 1524)] * 2  # the budget share of vs-1000-6096 at 32K
    density = {}
    for name in ("gaussian", "long prompt"):
        g = torch.Generator().manual_seed(20)
        q, k, _ = (_qkv(1, t, 2, 1, 64, torch.float16, device, 20) if name == "gaussian"
                   else (x.to(device) for x in long_prompt_qkv(t, 2, 1, 64, torch.float16, g, device="cpu")))
        index = pattern_indexes(q, k, spec)["vertical_slash"][1]
        density[name] = int(index.selected_pairs().sum()) / (2 * t * (t + 1) / 2)
    assert density["gaussian"] > 0.99 and density["long prompt"] < 0.75, density  # 1.0 and 0.60 when written
