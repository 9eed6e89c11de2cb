"""Perf cases of kernels/attention/shared_prefix.py (Hydragen's microbenchmark): one decode
token a sequence over a shared prefix and a unique suffix each, bf16, head dim 128.

Grid: 8 query / 1 KV head, (batch, prefix) in (512, 1K), (1024, 2K), (2048, 4K), (4096, 8K),
suffix 16, 64, 128, 256, 512 (1, then 16 to 512 step 16 with --perf-sweep; the suffix counts the
decode token itself); LLaMA-3-8B's heads (32/8) at (256, 4K) and at the whole-model generation
case's attention (256 sequences, 8K prefix, 64 tokens each: tests/e2e/test_shared_prefix_perf.py),
where its launch is tuned without building the model; a two-level tree (a 4K root, 16 children
of 512, 16 sequences each).
Baselines, in the same run:
- copies_sdpa / copies_decode: SDPA and the suite's decode kernel over per-sequence copies
  of [path | suffix] (what Hydragen measures against; the copies are made with the inputs,
  where they fit in a third of the free memory);
- shared_read: no copies, no sharing: every sequence reads the one prefix through a
  stride-0 view (a paged-KV server's block table), its suffix apart, merged by lse;
- hydragen_torch: Hydragen in PyTorch (one flash-attention call over the prefix with all
  queries folded in, one over the suffixes, the merge);
- flex: FlexAttention over the packed tree with a block mask.
kernel_info: the prefix product alone (the node kernel's time in a call, by the CUDA
profiler) as prefix_product_s and its fraction of the measured bf16 peak.
"""
import pytest
import torch

from harness.ceilings import get_ceilings
from harness.lanes import gpu_free_bytes
from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from harness.timing import kernel_share_s
from kernels.attention import baselines, gqa_decode, prefix_tree, shared_prefix_decode, shared_prefix_reference
from kernels.attention.cost import shared_prefix_cost
from kernels.attention.reference import sequence_kv
from kernels.providers import ProviderUnavailable
from tests.helpers.tolerance import DTYPES

pytestmark = pytest.mark.perf

CHECKED_SEQS = 32  # the reference covers the first sequences (all of them would be GBs of copies)
# the reference's per-sequence float32 copies held at once: about 0.3 GB a sequence at an 8K
# prefix and 32 heads, and the tuner checks candidates in 8 processes on one GPU
REFERENCE_SEQS_AT_ONCE = 4


def _views(st, k_store, v_store):
    """The pool and the suffixes, views of the packed store."""
    pool, B, S = st.tree.pool_tokens, st.tree.n_seqs, st.suffix
    split = lambda t: (t[:pool], t[pool:].view(B, S, *t.shape[1:]))  # noqa: E731
    return (*split(k_store), *split(v_store))


def _kernel(st):
    def run(q, k_store, v_store, k_copy, v_copy):
        kp, ks, vp, vs = _views(st, k_store, v_store)
        return shared_prefix_decode(q, kp, vp, st.tree, ks, vs)
    return run


def _needs_copies(fn):
    def run(q, k_store, v_store, k_copy, v_copy):
        if k_copy is None:
            raise ProviderUnavailable("the per-sequence copies do not fit in a third of the free GPU memory")
        return fn(q, k_copy, v_copy)
    return run


def _one_level(fn):
    def make(st):
        def run(q, k_store, v_store, k_copy, v_copy):
            kp, ks, vp, vs = _views(st, k_store, v_store)
            return fn(q, kp, vp, st.tree.kv_len[0], ks, vs)
        return run
    return make


def _flex(st):
    fn = baselines.flex_tree(st.tree, st.suffix, st.q_heads)
    return lambda q, k_store, v_store, k_copy, v_copy: fn(q, k_store, v_store)


def _flat(point):
    return point["tree"] == "flat" or "reads one shared prefix: a one-level tree only"


MASK_LIMIT = 1 << 28  # query x key pairs create_block_mask evaluates densely while it builds the mask


def _flex_fits(point):
    pairs = point["batch"] * (point["prefix"] + 16 * 512 + point["batch"] * point["suffix"])
    return pairs <= MASK_LIMIT or f"building the block mask evaluates {pairs:.2g} query-key pairs (> {MASK_LIMIT:.2g})"


PROVIDERS = [
    Provider("triton", make=_kernel, kernel=True),
    Provider("copies_sdpa", _needs_copies(baselines.copies_sdpa)),
    Provider("copies_decode", _needs_copies(gqa_decode)),
    Provider("shared_read", make=_one_level(baselines.shared_read_decode), when=_flat),
    Provider("hydragen_torch", make=_one_level(baselines.hydragen_torch), when=_flat),
    Provider("flex", make=_flex, when=_flex_fits),
]


def grid(sweep):
    # a suffix holds the decode token itself: 1 is Hydragen's "no unique tokens yet"
    suffixes = [1] + list(range(16, 513, 16)) if sweep else [16, 64, 128, 256, 512]
    hydragen = [dict(tree="flat", batch=b, prefix=p, suffix=s, q_heads=8, kv_heads=1)
                for b, p in ((512, 1024), (1024, 2048), (2048, 4096), (4096, 8192)) for s in suffixes]
    return hydragen + [dict(tree="flat", batch=256, prefix=4096, suffix=128, q_heads=32, kv_heads=8),
                       dict(tree="flat", batch=256, prefix=8192, suffix=64, q_heads=32, kv_heads=8),
                       dict(tree="two-level", batch=256, prefix=4096, suffix=128, q_heads=8, kv_heads=1)]


class _State:
    def __init__(self, tree, suffix, q_heads):
        self.tree, self.suffix, self.q_heads = tree, suffix, q_heads


def _tree(kind, batch, prefix):
    if kind == "flat":
        return prefix_tree([-1], [prefix], [0] * batch, device="cuda")
    children, per_child = 16, batch // 16  # a root, 16 documents of 512 tokens
    return prefix_tree([-1] + [0] * children, [prefix] + [512] * children,
                       [1 + c for c in range(children) for _ in range(per_child)], device="cuda")


@perf_bench(grid=grid, id="{tree}-b{batch}-p{prefix}-s{suffix}-h{q_heads}x{kv_heads}-d128-bf16", providers=PROVIDERS)
def shared_prefix_case(tree, batch, prefix, suffix, q_heads, kv_heads):
    dt, D = DTYPES["bf16"], 128
    t = _tree(tree, batch, prefix)
    st = _State(t, suffix, q_heads)
    path_len = max(sum(t.kv_len[n] for n in p) for p in t.paths)
    copy_bytes = 2 * batch * (path_len + suffix) * kv_heads * D * 2
    fits = copy_bytes < gpu_free_bytes() / 3

    def stores():  # the queries and the packed keys and values (pool, then suffixes)
        q = torch.randn(batch, 1, q_heads, D, device="cuda", dtype=dt)
        k_store = torch.randn(t.pool_tokens + batch * suffix, kv_heads, D, device="cuda", dtype=dt)
        return q, k_store, torch.randn_like(k_store)

    def make_inputs():
        q, k_store, v_store = stores()
        kp, ks, vp, vs = _views(st, k_store, v_store)
        k_copy, v_copy = sequence_kv(kp, vp, t, ks, vs)[:2] if fits else (None, None)
        return q, k_store, v_store, k_copy, v_copy

    def prefix_product():
        """The node kernel's share of one call (the prefix product, profiled) and its flops:
        the queries of every sequence under a node against the node's keys, QK and PV."""
        q, k_store, v_store = stores()
        try:
            seconds = kernel_share_s(lambda: _kernel(st)(q, k_store, v_store, None, None), "_node_kernel")
        except RuntimeError:  # no CUDA profiler here: the case still times, the target reads the op's rate
            return {}
        flops = sum(4 * t.seq_count[n] * q_heads * t.kv_len[n] * D for n in t.shared_nodes)
        if not seconds:
            return {}
        return {"prefix_product_s": seconds,
                "prefix_product_fraction": flops / seconds / (get_ceilings()["bf16_tflops"] * 1e12)}

    def reference(q, k_store, v_store, k_copy, v_copy):
        kp, ks, vp, vs = _views(st, k_store, v_store)
        first = prefix_tree(t.parents, t.kv_len, t.seq_node[:CHECKED_SEQS], t.kv_start, device="cuda")
        return shared_prefix_reference(q[:CHECKED_SEQS], kp, vp, first, ks[:CHECKED_SEQS], vs[:CHECKED_SEQS],
                                       seqs_at_once=REFERENCE_SEQS_AT_ONCE)

    return PerfCase(
        op="shared_prefix_decode",
        shape={"tree": tree, "batch": batch, "prefix": prefix, "suffix": suffix, "q_heads": q_heads,
               "kv_heads": kv_heads, "head_dim": D},
        dtype=dt,
        make_inputs=make_inputs,
        cost=shared_prefix_cost(t, 1, q_heads, kv_heads, suffix, D, 2),
        reference=reference,
        output_slice=slice(0, CHECKED_SEQS),
        rtol=1e-2,
        kernel_info=prefix_product(),
        state=st,
        pdl=True,  # node kernel + suffix decode: the decode attends the suffixes while the nodes finish
    )


pytest_generate_tests = perf_tests(shared_prefix_case)


def test_shared_prefix_decode(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
