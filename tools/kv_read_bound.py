"""How fast can the KV cache of one decode step be read at all? Read-only Triton kernels:
(a) the decode kernel's pattern: one program per (KV head, chunk of keys), each key row
of one head 256 B, rows strided by kv_heads * 256 B; (b) contiguous: one program per
chunk of keys reading whole rows of all heads. Sum and store one value per program.
B=1, 8 KV heads, d=128, bf16, timed under both L2 flushes (write, read). Prints GB/s
(bytes read / time) and % of copy bandwidth."""
import torch
import triton
import triton.language as tl

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers


@triton.jit
def _per_head(K, V, OUT, S, chunk, n_heads, D: tl.constexpr, BLOCK_N: tl.constexpr):
    h = tl.program_id(0)
    sp = tl.program_id(1)
    d = tl.arange(0, D)
    acc = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    for n0 in range(sp * chunk, tl.minimum(sp * chunk + chunk, S), BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        off = n[:, None].to(tl.int64) * (n_heads * D) + h * D + d[None, :]
        acc += tl.load(K + off).to(tl.float32) + tl.load(V + off).to(tl.float32)
    tl.store(OUT + h * tl.num_programs(1) + sp, tl.sum(tl.sum(acc, 1), 0))


@triton.jit
def _contiguous(K, V, OUT, S, chunk, ROW: tl.constexpr, BLOCK_N: tl.constexpr):
    sp = tl.program_id(0)
    r = tl.arange(0, ROW)
    acc = tl.zeros([BLOCK_N, ROW], dtype=tl.float32)
    for n0 in range(sp * chunk, tl.minimum(sp * chunk + chunk, S), BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        off = n[:, None].to(tl.int64) * ROW + r[None, :]
        acc += tl.load(K + off).to(tl.float32) + tl.load(V + off).to(tl.float32)
    tl.store(OUT + sp, tl.sum(tl.sum(acc, 1), 0))


bw = get_ceilings()["copy_gbps"]
for S in (4096, 32768, 131072):
    H, D = 8, 128
    make = lambda: (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16),
                    torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16))
    out = torch.empty(1 << 16, device="cuda")
    provs = {}
    for splits in (16, 32, 64):
        chunk = S // splits
        if chunk < 64:
            continue
        for bn in (16, 32, 64):
            for ns in (2, 3, 4):
                provs[f"per_head s{splits} n{bn} st{ns}"] = lambda k, v, c=chunk, sp=splits, bn=bn, ns=ns: _per_head[(H, sp)](
                    k, v, out, S, c, H, D=D, BLOCK_N=bn, num_warps=4, num_stages=ns)
    for progs in (132, 264, 528):
        chunk = triton.cdiv(triton.cdiv(S, progs), 8) * 8
        for bn in (4, 8, 16):
            provs[f"contig p{progs} n{bn}"] = lambda k, v, c=chunk, p=progs, bn=bn: _contiguous[(triton.cdiv(S, c),)](
                k, v, out, S, c, ROW=H * D, BLOCK_N=bn, num_warps=8, num_stages=3)
    nbytes = 2 * S * H * D * 2
    for flush in ("write", "read"):
        ms = time_providers(provs, make, TimingConfig(rep_ms=15, warmup_ms=3, mode="events", flush=flush))
        best = sorted(ms.items(), key=lambda kv: kv[1].median_s)
        ph = [kv for kv in best if kv[0].startswith("per_head")][:2]
        co = [kv for kv in best if kv[0].startswith("contig")][:2]
        for name, lst in (("per-head", ph), ("contiguous", co)):
            print(f"flush={flush} S={S} ({nbytes/1e6:.0f} MB) {name}: " + ", ".join(
                f"{k} {v.median_s*1e6:.1f}us {nbytes/v.median_s/1e9:.0f} GB/s ({nbytes/v.median_s/1e9/bw:.0%})" for k, v in lst), flush=True)
