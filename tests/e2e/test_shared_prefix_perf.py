"""Batched generation throughput over a shared prompt (Hydragen's end-to-end sweep), GPU:
one decode step of a whole LLaMA-family model (random weights at real dimensions) for
`batch` sequences that continue one `prefix`-token prompt, each 64 tokens into its own
continuation, timed in a CUDA graph. Tokens/s = batch / step time.

Modes (providers): sharing (shared-prefix attention: the prompt's keys read once per
step for all sequences), no_sharing (the same kernels, each sequence reading the prompt on
its own: no copies, as a paged-KV server without prefix sharing), no_attention (attention
skipped: the upper bound every mode approaches as attention gets cheaper; its output is
another function and is not checked).
Models: LLaMA-3-8B (32/8 heads) and CodeLlama-7B's MHA (32/32 heads), 32 layers each.
Default grid: prefix 1K, 8K and 16K at batch 256 (LLaMA-3-8B) and 8K at batch 32
(CodeLlama-7B); --perf-sweep: prefix 1K-16K x batch 32-1024 as memory allows.
The prompt's prefill (batch 1) is the whole-model prefill case of test_model_perf.py."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from harness.lanes import gpu_free_bytes
from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.attention.shared_prefix import unshared_tree
from kernels.cost import Cost
from models import LLAMA3_8B, SharedPrefixCache, get_ops
from models.model import Transformer, random_model

pytestmark = [pytest.mark.e2e, pytest.mark.perf]

GENERATED = 64  # tokens each sequence has of its own when the step is timed
VOCAB, CONTEXT = 128256, 131072  # LLaMA-3-8B's: the model test_model_perf.py times, shared (models.random_model)
MODELS = {"llama3-8b": LLAMA3_8B,
          "codellama-7b": replace(LLAMA3_8B, name="codellama-7b", n_kv_heads=32, ffn=11008, rope_theta=1e6)}


def _model(name: str) -> Transformer:
    return random_model(MODELS[name], VOCAB, CONTEXT, n_layers=32, device="cuda")


def _no_attention_ops():
    ops = get_ops("triton")

    def skip(q, *args):
        return q  # the layer's shapes without attention's work
    return SimpleNamespace(**{**vars(ops), "shared_prefix_attention": skip, "attention": skip})


def _step(mode):
    def make(st):
        caches = st.shared if mode == "sharing" else st.unshared
        ops = _no_attention_ops() if mode == "no_attention" else get_ops("triton")
        return lambda tokens: st.model(tokens, caches, st.pos, ops, last_only=True)
    return make


PROVIDERS = [
    Provider("sharing", make=_step("sharing"), kernel=True),
    Provider("no_sharing", make=_step("no_sharing")),
    Provider("no_attention", make=_step("no_attention"), checked=False),
]


def grid(sweep):
    if sweep:
        return [dict(model=m, prefix=p, batch=b) for m in MODELS for p in (1024, 2048, 4096, 8192, 16384)
                for b in (32, 64, 128, 256, 512, 1024)]
    return ([dict(model="llama3-8b", prefix=p, batch=256) for p in (1024, 8192, 16384)]
            + [dict(model="codellama-7b", prefix=8192, batch=32)])


def _fits(model: Transformer, prefix: int, batch: int) -> bool:
    cfg, layers = model.cfg, len(model.layers)
    kv = 2 * layers * (prefix + batch * GENERATED) * cfg.n_kv_heads * cfg.head_dim * 2
    activations = batch * (cfg.ffn * 3 + cfg.hidden * 4) * 2 * 4
    return kv + activations < 0.7 * gpu_free_bytes()


@perf_bench(grid=grid, id="{model}-p{prefix}-b{batch}", providers=PROVIDERS)
def shared_generation_case(model, prefix, batch):
    m = _model(model)
    if not _fits(m, prefix, batch):
        pytest.skip(f"batch {batch} over a {prefix}-token prompt does not fit in this GPU's free memory")
    g = torch.Generator(device="cuda").manual_seed(2)
    prompt_cache = m.new_cache(1, prefix)
    for c in prompt_cache:  # the prompt's keys (random: only their reading is timed)
        c.k.normal_(generator=g)
        c.v.normal_(generator=g)
    shared = m.shared_prefix_cache(prompt_cache, prefix, batch, GENERATED + 1)
    alone = unshared_tree(shared[0].tree)
    unshared = [replace(c, tree=alone) for c in shared]  # the same tensors: both modes read the same keys
    for c in shared:
        c.k[:, :GENERATED].normal_(generator=g)
        c.v[:, :GENERATED].normal_(generator=g)
    pos = prefix + GENERATED
    checked = min(batch, 4)  # the reference: the torch backend (per-sequence copies) on the first sequences

    def reference(tokens):
        from kernels.attention import prefix_tree

        tree = prefix_tree([-1], [prefix], [0] * checked, device="cuda")
        sub = [SharedPrefixCache(c.k[:checked], c.v[:checked], pool_k=c.pool_k, pool_v=c.pool_v, tree=tree,
                                 offset=prefix) for c in shared]
        return m(tokens[:checked], sub, pos, get_ops("torch"), last_only=True)

    cfg, layers = m.cfg, len(m.layers)
    layer_params = sum(b.numel() for b in m.layers[0].buffers())
    weight_bytes = 2 * (layers * layer_params + m.lm_head.numel())
    kv_bytes = 2 * layers * (prefix + batch * (GENERATED + 1)) * cfg.n_kv_heads * cfg.head_dim * 2
    attn_flops = 4 * layers * batch * cfg.n_heads * cfg.head_dim * (pos + 1)
    return PerfCase(
        op="shared_prefix_generation", shape={"model": model, "prefix": prefix, "batch": batch},
        dtype=torch.bfloat16,
        make_inputs=lambda: (torch.randint(0, VOCAB, (batch, 1), device="cuda"),),
        cost=Cost(flops=2 * batch * (layers * layer_params + m.lm_head.numel()) + attn_flops,
                  bytes=weight_bytes + kv_bytes, flops_ceiling="bf16_tflops"),
        reference=reference, output_slice=slice(0, checked),
        rtol=5e-2,  # two bf16 paths through 32 layers (test_model_perf.py gives the reason)
        timing_mode="graph",
        pdl=True,  # a whole decode step, as test_model_perf.py times one
        state=SimpleNamespace(model=m, shared=shared, unshared=unshared, pos=pos),
    )


pytest_generate_tests = perf_tests(shared_generation_case)


def test_shared_prefix_generation(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
