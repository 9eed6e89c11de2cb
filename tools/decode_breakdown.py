"""Where the time of one GQA decode goes (LLaMA-3-8B heads, bf16, batch 1 by default),
device-timed by the harness with cold L2, as % of copy bandwidth:
- the whole call (split-KV kernel + merge kernel) with and without programmatic dependent
  launch (KERNELS_PDL), the split-KV kernel alone (merge skipped), and the pure read of
  the same KV bytes (tools/read_bound.py);
- the whole call timed beside a compute-bound baseline (FlexAttention, as in the perf
  case), to see whether a hot neighbour slows a memory-bound kernel (SM clock read by
  nvidia-smi before and after).
Usage: PYTHONPATH=. python3 tools/decode_breakdown.py [KV_LEN ...]  (default 32768)"""
import os
import subprocess
import sys

import torch

import kernels.attention.decode as decode
from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.attention import baselines, gqa_decode
from kernels.launch import PDL_ENV
from tools.read_bound import read_bound_s

bw = get_ceilings()["copy_gbps"]


class _Skip:
    """Stands in for the merge kernel: launches nothing."""
    def __getitem__(self, grid):
        return lambda *a, **k: None


def sm_clock():
    q = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,power.draw", "--format=csv,noheader"],
                       capture_output=True, text=True)
    return q.stdout.strip()


def main():
    lens = [int(a) for a in sys.argv[1:]] or [32768]
    for kv in lens:
        make = lambda: (torch.randn(1, 1, 32, 128, device="cuda", dtype=torch.bfloat16),
                        torch.randn(1, kv, 8, 128, device="cuda", dtype=torch.bfloat16),
                        torch.randn(1, kv, 8, 128, device="cuda", dtype=torch.bfloat16))
        nbytes = 2 * kv * 8 * 128 * 2
        pct = lambda t: f"{t * 1e6:.2f}us {nbytes / t / 1e9 / bw:.0%}"
        real = decode._combine_kernel

        def split_only(q, k, v):
            decode._combine_kernel = _Skip()
            try:
                return gqa_decode(q, k, v, causal=False)
            finally:
                decode._combine_kernel = real

        full = lambda q, k, v: gqa_decode(q, k, v, causal=False)

        def no_pdl(q, k, v):  # the variable is read at every launch
            os.environ[PDL_ENV] = "0"
            try:
                return gqa_decode(q, k, v, causal=False)
            finally:
                os.environ.pop(PDL_ENV)
        print(f"kv{kv}: clocks before {sm_clock()}", flush=True)
        ms = time_providers({"full": full, "full, no PDL": no_pdl, "split kernel only": split_only}, make, TimingConfig(rep_ms=50, warmup_ms=5))
        rb, how = read_bound_s(nbytes)
        print(f"kv{kv}: read bound {pct(rb)} [{how}]; " + ", ".join(f"{n} {pct(m.median_s)}" for n, m in ms.items()),
              flush=True)
        ms = time_providers({"full": full, "flex": baselines.flex, "sdpa_cudnn": baselines.sdpa("cudnn")}, make,
                            TimingConfig(rep_ms=100, warmup_ms=25))
        print(f"kv{kv}: beside flex and cuDNN: " + ", ".join(f"{n} {pct(m.median_s)}" for n, m in ms.items())
              + f"; clocks after {sm_clock()}", flush=True)
        ms = time_providers({"full": full, "sdpa_cudnn": baselines.sdpa("cudnn")}, make,
                            TimingConfig(rep_ms=100, warmup_ms=25))
        print(f"kv{kv}: beside cuDNN only: " + ", ".join(f"{n} {pct(m.median_s)}" for n, m in ms.items()), flush=True)


if __name__ == "__main__":
    main()
