"""The fastest a GPU reads N bytes at all, cold L2 (the suite's timing protocol): a
read-only Triton kernel over one contiguous buffer, best of a few launch shapes. Small
reads (tens of MB) cannot reach the copy ceiling, which is timed on 1 GiB; this bound says
how much of a bandwidth target a kernel of that size can reach.
Usage: python -m harness.read_bound MB [MB ...]  (or import read_bound_s)."""
import sys

import torch
import triton
import triton.language as tl

from harness.timing import TimingConfig, time_providers


@triton.jit
def _read(X, OUT, n, chunk, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(pid * chunk, tl.minimum(pid * chunk + chunk, n), BLOCK):
        offs = i + tl.arange(0, BLOCK)
        acc += tl.load(X + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.store(OUT + pid, tl.sum(acc, 0))


def read_bound_s(nbytes: int) -> tuple[float, str]:
    """(seconds, launch shape) of the fastest pure read of nbytes (bf16 elements)."""
    n = nbytes // 2
    out = torch.empty(1 << 16, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    provs = {}
    for waves in (1, 2, 4, 8):
        for block in (2048, 4096):
            progs = waves * sms
            chunk = triton.cdiv(triton.cdiv(n, progs), block) * block
            provs[f"p{progs}b{block}"] = lambda x, c=chunk, b=block: _read[(triton.cdiv(n, c),)](
                x, out, n, c, BLOCK=b, num_warps=8, num_stages=3)
    ms = time_providers(provs, lambda: (torch.randn(n, device="cuda", dtype=torch.bfloat16),),
                        TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
    name, t = min(ms.items(), key=lambda kv: kv[1].median_s)
    return t.median_s, name


if __name__ == "__main__":
    from harness.ceilings import get_ceilings

    bw = get_ceilings()["copy_gbps"]
    for mb in sys.argv[1:]:
        nbytes = int(float(mb) * 1e6)
        s, how = read_bound_s(nbytes)
        print(f"read {nbytes / 1e6:.1f} MB: {s * 1e6:.1f} us, {nbytes / s / 1e9:.0f} GB/s "
              f"({nbytes / s / 1e9 / bw:.0%} of copy) [{how}]", flush=True)
