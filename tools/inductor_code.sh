#!/bin/sh
# Print the Triton code Inductor generates for torchao's compiled int8 weight-only layer at
# one row (tools/gemv_nk_lab.py, at b5b88cd, compared with it). Usage: sh tools/inductor_code.sh
TORCH_LOGS=output_code python3 - <<'PY' 2>&1 | grep -v Deprecation | grep -v "warnings.warn"
import torch
from kernels.norm.baselines import compiled
from kernels.quant.baselines import torchao_linear
for k, n in ((4096, 14336), (14336, 4096)):
    print(f"===== int8wo {k} -> {n}")
    lin = compiled(torchao_linear(torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * k ** -0.5, "int8wo"))
    lin(torch.randn(1, k, device="cuda", dtype=torch.bfloat16))
PY
