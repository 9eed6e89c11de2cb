"""Whole-model prefill with dynamic sparse attention (GPU), as MInference's end-to-end table
times it: a LLaMA-3-8B-dimension model (random weights, 32 layers) prefills one long prompt
with no KV cache kept (Transformer.prefill_logits), every head of every layer on
vertical-slash with MInference's default budget (1000, 6096), against the same model with
dense attention (the suite's kernels, and eager PyTorch with SDPA). 32K tokens by default;
64K and 128K with --perf-sweep (each call takes seconds and a case times ten of them).

The dense runs are another function (every key), timed for scale. The sparse run is checked
against eager PyTorch projections around the same sparse attention (the kernels' own tests
hold the attention to its reference). flops: the projections' (2 per weight and token), the
part every provider computes alike."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.cost import Cost
from kernels.attention.sparse_prefill import DEFAULT_PATTERN
from models import get_ops
from models.sparse import sparse_ops
from tests.e2e.test_model_perf import _model

pytestmark = [pytest.mark.e2e, pytest.mark.perf]


def _patterns(model):
    every_head = {h: list(DEFAULT_PATTERN) for h in range(model.cfg.n_heads)}
    return [every_head] * len(model.layers)


def _prefill(backend, sparse):
    def make(s):
        ops = get_ops(backend)
        ops = sparse_ops(ops, _patterns(s.model), dense_below=0) if sparse else ops
        return lambda tokens: s.model.prefill_logits(tokens, ops)
    return make


PROVIDERS = [
    Provider("triton", make=_prefill("triton", sparse=True), kernel=True),
    Provider("dense_triton", make=_prefill("triton", sparse=False), checked=False),
    Provider("dense_eager", make=_prefill("torch", sparse=False), checked=False),
]


def grid(sweep):
    return [dict(model="llama3-8b", tokens=t) for t in [32768] + ([65536, 131072] if sweep else [])]


@perf_bench(grid=grid, id="{model}-sparse-prefill-t{tokens}", providers=PROVIDERS)
def sparse_model_case(model, tokens):
    m = _model(model)
    vocab = m.embed.shape[0]
    layer_params = sum(b.numel() for b in m.layers[0].buffers())
    weight_bytes = 2 * (len(m.layers) * layer_params + m.lm_head.numel())

    def make_inputs():
        return (torch.randint(0, vocab, (1, tokens), device="cuda"),)

    eager_sparse = sparse_ops(get_ops("torch"), _patterns(m), dense_below=0)
    return PerfCase(
        op="model_sparse_prefill", shape={"model": model, "tokens": tokens}, dtype=torch.bfloat16,
        make_inputs=make_inputs,
        cost=Cost(flops=2 * tokens * len(m.layers) * layer_params + 2 * m.lm_head.numel(), bytes=weight_bytes,
                  flops_ceiling="bf16_tflops"),
        # bf16 projections by two paths through 32 layers: 5e-2 of the logits' norm, as
        # test_model_perf allows its whole-model check
        reference=lambda tokens: m.prefill_logits(tokens, eager_sparse),
        rtol=5e-2,
        timing_mode="events",
        pdl=True,
        kernel_info={"pattern": "vs-%d-%d" % DEFAULT_PATTERN[1:]},
        state=SimpleNamespace(model=m),
    )


pytest_generate_tests = perf_tests(sparse_model_case)


def test_sparse_model_perf(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
