"""The suite's one tolerance rule, and its dtype tables.

The rule: the kernel's largest error against a float64 reference may be at most twice the
error of the same computation done by PyTorch in the low-precision dtype, plus one rounding
of that dtype at the output's largest magnitude:

    max|got - exact| <= k * max|lowp - exact| + eps(dtype) * max|exact|,   k = 2

Why: a kernel's rounding error grows with the input (long rows, large values, cancelling
sums), so a fixed atol/rtol either fails good kernels on hard inputs or passes wrong ones on
easy inputs. The reference computed in the low-precision dtype measures how hard this input
is for that dtype; a kernel may order and fuse its roundings differently, hence the factor
2; the final cast to the output dtype may cost one rounding the reference's float64 result
does not have, hence eps * max|exact|. (flash-attention's tests judge kernels this way.)

A test may raise k (the CPU lane's interpreter truncates float32 to bf16, an error of up to
one unit all one way) or give a floor for 2 x the reference's error (where kernel and
reference round an intermediate input each in its own place), never lower either.
"""
from __future__ import annotations

import torch

# Every dtype the tests draw, by the name used in test ids and hypothesis examples.
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# The half-precision ones: kernels whose inputs are fp16 or bf16 only.
HALF_DTYPES = {name: DTYPES[name] for name in ("fp16", "bf16")}


def max_abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| in float64 on the CPU; 0 for empty tensors."""
    if a.numel() == 0:
        return 0.0
    return (a.detach().double().cpu() - b.detach().double().cpu()).abs().max().item()


def one_rounding(exact: torch.Tensor, dtype: torch.dtype) -> float:
    """One rounding step of dtype at the largest |exact|."""
    return torch.finfo(dtype).eps * (exact.detach().double().abs().max().item() if exact.numel() else 0.0)


def within_rule(got, exact, lowp, dtype, *, k: float = 2, floor: float = 0.0) -> tuple[bool, str]:
    """(ok, message): got (the kernel) and lowp (PyTorch in dtype) against exact (float64).
    Allowed: max(k x lowp's error, floor) + one rounding of dtype."""
    err, base, one = max_abs_err(got, exact), max_abs_err(lowp, exact), one_rounding(exact, dtype)
    allowed = max(k * base, floor) + one
    floor_text = f", floor {floor:.3g}" if floor else ""
    return err <= allowed, (f"max error {err:.3g} > {k:g} x {base:.3g} (reference in {dtype}{floor_text}) "
                            f"+ {one:.3g}")


def assert_within_rule(got, exact, lowp, dtype, *, k: float = 2, floor: float = 0.0, what: str = "") -> None:
    ok, msg = within_rule(got, exact, lowp, dtype, k=k, floor=floor)
    assert ok, f"{what}: {msg}" if what else msg


def nonfinite_mismatch(got: torch.Tensor, exact: torch.Tensor) -> str | None:
    """None where got has NaN at exact's places and infinities of the same sign, else what differs."""
    g, e = got.detach().double().cpu(), exact.detach().double().cpu()
    inf = float("inf")
    for what, g_at, e_at in (("NaN", g.isnan(), e.isnan()), ("+inf", g == inf, e == inf), ("-inf", g == -inf, e == -inf)):
        if not torch.equal(g_at, e_at):
            return f"{what} at {int(g_at.sum())} places, float64 at {int(e_at.sum())}"
    return None
