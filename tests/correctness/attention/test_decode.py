"""kernels/attention/decode.py == kernels/attention/reference.py on any valid input.

Tolerance (the rule flash-attention's own tests apply): the kernel's largest error against the
float64 reference may be at most twice that of the reference computed in the input dtype,
plus one rounding of the output dtype at the output's largest magnitude. Both lanes run
fp16 and bf16 (on the CPU lane the kernel upcasts bf16 operands first: kernels/interpreter.py).
"""
import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from kernels.attention import gqa_attention_reference, gqa_decode
from kernels.norm import rms_norm_reference
from tests.helpers.tolerance import HALF_DTYPES, assert_within_rule, max_abs_err, nonfinite_mismatch

pytestmark = pytest.mark.correctness

DTYPES = list(HALF_DTYPES)


def make_inputs(batch, q_tokens, kv_heads, group, head_dim, capacity, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_tokens, kv_heads * group, head_dim, generator=g)
    k = torch.randn(batch, capacity, kv_heads, head_dim, generator=g)
    v = torch.randn(batch, capacity, kv_heads, head_dim, generator=g)
    return [t.to(dtype).to(device) for t in (q, k, v)]


@given(batch=st.integers(1, 3), q_tokens=st.integers(1, 4), kv_heads=st.sampled_from([1, 2]),
       group=st.sampled_from([1, 2, 4]), head_dim=st.sampled_from([64, 128]), capacity=st.integers(1, 300),
       lens_frac=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), causal=st.booleans(),
       num_splits=st.sampled_from([None, 1, 3]), fixup=st.sampled_from(["auto", "kernel", "merge"]), same_len=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1))
@example(batch=1, q_tokens=1, kv_heads=1, group=1, head_dim=64, capacity=1, lens_frac=[1.0] * 3,
         causal=True, num_splits=None, fixup="kernel", same_len=False, dtype="fp16", seed=0)
@example(batch=2, q_tokens=32, kv_heads=2, group=8, head_dim=64, capacity=200, lens_frac=[1.0, 0.1, 0.0],
         causal=True, num_splits=4, fixup="kernel", same_len=False, dtype="fp16", seed=1)  # Mirage's group x 32 tokens; a short and an empty sequence
@example(batch=1, q_tokens=3, kv_heads=1, group=4, head_dim=128, capacity=130, lens_frac=[0.01, 0, 0],
         causal=True, num_splits=2, fixup="merge", same_len=True, dtype="fp16", seed=2)  # kv_len 1 < q_tokens: early queries see no key
@example(batch=2, q_tokens=2, kv_heads=2, group=2, head_dim=64, capacity=150, lens_frac=[1.0, 0.5, 0],
         causal=True, num_splits=3, fixup="kernel", same_len=False, dtype="bf16", seed=3)  # bf16: the interpreter's arithmetic on bits
def test_gqa_decode_matches_reference(device, batch, q_tokens, kv_heads, group, head_dim, capacity, lens_frac,
                                      causal, num_splits, fixup, same_len, dtype, seed):
    """fixup: the last chunk merges in the kernel, or a second merge kernel does; same_len:
    kv_lens given as one int for the whole batch."""
    dt = HALF_DTYPES[dtype]
    q, k, v = make_inputs(batch, q_tokens, kv_heads, group, head_dim, capacity, dt, device, seed)
    lens = [math.ceil(f * capacity) for f in lens_frac[:batch]]
    if same_len:
        lens = [lens[0]] * batch
    kv_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    before = [t.clone() for t in (q, k, v, kv_lens)]
    out = torch.full_like(q, float("nan"))  # poison

    got, lse = gqa_decode(q, k, v, lens[0] if same_len else kv_lens, causal=causal, num_splits=num_splits,
                          return_lse=True, out=out, config={"fixup": fixup})

    assert got is out
    assert all(torch.equal(a, b) for a, b in zip((q, k, v, kv_lens), before)), "inputs were modified"
    exact, exact_lse = gqa_attention_reference(q, k, v, kv_lens, causal=causal, compute_dtype=torch.float64, return_lse=True)
    lowp = gqa_attention_reference(q, k, v, kv_lens, causal=causal, compute_dtype=dt)
    assert not torch.isnan(got).any(), "output has NaN: an element was not written"
    assert_within_rule(got, exact, lowp, dt)
    # log-sum-exp: -inf exactly where a query saw no key, else close in float32.
    lse64, exact_lse = lse.double().cpu(), exact_lse.cpu()
    assert torch.equal(torch.isinf(lse64), torch.isinf(exact_lse))
    finite = ~torch.isinf(exact_lse)
    assert torch.allclose(lse64[finite], exact_lse[finite], rtol=0, atol=1e-2 + 1e-3 * exact_lse[finite].abs().max().item() if finite.any() else 1)


@given(batch=st.integers(1, 2), q_tokens=st.integers(1, 3), group=st.sampled_from([1, 4]),
       head_dim=st.sampled_from([64, 128]), capacity=st.integers(1, 200), num_splits=st.sampled_from([None, 1, 2]),
       scale=st.sampled_from([0.05, 1.0, 30.0]), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1))
@example(batch=1, q_tokens=1, group=4, head_dim=128, capacity=130, num_splits=None, scale=30.0, dtype="fp16", seed=0)
@example(batch=1, q_tokens=2, group=4, head_dim=64, capacity=70, num_splits=2, scale=30.0, dtype="bf16", seed=1)
def test_qk_norm_attention_matches_reference(device, batch, q_tokens, group, head_dim, capacity, num_splits, scale, dtype, seed):
    """QK-norm (Chameleon): attention(RMSNorm(q) wq, RMSNorm(k) wk, v), the norm fused in the
    kernel; q and k drawn at scales far from 1 so that a missing norm shows."""
    dt = HALF_DTYPES[dtype]
    q, k, v = make_inputs(batch, q_tokens, 2, group, head_dim, capacity, dt, device, seed)
    q, k = (q.float() * scale).to(dt), (k.float() * scale).to(dt)
    g = torch.Generator().manual_seed(seed + 1)
    wq = (1 + 0.3 * torch.randn(head_dim, generator=g)).to(dt).to(device)
    wk = (1 + 0.3 * torch.randn(head_dim, generator=g)).to(dt).to(device)
    got = gqa_decode(q, k, v, num_splits=num_splits, q_norm_weight=wq, k_norm_weight=wk, qk_norm_eps=1e-6)

    def ref(cd):
        qn = rms_norm_reference(q, wq, 1e-6, cd).to(cd)
        kn = rms_norm_reference(k, wk, 1e-6, cd).to(cd)
        return gqa_attention_reference(qn, kn, v.to(cd), compute_dtype=cd)

    exact, lowp = ref(torch.float64), ref(dt).to(dt)
    assert_within_rule(got, exact, lowp, dt)


def test_qk_norm_needs_both_weights(device):
    q, k, v = make_inputs(1, 1, 1, 1, 64, 8, torch.float16, device, 8)
    with pytest.raises(ValueError, match="both q_norm_weight and k_norm_weight"):
        gqa_decode(q, k, v, q_norm_weight=torch.ones(64, dtype=torch.float16, device=device))
    with pytest.raises(ValueError, match=r"k_norm_weight must have shape \(64,\)"):
        gqa_decode(q, k, v, q_norm_weight=torch.ones(64, dtype=torch.float16, device=device),
                   k_norm_weight=torch.ones(32, dtype=torch.float16, device=device))


def test_splits_do_not_change_the_result(device):
    """The same inputs with 1 chunk and with many agree to float32 rounding of the merge."""
    q, k, v = make_inputs(1, 2, 2, 4, 128, 1000, torch.float16, device, 3)
    one = gqa_decode(q, k, v, num_splits=1).double()
    many = gqa_decode(q, k, v, num_splits=9).double()
    assert (one - many).abs().max().item() <= 2e-3


@pytest.mark.parametrize("block_n,warps", [(16, 4), (16, 2), (32, 2)])
def test_the_short_cache_candidates_compute_the_same_attention(device, block_n, warps):
    """The tuner's extra launches for short caches (a shared-prefix call's suffixes): 16-key
    blocks and 2 warps, over lengths that end mid-block, split and not."""
    from kernels.attention.decode import _candidates

    assert dict(block_n=block_n, num_warps=warps, num_stages=2, waves=1) in _candidates(128, 8, 1024, 16)
    assert not any(c["block_n"] == 16 for c in _candidates(128, 8, 1024, 4096))
    q, k, v = make_inputs(3, 1, 1, 8, 128, 40, torch.bfloat16, device, 9)
    lens = torch.tensor([40, 17, 1], dtype=torch.int32, device=device)
    exact = gqa_attention_reference(q, k, v, lens, causal=True, compute_dtype=torch.float64)
    lowp = gqa_attention_reference(q, k, v, lens, causal=True, compute_dtype=torch.bfloat16)
    for splits in (1, 2):
        got = gqa_decode(q, k, v, lens, num_splits=splits,
                         config=dict(block_n=block_n, num_warps=warps, num_stages=2, waves=1))
        assert_within_rule(got, exact, lowp, torch.bfloat16)


def test_merge_reads_chunks_in_several_rounds(device, monkeypatch):
    """More chunks than the merge kernel reads at once (MERGE_BLOCK_S, lowered to 2 here): its
    rounds combine into the same attention and log-sum-exp as one chunk gives. Keys grow
    along the sequence, so each round raises the running maximum and rescales the last."""
    import kernels.attention.decode as decode

    q, k, v = make_inputs(2, 3, 2, 2, 64, 700, torch.float16, device, 5)
    k = (k.float() * torch.linspace(0.2, 2.0, 700, device=device)[None, :, None, None]).to(k.dtype)
    one, lse_one = gqa_decode(q, k, v, num_splits=1, return_lse=True)
    monkeypatch.setattr(decode, "MERGE_BLOCK_S", 2)
    many, lse_many = gqa_decode(q, k, v, num_splits=5, return_lse=True, config={"fixup": "merge"})
    assert (one.double() - many.double()).abs().max().item() <= 2e-3
    assert (lse_one - lse_many).abs().max().item() <= 1e-4


def test_lengths_beyond_max_kv_len_are_read_whole(device):
    """max_kv_len only sizes the split: a longer sequence is still attended to its end."""
    q, k, v = make_inputs(1, 1, 2, 4, 64, 1000, torch.float16, device, 6)
    exact = gqa_attention_reference(q, k, v, compute_dtype=torch.float64)
    for lens in (1000, torch.tensor([1000], dtype=torch.int32, device=device)):
        got = gqa_decode(q, k, v, lens, max_kv_len=100, causal=False)
        assert (got.double().cpu() - exact.cpu()).abs().max().item() <= 2e-3


def test_lse_merges_two_halves_into_the_whole(device):
    """Attention over [A | B] equals the log-sum-exp merge of attention over A and over B:
    the property shared-prefix attention relies on."""
    q, k, v = make_inputs(2, 1, 1, 8, 64, 256, torch.float16, device, 4)
    whole = gqa_decode(q, k, v, causal=False).double()
    oa, la = gqa_decode(q, k[:, :100], v[:, :100], causal=False, return_lse=True)
    ob, lb = gqa_decode(q, k[:, 100:], v[:, 100:], causal=False, return_lse=True)
    m = torch.maximum(la, lb)
    wa, wb = torch.exp(la - m), torch.exp(lb - m)                          # (B, H, T)
    wa, wb = wa.transpose(1, 2)[..., None], wb.transpose(1, 2)[..., None]  # (B, T, H, 1)
    merged = (wa * oa.double() + wb * ob.double()) / (wa + wb)
    assert (merged - whole).abs().max().item() <= 2e-3


def test_rejects_bad_input(device):
    q, k, v = make_inputs(2, 1, 2, 2, 64, 16, torch.float16, device, 5)
    with pytest.raises(ValueError, match="mismatched groups: 4 query heads is not a multiple of 3 KV heads"):
        gqa_decode(q, *make_inputs(2, 1, 3, 1, 64, 16, torch.float16, device, 6)[1:])
    with pytest.raises(ValueError, match="unsupported head dim 96"):
        gqa_decode(*make_inputs(2, 1, 2, 2, 96, 16, torch.float16, device, 7))
    with pytest.raises(TypeError, match="q has dtype float32"):
        gqa_decode(q.float(), k, v)
    with pytest.raises(TypeError, match="share one dtype"):
        gqa_decode(q, k.to(torch.bfloat16), v)
    with pytest.raises(ValueError, match="batch"):
        gqa_decode(q[:1], k, v)
    with pytest.raises(ValueError, match=r"kv_lens must lie in \[0, 16\]"):
        gqa_decode(q, k, v, torch.tensor([3, 17], dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match=r"kv_lens 17 must lie in \[0, 16\]"):
        gqa_decode(q, k, v, 17)
    with pytest.raises(TypeError, match="kv_lens must be an int"):
        gqa_decode(q, k, v, 3.0)
    with pytest.raises(ValueError, match="must be 4-D"):
        gqa_decode(q[0], k, v)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on NaN arithmetic
@pytest.mark.parametrize("num_splits,fixup", [(1, "auto"), (3, "kernel"), (3, "merge")], ids=["whole", "split-kernel", "split-merge"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_nan_and_inf_follow_the_math(device, where, value, num_splits, fixup):
    """One NaN or infinity in q, k or v: the output and the log-sum-exp are NaN or infinite
    where the float64 reference's are (a NaN score: NaN lse; a +inf score: lse +inf), on
    every path of the split, never a row taken for one that saw no key (lse -inf)."""
    q, k, v = make_inputs(2, 2, 2, 2, 64, 40, torch.float16, device, 9)
    {"q": q, "k": k, "v": v}[where][0, 1, 0, 3] = value
    got, lse = gqa_decode(q, k, v, 30, num_splits=num_splits, return_lse=True, config={"fixup": fixup})
    lens = torch.full((2,), 30, dtype=torch.int32)
    exact, exact_lse = gqa_attention_reference(q, k, v, lens, compute_dtype=torch.float64, return_lse=True)
    assert nonfinite_mismatch(got, exact) is None, nonfinite_mismatch(got, exact)
    assert nonfinite_mismatch(lse, exact_lse) is None, f"lse {lse[0].tolist()} against {exact_lse[0].tolist()}"


def test_int_and_bool_options_are_checked(device):
    """num_splits=0 or a negative count used to become 1 silently; options of the wrong type
    (a bool for an int, a float, a string) are refused by name."""
    q, k, v = make_inputs(1, 1, 1, 2, 64, 16, torch.float16, device, 5)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="num_splits must be an int >= 1"):
            gqa_decode(q, k, v, num_splits=bad)
    for bad in (2.0, True, "2"):
        with pytest.raises(TypeError, match="num_splits must be an int"):
            gqa_decode(q, k, v, num_splits=bad)
    with pytest.raises(ValueError, match="max_kv_len must be an int >= 0"):
        gqa_decode(q, k, v, max_kv_len=-1)
    with pytest.raises(TypeError, match="max_kv_len must be an int"):
        gqa_decode(q, k, v, max_kv_len=8.5)
    for name in ("causal", "return_lse", "validate_lens"):
        with pytest.raises(TypeError, match=f"{name} must be a bool"):
            gqa_decode(q, k, v, **{name: 1})
    with pytest.raises(TypeError, match="scale must be a number"):
        gqa_decode(q, k, v, scale="0.1")
    with pytest.raises(ValueError, match="scale must be a finite number"):
        gqa_decode(q, k, v, scale=float("nan"))
    with pytest.raises(ValueError, match="qk_norm_eps must be a finite number >= 0"):
        gqa_decode(q, k, v, qk_norm_eps=-1.0)
    for option, message in (({"waves": float("inf")}, "waves must be a positive finite number"),  # unchecked before
                            ({"num_warps": 3}, "num_warps must be a power of two"),
                            ({"num_stages": 0}, "num_stages must be an int from 1 to 8"),
                            ({"nearest": 1}, "nearest must be a bool"),
                            ({"unsplit_stages": 2.5}, "unsplit_stages must be an int")):
        with pytest.raises((ValueError, TypeError), match=message):
            gqa_decode(q, k, v, config=option)


def test_out_and_kv_lens_layouts(device):
    """out overlapping an input is refused; out must have unit stride along head_dim (other
    strides were silently taken as 1); a strided kv_lens is read as given."""
    q, k, v = make_inputs(2, 1, 2, 2, 64, 16, torch.float16, device, 5)
    with pytest.raises(ValueError, match="out must not overlap q"):
        gqa_decode(q, k, v, out=q)
    with pytest.raises(ValueError, match="out must not overlap k_cache"):
        gqa_decode(q, k, v, out=k.view(-1)[: q.numel()].view(q.shape))
    wide = torch.zeros(*q.shape[:3], 128, dtype=q.dtype, device=device)
    with pytest.raises(ValueError, match="out must have unit stride along head_dim"):
        gqa_decode(q, k, v, out=wide[..., ::2])
    lens = torch.tensor([5, 99, 11, 99], dtype=torch.int32, device=device)[::2]
    exact = gqa_attention_reference(q, k, v, lens.contiguous(), compute_dtype=torch.float64)
    assert max_abs_err(gqa_decode(q, k, v, lens), exact) <= 2e-3


def test_the_long_cache_candidates_compute_the_same_attention(device):
    """The tuner's 8-warp launches for long caches (a copy-bound read): offered only there,
    and the same attention over a split cache whose length ends mid-block."""
    from kernels.attention.decode import _candidates

    assert dict(block_n=64, num_warps=8, num_stages=2, waves=4) in _candidates(128, 4, 8, 32768)
    assert not any(c.get("num_warps") == 8 for c in _candidates(128, 4, 8, 4096))
    q, k, v = make_inputs(1, 1, 2, 4, 128, 700, torch.bfloat16, device, 11)
    exact = gqa_attention_reference(q, k, v, None, causal=True, compute_dtype=torch.float64)
    lowp = gqa_attention_reference(q, k, v, None, causal=True, compute_dtype=torch.bfloat16)
    for block_n in (64, 128):
        got = gqa_decode(q, k, v, num_splits=3, config=dict(block_n=block_n, num_warps=8, num_stages=2, waves=4))
        assert_within_rule(got, exact, lowp, torch.bfloat16)


def test_zero_query_heads_give_an_empty_result(device):
    """An empty q (no query heads) returns empty out and lse, as empty batches do (the split
    plan divided by the heads' count: a ZeroDivisionError)."""
    _, k, v = make_inputs(2, 1, 2, 2, 64, 16, torch.float16, device, 6)
    q = torch.empty(2, 1, 0, 64, dtype=torch.float16, device=device)
    out, lse = gqa_decode(q, k, v, torch.tensor([5, 7], device=device), return_lse=True)
    assert out.shape == (2, 1, 0, 64) and lse.shape == (2, 0, 1)
