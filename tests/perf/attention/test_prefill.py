"""Perf cases of kernels/attention/prefill.py: dense causal prefill from scratch, batch 1,
32 query / 8 KV heads, head dim 128, bf16, 4K to 128K tokens (256K behind --perf-sweep),
against SDPA's cuDNN, flash and efficient backends, FlexAttention with a causal block mask,
and flash-attn 2 and 4 where they import."""
import pytest
import torch

from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.attention import baselines, gqa_attention_reference, prefill_attention
from kernels.attention.cost import prefill_attention_cost
from tests.helpers.tolerance import DTYPES

pytestmark = pytest.mark.perf

PROVIDERS = [
    Provider("triton", lambda q, k, v: prefill_attention(q, k, v), kernel=True),
    Provider("sdpa_cudnn", make=lambda _: baselines.sdpa_causal("cudnn")),
    Provider("sdpa_flash", make=lambda _: baselines.sdpa_causal("flash")),
    Provider("sdpa_efficient", make=lambda _: baselines.sdpa_causal("efficient")),
    Provider("flex", make=lambda st: baselines.flex_causal(*st)),
    Provider("flash_attn", baselines.flash_attn_causal, needs="flash_attn"),
    Provider("flash_attn_4", baselines.flash_attn_4_causal, needs="flash_attn.cute"),
]


def grid(sweep):
    tokens = [4096, 8192, 32768, 131072] + ([16384, 65536, 262144] if sweep else [])
    return [dict(batch=1, tokens=t, q_heads=32, kv_heads=8, head_dim=128, dtype="bf16") for t in tokens]


def _reference_on_a_slice(q, k, v):
    """float32 reference of the last 256 query rows (the whole would need T^2 scores):
    each checked provider's output is compared on those rows (harness rtol)."""
    return gqa_attention_reference(q[:, -256:], k, v, causal=True)


@perf_bench(grid=grid, id="b{batch}-t{tokens}-h{q_heads}x{kv_heads}-d{head_dim}-{dtype}", providers=PROVIDERS)
def prefill_case(batch, tokens, q_heads, kv_heads, head_dim, dtype):
    dt = DTYPES[dtype]

    def make_inputs():
        q = torch.randn(batch, tokens, q_heads, head_dim, device="cuda", dtype=dt)
        k = torch.randn(batch, tokens, kv_heads, head_dim, device="cuda", dtype=dt)
        v = torch.randn(batch, tokens, kv_heads, head_dim, device="cuda", dtype=dt)
        return q, k, v

    return PerfCase(
        op="prefill_attention",
        shape={"batch": batch, "tokens": tokens, "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": head_dim},
        dtype=dt,
        make_inputs=make_inputs,
        cost=prefill_attention_cost(batch, tokens, q_heads, kv_heads, tokens, head_dim, 2),
        reference=_reference_on_a_slice,
        output_slice=(slice(None), slice(-256, None)),
        rtol=1e-2,
        state=(batch, q_heads, tokens),
    )


pytest_generate_tests = perf_tests(prefill_case)


def test_prefill_attention(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
