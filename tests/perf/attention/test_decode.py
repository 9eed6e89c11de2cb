"""Perf cases of kernels/attention/decode.py against SDPA's flash, cuDNN and efficient
backends, FlexAttention and flash-attn (where installed), same shapes and dtype, timed
together. LLaMA-3-8B decode (32 q / 8 KV heads, d 128, one token, bf16) and Mirage's GQA
(16 q / 2 KV heads, d 64, 32 query tokens, KV 4096, fp16, non-causal as in the seed)."""
import functools

import pytest
import torch

from harness.perfcase import PerfCase
from kernels.attention import baselines, gqa_attention_reference, gqa_decode
from kernels.attention.cost import gqa_decode_cost

pytestmark = pytest.mark.perf

PROVIDERS = ["triton", "sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "flex", "flash_attn"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def case_grid(sweep):
    llama = [("llama3-8b", b, 1, 32, 8, 128, kv, "bf16") for b, kv in [(1, 4096), (1, 32768), (8, 4096), (16, 4096)]]
    mirage = [("mirage-gqa", b, 32, 16, 2, 64, 4096, "fp16") for b in (1, 8, 16)]
    if sweep:
        llama += [("llama3-8b", b, 1, 32, 8, 128, kv, "bf16") for b, kv in [(1, 131072), (4, 16384), (32, 2048), (64, 1024)]]
    return llama + mirage


def pytest_generate_tests(metafunc):
    grid = case_grid(metafunc.config.getoption("perf_sweep"))
    metafunc.parametrize("spec,provider", [
        pytest.param(c, p, id=f"{c[0]}-b{c[1]}-t{c[2]}-kv{c[6]}-{c[7]}-{p}") for c in grid for p in PROVIDERS])


@functools.lru_cache(maxsize=1)
def build_case(model, batch, q_tokens, q_heads, kv_heads, head_dim, kv_len, dtype_name):
    dtype = DTYPES[dtype_name]

    def make_inputs():
        q = torch.randn(batch, q_tokens, q_heads, head_dim, device="cuda", dtype=dtype)
        k = torch.randn(batch, kv_len, kv_heads, head_dim, device="cuda", dtype=dtype)
        v = torch.randn(batch, kv_len, kv_heads, head_dim, device="cuda", dtype=dtype)
        return q, k, v

    providers = {
        "triton": lambda q, k, v: gqa_decode(q, k, v, causal=False),
        "sdpa_flash": baselines.sdpa("flash"),
        "sdpa_cudnn": baselines.sdpa("cudnn"),
        "sdpa_efficient": baselines.sdpa("efficient"),
        "flex": baselines.flex,
    }
    unavailable = {}
    why = baselines.flash_attn_available()
    if why is None:
        providers["flash_attn"] = baselines.flash_attn
    else:
        unavailable["flash_attn"] = why
    return PerfCase(
        op="gqa_decode",
        shape={"model": model, "batch": batch, "q_tokens": q_tokens, "q_heads": q_heads, "kv_heads": kv_heads,
               "head_dim": head_dim, "kv_len": kv_len},
        dtype=dtype,
        make_inputs=make_inputs,
        providers=providers,
        cost=gqa_decode_cost(batch, q_tokens, q_heads, kv_heads, kv_len, head_dim, 2,
                             "bf16_tflops" if dtype == torch.bfloat16 else "fp16_tflops"),
        reference=lambda q, k, v: gqa_attention_reference(q, k, v, causal=False),
        rtol=1e-2,
        unavailable=unavailable,
        pdl=True,  # split-KV kernel + merge kernel: PDL hides the merge's launch (harness/perfcase.py)
    )


def test_gqa_decode(spec, provider, perf, benchmark):
    perf.run(build_case(*spec), provider, benchmark)
