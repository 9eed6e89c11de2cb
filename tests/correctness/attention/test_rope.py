"""kernels/attention/rope.py == kernels/attention/reference.py (rope_kv_write_reference).

Tolerance: the kernel's largest error against float64 at most twice that of
the reference in the input dtype, plus one rounding of the output. Cached positions other
than the new ones must be untouched and v must be copied bit for bit.
"""
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from kernels.attention import rope_kv_write, rope_kv_write_reference, rope_tables
from tests.helpers.tolerance import HALF_DTYPES as DTYPES, within_rule

pytestmark = pytest.mark.correctness


@given(batch=st.integers(1, 3), q_tokens=st.integers(1, 4), kv_heads=st.integers(1, 3), group=st.sampled_from([1, 2, 4]),
       head_dim=st.sampled_from([64, 128]), pos=st.integers(0, 5000), qk_norm=st.booleans(),
       dtype=st.sampled_from(list(DTYPES)), block_t=st.sampled_from([None, 2, 4, 8]), seed=st.integers(0, 2**31 - 1))
@example(batch=1, q_tokens=1, kv_heads=8, group=4, head_dim=128, pos=4096, qk_norm=False, dtype="fp16", block_t=None,
         seed=0)
@example(batch=2, q_tokens=3, kv_heads=2, group=1, head_dim=64, pos=0, qk_norm=True, dtype="fp16", block_t=None, seed=1)
@example(batch=2, q_tokens=2, kv_heads=2, group=2, head_dim=64, pos=7, qk_norm=True, dtype="bf16", block_t=None, seed=2)
# several rows a program (a prompt's launch), the last block part-full and blocks across sequences
@example(batch=3, q_tokens=3, kv_heads=2, group=2, head_dim=128, pos=5, qk_norm=True, dtype="bf16", block_t=4, seed=3)
def test_rope_kv_write_matches_reference(device, batch, q_tokens, kv_heads, group, head_dim, pos, qk_norm, dtype,
                                         block_t, seed):
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    hq, D = kv_heads * group, head_dim
    capacity = pos + q_tokens + 2
    # q, k, v as views of one fused QKV output, as a decode layer produces them
    qkv = (torch.randn(batch, q_tokens, (hq + 2 * kv_heads) * D, generator=g) * 3).to(dt).to(device)
    q, k, v = qkv.split([hq * D, kv_heads * D, kv_heads * D], dim=-1)
    q, k, v = (t.view(batch, q_tokens, -1, D) for t in (q, k, v))
    k_cache = torch.randn(batch, capacity, kv_heads, D, generator=g).to(dt).to(device)
    v_cache = torch.randn(batch, capacity, kv_heads, D, generator=g).to(dt).to(device)
    qw = kw = None
    if qk_norm:
        qw = (1 + 0.2 * torch.randn(D, generator=g)).to(dt).to(device)
        kw = (1 + 0.2 * torch.randn(D, generator=g)).to(dt).to(device)
    cos, sin = rope_tables(capacity, D, 10000.0, device)
    kc, vc = k_cache.clone(), v_cache.clone()
    config = None if block_t is None else dict(BLOCK_T=block_t, num_warps=1 if block_t < 4 else 2)
    got_q = rope_kv_write(q, k, v, kc, vc, pos, cos, sin, qw, kw, 1e-6, config=config)

    cos64, sin64 = rope_tables(capacity, D, 10000.0, "cpu", torch.float64)
    exact_kc, exact_vc = k_cache.cpu().double(), v_cache.cpu().double()
    exact_q = rope_kv_write_reference(q.cpu(), k.cpu(), v.cpu(), exact_kc, exact_vc, pos, cos64, sin64,
                                      None if qw is None else qw.cpu(), None if kw is None else kw.cpu(), 1e-6,
                                      torch.float64)
    lowp_kc, lowp_vc = k_cache.clone(), v_cache.clone()
    lowp_q = rope_kv_write_reference(q, k, v, lowp_kc, lowp_vc, pos, cos, sin, qw, kw, 1e-6, dt)

    assert got_q.shape == q.shape and got_q.dtype == dt and got_q.is_contiguous()
    new = slice(pos, pos + q_tokens)
    ok, msg = within_rule(got_q, exact_q, lowp_q, dt)
    assert ok, "q: " + msg
    ok, msg = within_rule(kc[:, new], exact_kc[:, new], lowp_kc[:, new], dt)
    assert ok, "k cache: " + msg
    assert torch.equal(vc[:, new], v), "v was not copied exactly into the cache"
    old = torch.ones(capacity, dtype=torch.bool)
    old[new] = False
    assert torch.equal(kc[:, old], k_cache[:, old]) and torch.equal(vc[:, old], v_cache[:, old]), \
        "positions outside pos .. pos + T - 1 were written"


def test_rope_tables_rotate_by_the_position_angle():
    cos, sin = rope_tables(5, 4, 100.0, dtype=torch.float64)
    # pair i turns by p * 100^(-2i/4): pair 0 by p rad, pair 1 by p / 10 rad
    assert torch.allclose(cos[3], torch.tensor([3.0, 0.3], dtype=torch.float64).cos())
    assert torch.allclose(sin[3], torch.tensor([3.0, 0.3], dtype=torch.float64).sin())


def test_rope_kv_write_rejects_bad_input(device):
    q = torch.randn(1, 1, 4, 64, device=device, dtype=torch.float16)
    k = v = torch.randn(1, 1, 2, 64, device=device, dtype=torch.float16)
    kc = vc = torch.zeros(1, 8, 2, 64, device=device, dtype=torch.float16)
    cos, sin = rope_tables(8, 64, 1e4, device)
    with pytest.raises(ValueError, match="do not fit the cache capacity 8"):
        rope_kv_write(q, k, v, kc, vc, 8, cos, sin)
    with pytest.raises(ValueError, match="covers 4 positions"):
        rope_kv_write(q, k, v, kc, vc, 5, cos[:4], sin[:4])
    with pytest.raises(ValueError, match="head_dim 32 is not supported"):
        rope_kv_write(q[..., :32], k[..., :32], v[..., :32], kc[..., :32], vc[..., :32], 0, cos, sin)
    with pytest.raises(TypeError, match="v has dtype"):
        rope_kv_write(q, k, v.float(), kc, vc, 0, cos, sin)
    with pytest.raises(TypeError, match="cos has dtype float64; it must be float32"):
        rope_kv_write(q, k, v, kc, vc, 0, cos.double(), sin)
    with pytest.raises(ValueError, match="float32 table"):
        rope_kv_write(q, k, v, kc, vc, 0, cos[:, :16], sin)
    with pytest.raises(ValueError, match="needs both"):
        rope_kv_write(q, k, v, kc, vc, 0, cos, sin, q_norm_weight=torch.ones(64, device=device, dtype=torch.float16))
    kc, vc = (torch.zeros(1, 8, 2, 64, device=device, dtype=torch.float16) for _ in range(2))
    for bad in (dict(BLOCK_T=3), dict(BLOCK_T=0), dict(num_warps=6), dict(BLOCK_T=2.0)):
        with pytest.raises(ValueError, match="must be a power of two"):
            rope_kv_write(q, k, v, kc, vc, 0, cos, sin, config=bad)
    with pytest.raises(ValueError, match="unknown launch option"):
        rope_kv_write(q, k, v, kc, vc, 0, cos, sin, config=dict(ROWS=2))


def test_rope_kv_write_prompt_rows_share_programs():
    """A prompt's rows go several to a program (a program per row and head was bound by
    starting programs); a decode step's stay one to a program, each head its own."""
    from kernels.attention.rope import LAUNCH

    decode, prompt = LAUNCH.default(rows=16, head_dim=128), LAUNCH.default(rows=4096, head_dim=128)
    assert decode["BLOCK_T"] == 1 and prompt["BLOCK_T"] >= 16
    for rows in (1, 16, 4096):
        for head_dim in (64, 128):
            for cand in LAUNCH.search_space(dict(rows=rows, head_dim=head_dim)):
                LAUNCH.check(cand)


def test_rope_kv_write_checks_pos_and_the_caches(device):
    """pos is a Python int (a tensor would need a device sync to check it against the cache:
    refused, as are floats and bools); the caches are written in place, so they must not
    share memory with each other or with any input."""
    q = torch.randn(1, 1, 4, 64, device=device, dtype=torch.float16)
    k = v = torch.randn(1, 1, 2, 64, device=device, dtype=torch.float16)
    kc, vc = (torch.zeros(1, 8, 2, 64, device=device, dtype=torch.float16) for _ in range(2))
    cos, sin = rope_tables(8, 64, 1e4, device)
    for pos in (torch.tensor(2), torch.tensor(2, device=device), 2.0, True, "2", None):
        with pytest.raises(TypeError, match="pos must be an int"):
            rope_kv_write(q, k, v, kc, vc, pos, cos, sin)
    with pytest.raises(ValueError, match="k_cache must not overlap v_cache"):
        rope_kv_write(q, k, v, kc, kc, 2, cos, sin)
    both = torch.zeros(1, 9, 2, 64, device=device, dtype=torch.float16)
    with pytest.raises(ValueError, match="k_cache must not overlap v_cache"):
        rope_kv_write(q, k, v, both[:, :8], both[:, 1:], 2, cos, sin)
    with pytest.raises(ValueError, match="k_cache must not overlap k"):
        rope_kv_write(q, kc[:, 2:3], v, kc, vc, 2, cos, sin)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        rope_kv_write(q, k, v, kc, vc, 2, cos, sin, eps=-1.0)
    # numpy-style integers are ints too
    import numpy as np
    rope_kv_write(q, k, v, kc, vc, np.int64(2), cos, sin)
    assert torch.equal(vc[:, 2], v[:, 0])
