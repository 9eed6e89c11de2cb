"""Perf cases of kernels/attention/rope.py (rope_kv_write: RoPE of q and k and the write of
k and v into the KV cache, between a layer's QKV projection and its attention), LLaMA-3-8B
heads (32 q / 8 KV, head dim 128), bf16: a decode step at batch 1 and 16 and a prompt of
4096 and 8192 tokens, q, k and v as views of one QKV output, as a layer hands them over.
Baselines: the same operation as model code (eager) and compiled."""
import pytest
import torch

from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.attention import rope_kv_write, rope_kv_write_reference, rope_tables
from kernels.attention.baselines import torch_rope_kv_write
from kernels.attention.cost import rope_kv_write_cost
from kernels.providers import compiled

pytestmark = pytest.mark.perf

Q_HEADS, KV_HEADS, HEAD_DIM, THETA = 32, 8, 128, 500000.0

PROVIDERS = [
    Provider("triton", rope_kv_write, kernel=True),
    Provider("eager", torch_rope_kv_write),
    Provider("compile", make=lambda _: compiled(torch_rope_kv_write)),
]


def grid(sweep):
    return ([dict(batch=b, tokens=1, pos=4096) for b in (1, 16)]
            + [dict(batch=1, tokens=t, pos=0) for t in (4096, 8192) + ((32768,) if sweep else ())])


@perf_bench(grid=grid, id="llama3-8b-b{batch}-t{tokens}-pos{pos}", providers=PROVIDERS)
def rope_case(batch, tokens, pos):
    dt = torch.bfloat16
    capacity = pos + tokens

    def make_inputs():
        cos, sin = rope_tables(capacity, HEAD_DIM, THETA, "cuda")
        k_cache = torch.zeros(batch, capacity, KV_HEADS, HEAD_DIM, device="cuda", dtype=dt)
        v_cache = torch.zeros_like(k_cache)
        qkv = torch.randn(batch, tokens, (Q_HEADS + 2 * KV_HEADS) * HEAD_DIM, device="cuda", dtype=dt)
        q, k, v = qkv.split([Q_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        q, k, v = (t.view(batch, tokens, -1, HEAD_DIM) for t in (q, k, v))
        return q, k, v, k_cache, v_cache, pos, cos, sin

    return PerfCase(
        op="rope_kv_write", shape={"model": "llama3-8b", "batch": batch, "tokens": tokens, "pos": pos,
                                   "q_heads": Q_HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM},
        dtype=dt, make_inputs=make_inputs,
        cost=rope_kv_write_cost(batch * tokens, Q_HEADS, KV_HEADS, HEAD_DIM, 2),
        # the returned q (the caches' writes are checked by tests/correctness/attention/test_rope.py)
        reference=lambda q, k, v, kc, vc, p, c, s: rope_kv_write_reference(q, k, v, kc.clone(), vc.clone(), p, c, s),
        rtol=1e-2,  # one rounding of bf16 output apart at most
    )


pytest_generate_tests = perf_tests(rope_case)


def test_rope_kv_write(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
