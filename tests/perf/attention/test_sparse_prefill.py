"""Perf cases of kernels/attention/sparse_prefill.py: causal prefill of one LLaMA-3-8B layer's
attention from scratch (batch 1, 32 query / 8 KV heads, head dim 128, bf16), 8K to 128K
tokens (256K to 1M behind --perf-sweep), one of MInference's patterns on every head: the
whole sparse prefill (estimate, index, attention; the dense fallback off) against dense
prefill (the suite's kernel, SDPA cuDNN and flash, flash-attn where it imports), which is
another function (every key), timed for scale, not checked; and FlexAttention over the same
keys (a block mask built from the kernel's index), checked like the kernel. The
kernel's last 64 rows are checked against float32 attention over exactly the keys its
pattern selects there; the flops are those of the selected pairs, whose share of the dense
causal pairs is the case's `density`. kernel_info also has the index's size, the recall (the
softmax mass the pattern keeps) and the split of the time into estimate, index and attention
(a vertical-slash attention's ranges and columns timed apart too).
Inputs carry a long prompt's locality (long_prompt_qkv): on plain Gaussian ones a pattern's
top diagonals scatter and every key gets selected."""
import pytest
import torch

from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.attention import baselines, gqa_attention_reference, prefill_attention
from kernels.attention.cost import sparse_prefill_cost
from kernels.attention.reference import sparse_index_rows_mask
from kernels.attention.sparse_prefill import (WindowPattern, attend_pattern_groups, estimate_vertical_slash,
                                              pattern_indexes, sparse_prefill)
from kernels.attention.sparse_search import device_time
from tests.helpers.tolerance import DTYPES

pytestmark = pytest.mark.perf

PATTERNS = {  # MInference's budgets: (vertical, slash) of its search space, A-shape, block-sparse top 100
    "vs-1000-6096": ("vertical_and_slash", 1000, 6096), "vs-30-800": ("vertical_and_slash", 30, 800),
    "vs-100-750": ("vertical_and_slash", 100, 750), "vs-500-700": ("vertical_and_slash", 500, 700),
    "vs-3500-100": ("vertical_and_slash", 3500, 100), "a-shape": ("stream_llm", 128, 3968),
    "block-sparse-100": ("block_sparse", 100, 0),
}
DEFAULT_PATTERNS = ("vs-1000-6096", "a-shape", "block-sparse-100")
CHECKED_ROWS = 64
LOCAL_TOKENS = 2048  # the inputs' correlation length (long_prompt_qkv)


def long_prompt_qkv(tokens, q_heads, kv_heads, head_dim, dtype, g, device="cuda"):
    """q, k, v whose scores have a long prompt's locality: each KV head adds to its keys and
    to its query heads' queries one smooth function of the position (waves slower than
    1 / LOCAL_TOKENS), so q_t . k_s grows as |t - s| shrinks, over unit Gaussian noise.
    Plain Gaussian inputs have no pattern: their top diagonals scatter over every block and
    the vertical-slash index covers every key."""
    waves = 32
    pos = torch.arange(tokens, device=device, dtype=torch.float32)[:, None]
    freq = torch.rand(waves, device=device, generator=g) / LOCAL_TOKENS
    phase = torch.rand(waves, device=device, generator=g) * 6.2832
    basis = torch.sin(pos * freq + phase)  # (tokens, waves)
    amp = torch.randn(kv_heads, waves, head_dim, device=device, generator=g) * (2.0 / waves) ** 0.5
    local = torch.einsum("tw,hwd->thd", basis, amp)[None]  # (1, tokens, kv_heads, head_dim), about unit size
    noise = lambda h: torch.randn(1, tokens, h, head_dim, device=device, generator=g)
    k = (noise(kv_heads) + local).to(dtype)
    # in place, each KV head's wave onto its query heads: at 1M tokens a repeated copy of
    # `local` and the sum would hold 32 GiB of float32 beside the noise's 16
    q = noise(q_heads)
    q.view(1, tokens, kv_heads, q_heads // kv_heads, head_dim).add_(local[:, :, :, None])
    q = q.to(dtype)
    return q, k, noise(kv_heads).to(dtype)


def stage_times(q, k, v, specs, groups):
    """Seconds of the estimate, the index (pattern_indexes less its estimate) and the
    attention over `groups` (pattern_indexes' for specs), each by CUDA events (median of 3,
    warm): the split of the whole prefill. For a vertical-slash index, also its attention
    over the ranges alone and over the columns alone (where a kernel's time goes)."""
    needs_estimate = any(s[0] == "vertical_and_slash" for s in specs)
    estimate = device_time(lambda: estimate_vertical_slash(q, k)) if needs_estimate else 0.0
    index = max(device_time(lambda: pattern_indexes(q, k, specs)) - estimate, 0.0)
    out = {"estimate_s": estimate, "index_s": index,
           "attention_s": device_time(lambda: attend_pattern_groups(q, k, v, groups))}
    if "vertical_slash" in groups:
        heads, idx = groups["vertical_slash"]
        for part, alone in (("ranges", idx._replace(block_columns=torch.zeros_like(idx.block_columns))),
                            ("columns", idx._replace(n_intervals=torch.zeros_like(idx.n_intervals)))):
            out[f"attention_{part}_s"] = device_time(
                lambda: attend_pattern_groups(q, k, v, {"vertical_slash": (heads, alone)}))
    return out


def _sparse(st):
    pattern = {h: list(PATTERNS[st.pattern]) for h in range(st.q_heads)}
    return lambda q, k, v: sparse_prefill(q, k, v, pattern, dense_below=0)


def _dense(fn):
    return lambda st: fn


PROVIDERS = [
    Provider("triton", make=_sparse, kernel=True),
    Provider("dense_triton", make=_dense(lambda q, k, v: prefill_attention(q, k, v)), checked=False),
    Provider("sdpa_cudnn", make=lambda _: baselines.sdpa_causal("cudnn"), checked=False),
    Provider("sdpa_flash", make=lambda _: baselines.sdpa_causal("flash"), checked=False),
    Provider("flash_attn", baselines.flash_attn_causal, needs="flash_attn", checked=False),
    # the same keys: a block mask built from the kernel's own index for these inputs
    Provider("flex_same_keys", make=lambda st: baselines.flex_sparse(st.index)),
]


def grid(sweep):
    tokens = [8192, 32768, 131072] + ([262144, 524288, 1048576] if sweep else [])
    names = list(PATTERNS) if sweep else list(DEFAULT_PATTERNS)
    return [dict(pattern=p, tokens=t, q_heads=32, kv_heads=8) for t in tokens for p in names]


class _State:
    def __init__(self, pattern, q_heads, index):
        self.pattern, self.q_heads, self.index = pattern, q_heads, index


def group_index(groups):
    """The one group's index (every head has the pattern); an A-shape's keys as an index
    (its kernel reads none), to count and mask them."""
    heads, index = next(iter(groups.values()))
    return index.index(1, heads.numel(), heads.device) if isinstance(index, WindowPattern) else index


def pattern_index(pattern, q, k):
    """The keys the kernel attends for this pattern on every head, as an index."""
    return group_index(pattern_indexes(q, k, [PATTERNS[pattern]] * q.shape[2]))


@perf_bench(grid=grid, id="{pattern}-t{tokens}-h{q_heads}x{kv_heads}-d128-bf16", providers=PROVIDERS)
def sparse_prefill_case(pattern, tokens, q_heads, kv_heads):
    dt, D = DTYPES["bf16"], 128
    g = torch.Generator(device="cuda").manual_seed(0)

    def make_inputs():  # one seed: the pattern the kernel chooses is the one counted below
        g.manual_seed(0)
        return long_prompt_qkv(tokens, q_heads, kv_heads, D, dt, g)

    q, k, v = make_inputs()
    specs = [PATTERNS[pattern]] * q_heads
    groups = pattern_indexes(q, k, specs)  # one group: every head has the pattern
    index = group_index(groups)
    index_bytes = next(iter(groups.values()))[1].nbytes()  # what the attention reads
    pairs = int(index.selected_pairs().sum())
    # recall: the softmax mass the pattern keeps, exp(lse_sparse - lse_dense), mean over rows and heads
    _, lse_sparse = attend_pattern_groups(q, k, v, groups, return_lse=True)
    _, lse_dense = prefill_attention(q, k, v, return_lse=True)
    recall = float(torch.exp(lse_sparse.double() - lse_dense.double()).mean())
    split = stage_times(q, k, v, specs, groups)
    del q, k, v, lse_sparse, lse_dense, groups

    def reference(q, k, v):
        rows = torch.arange(tokens - CHECKED_ROWS, tokens)
        mask = sparse_index_rows_mask(pattern_index(pattern, q, k), rows)
        group = q_heads // kv_heads
        # one KV head at a time: at 1M tokens the whole layer's float32 keys, values and
        # scores take 40 GiB
        return torch.cat([gqa_attention_reference(q[:, -CHECKED_ROWS:, h * group:(h + 1) * group], k[:, :, h:h + 1],
                                                  v[:, :, h:h + 1], causal=True, mask=mask[:, h * group:(h + 1) * group])
                          for h in range(kv_heads)], dim=2)

    return PerfCase(
        op="sparse_prefill",
        shape={"pattern": pattern, "tokens": tokens, "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": D},
        dtype=dt,
        make_inputs=make_inputs,
        cost=sparse_prefill_cost(pairs, tokens, q_heads, kv_heads, D, 2),
        reference=reference,
        output_slice=(slice(None), slice(-CHECKED_ROWS, None)),
        rtol=1e-2,
        kernel_info={"density": pairs / (q_heads * tokens * (tokens + 1) / 2), "index_bytes": index_bytes,
                     "recall": recall, **split},
        state=_State(pattern, q_heads, index),
    )


pytest_generate_tests = perf_tests(sparse_prefill_case)


def test_sparse_prefill(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
