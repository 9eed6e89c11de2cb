"""Perf cases of kernels/attention/decode.py against SDPA's flash, cuDNN and efficient
backends, FlexAttention and flash-attn (where installed), same shapes and dtype, timed
together. LLaMA-3-8B decode (32 q / 8 KV heads, d 128, one token, bf16) and Mirage's GQA
(16 q / 2 KV heads, d 64, 32 query tokens, KV 4096, fp16, non-causal as in the seed)."""
import pytest
import torch

from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.attention import baselines, gqa_attention_reference, gqa_decode
from kernels.attention.cost import gqa_decode_cost
from tests.helpers.tolerance import DTYPES

pytestmark = pytest.mark.perf


PROVIDERS = [
    Provider("triton", lambda q, k, v: gqa_decode(q, k, v, causal=False), kernel=True),
    Provider("sdpa_flash", make=lambda _: baselines.sdpa("flash")),
    Provider("sdpa_cudnn", make=lambda _: baselines.sdpa("cudnn")),
    Provider("sdpa_efficient", make=lambda _: baselines.sdpa("efficient")),
    Provider("flex", baselines.flex),
    Provider("flash_attn", baselines.flash_attn, needs=baselines.flash_attn_available),
]


def grid(sweep):
    llama = [(1, 4096), (1, 32768), (8, 4096), (16, 4096)]  # (batch, kv_len)
    llama += [(1, 131072), (4, 16384), (32, 2048), (64, 1024)] if sweep else []
    return ([dict(model="llama3-8b", batch=b, q_tokens=1, q_heads=32, kv_heads=8, head_dim=128, kv_len=kv, dtype="bf16")
             for b, kv in llama]
            + [dict(model="mirage-gqa", batch=b, q_tokens=32, q_heads=16, kv_heads=2, head_dim=64, kv_len=4096,
                    dtype="fp16") for b in (1, 8, 16)])


@perf_bench(grid=grid, id="{model}-b{batch}-t{q_tokens}-kv{kv_len}-{dtype}", providers=PROVIDERS)
def gqa_decode_case(model, batch, q_tokens, q_heads, kv_heads, head_dim, kv_len, dtype):
    dt = DTYPES[dtype]

    def make_inputs():
        q = torch.randn(batch, q_tokens, q_heads, head_dim, device="cuda", dtype=dt)
        k = torch.randn(batch, kv_len, kv_heads, head_dim, device="cuda", dtype=dt)
        v = torch.randn(batch, kv_len, kv_heads, head_dim, device="cuda", dtype=dt)
        return q, k, v

    return PerfCase(
        op="gqa_decode",
        shape={"model": model, "batch": batch, "q_tokens": q_tokens, "q_heads": q_heads, "kv_heads": kv_heads,
               "head_dim": head_dim, "kv_len": kv_len},
        dtype=dt,
        make_inputs=make_inputs,
        cost=gqa_decode_cost(batch, q_tokens, q_heads, kv_heads, kv_len, head_dim, 2,
                             "bf16_tflops" if dt == torch.bfloat16 else "fp16_tflops"),
        reference=lambda q, k, v: gqa_attention_reference(q, k, v, causal=False),
        rtol=1e-2,
        pdl=True,  # split-KV kernel + merge kernel: PDL hides the merge's launch (harness/perfcase.py)
    )


pytest_generate_tests = perf_tests(gqa_decode_case)


def test_gqa_decode(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
