"""What the kernels do differently under Triton's interpreter (the CPU lane).

The interpreter holds bfloat16 values as their raw 16-bit patterns: loads, stores and
conversions are right, but arithmetic on them (products, sums, tl.dot) works on the bit
patterns and returns garbage with no error. Kernels that compute on bf16 operands pass
them through `exact_operand` first, which upcasts to float32 there and is a no-op when
compiled (the same products, accumulated in float32 as the tensor cores do).
"""
import os

import triton
import triton.language as tl

# The lane is chosen before any kernel module is imported (conftest, harness.lanes).
INTERPRETING = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))


@triton.jit
def exact_operand(x):
    if INTERPRETING and x.dtype == tl.bfloat16:
        x = x.to(tl.float32)
    return x
