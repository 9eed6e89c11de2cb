"""Conversions to the kernels' 16-bit float dtypes that give the GPU's values on both lanes.

Compiled, `v.to(tl.bfloat16)` rounds to nearest even. Triton's interpreter (the CPU lane)
truncates float32 to bfloat16 (4x the rounding noise) and reads an integer's value as the
bits of a bfloat16 (garbage); `to_float` rounds from the float32 bits there instead, so the
CPU lane checks what the GPU computes. (Arithmetic on bfloat16 operands goes through
kernels.interpreter.exact_operand.)
"""
import triton
import triton.language as tl

from kernels.interpreter import INTERPRETING


@triton.jit
def to_float(v, dtype: tl.constexpr):
    """v (float32 or integer) as the float dtype, rounded to nearest even; compiled, v.to(dtype)."""
    if INTERPRETING and dtype == tl.bfloat16:
        f = v.to(tl.float32)
        bits = f.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)  # to nearest, ties to even, at bit 16
        half = tl.where(f != f, 0x7FC0, bits >> 16)  # NaN kept NaN (its rounding could carry into the sign)
        return half.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(dtype)
