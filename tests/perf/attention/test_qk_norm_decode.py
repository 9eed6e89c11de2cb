"""Perf cases of QK-norm attention (gqa_decode with q/k norm weights, Chameleon-7B: 32 q /
32 KV heads, d 128, one token, KV 4096, bf16) at batch 1, 8, 16. Baselines normalize q and
the whole K cache with PyTorch, then attend with SDPA (flash, cuDNN), or compile both."""
import pytest
import torch

from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.attention import baselines, gqa_attention_reference, gqa_decode
from kernels.attention.cost import gqa_decode_cost
from kernels.norm import rms_norm_reference
from kernels.norm.baselines import torch_rms_norm
from kernels.providers import compiled

pytestmark = pytest.mark.perf

EPS = 1e-6


def _unfused(attend):
    def run(q, k, v, wq, wk):
        return attend(torch_rms_norm(q, wq, EPS), torch_rms_norm(k, wk, EPS), v)
    return run


def _eager_math(q, k, v, wq, wk):
    F = torch.nn.functional
    qn, kn = F.rms_norm(q, (q.shape[-1],), wq, EPS), F.rms_norm(k, (k.shape[-1],), wk, EPS)
    return F.scaled_dot_product_attention(qn.transpose(1, 2), kn.transpose(1, 2), v.transpose(1, 2), enable_gqa=True).transpose(1, 2)


PROVIDERS = [
    Provider("triton", kernel=True, fn=lambda q, k, v, wq, wk: gqa_decode(q, k, v, causal=False, q_norm_weight=wq,
                                                                          k_norm_weight=wk, qk_norm_eps=EPS)),
    Provider("sdpa_flash", make=lambda _: _unfused(baselines.sdpa("flash"))),
    Provider("sdpa_cudnn", make=lambda _: _unfused(baselines.sdpa("cudnn"))),
    Provider("compile", make=lambda _: compiled(_eager_math)),
]


def grid(sweep):
    return [dict(batch=b, kv_len=4096) for b in (1, 8, 16)]


@perf_bench(grid=grid, id="chameleon7b-b{batch}-kv{kv_len}-bf16", providers=PROVIDERS)
def qk_norm_decode(batch, kv_len):
    dt, heads, d = torch.bfloat16, 32, 128

    def make_inputs():
        return (torch.randn(batch, 1, heads, d, device="cuda", dtype=dt) * 4,
                torch.randn(batch, kv_len, heads, d, device="cuda", dtype=dt) * 4,
                torch.randn(batch, kv_len, heads, d, device="cuda", dtype=dt),
                1 + 0.1 * torch.randn(d, device="cuda", dtype=dt), 1 + 0.1 * torch.randn(d, device="cuda", dtype=dt))

    def reference(q, k, v, wq, wk):
        return gqa_attention_reference(rms_norm_reference(q, wq, EPS), rms_norm_reference(k, wk, EPS), v, causal=False)

    return PerfCase(
        op="qk_norm_decode", shape={"model": "chameleon-7b", "batch": batch, "q_heads": heads, "kv_heads": heads,
                                    "head_dim": d, "kv_len": kv_len},
        dtype=dt, make_inputs=make_inputs,
        cost=gqa_decode_cost(batch, 1, heads, heads, kv_len, d, 2),
        reference=reference, rtol=1e-2,
        pdl=True,  # split-KV kernel + merge kernel: PDL hides the merge's launch (harness/perfcase.py)
    )


pytest_generate_tests = perf_tests(qk_norm_decode)


def test_qk_norm_decode(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
