"""RMSNorm and fused residual-add + RMSNorm in Triton.

    rms_norm(x, w)                 y = x / sqrt(mean(x^2) + eps) * w
    fused_add_rms_norm(x, r, w)    h = x + r (rounded to the input dtype), y = rms_norm(h, w);
                                   returns (y, h) as a decoder's pre-norm does

Arithmetic is float32 inside the kernel; inputs and outputs are fp16, bf16 or fp32.
Any leading shape; the last dimension (hidden) is normalized. Rows may be strided (any
row stride, unit stride along hidden); other layouts are copied to contiguous first.

One program normalizes ROWS rows. When hidden fits in one block (up to MAX_SINGLE_BLOCK
elements) the row is read once and stays in registers; beyond that the kernel loops
over the row twice (sum of squares, then scale), the second read mostly from L2.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.checks import check_no_overlap, check_number, check_out, check_same_device, check_tensor
from kernels.launch import cdiv, next_power_of_2, pdl_launch_dependents, pdl_options, pdl_wait
from kernels.tuning import LaunchSpace, pow2_bucket

MAX_SINGLE_BLOCK = 16384  # fp32 values per row held in registers (32 per thread at 16 warps)
CHUNK = 4096              # block width of the two-pass loop for wider rows


@triton.jit
def _load_rows(X, R, H_OUT, rows64, c, mask, stride_x, stride_r, stride_h,
               HAS_RESIDUAL: tl.constexpr, STORE_H: tl.constexpr):
    """x (or h = x + r, rounded to the input dtype as the unfused model stores it) as fp32."""
    x = tl.load(X + rows64[:, None] * stride_x + c[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(R + rows64[:, None] * stride_r + c[None, :], mask=mask, other=0.0).to(tl.float32)
        h = (x + r).to(H_OUT.dtype.element_ty)
        if STORE_H:
            tl.store(H_OUT + rows64[:, None] * stride_h + c[None, :], h, mask=mask)
        x = h.to(tl.float32)
    return x


@triton.jit
def _rmsnorm_kernel(
    X, R, W, Y, H_OUT,
    stride_x, stride_r, stride_y, stride_h,
    n_rows, n_cols, eps,
    HAS_RESIDUAL: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
    PDL: tl.constexpr,
):
    pdl_launch_dependents(PDL)  # a short kernel: the next may launch as soon as this one runs
    pdl_wait(PDL)
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_mask = rows < n_rows
    rows64 = rows.to(tl.int64)  # row * stride can pass 2^31 at long prefill lengths
    cols = tl.arange(0, BLOCK_N)

    if SINGLE_PASS:
        mask = row_mask[:, None] & (cols[None, :] < n_cols)
        # The weight is loaded first, beside x: with few rows the kernel is latency-bound,
        # and a load issued after the reduction would add a second trip to memory.
        w = tl.load(W + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        x = _load_rows(X, R, H_OUT, rows64, cols, mask, stride_x, stride_r, stride_h, HAS_RESIDUAL, True)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / n_cols + eps)
        y = x * rstd[:, None] * w[None, :]
        tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = row_mask[:, None] & (c[None, :] < n_cols)
            x = _load_rows(X, R, H_OUT, rows64, c, mask, stride_x, stride_r, stride_h, HAS_RESIDUAL, True)
            acc += x * x
        rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=1) / n_cols + eps)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = row_mask[:, None] & (c[None, :] < n_cols)
            # Recompute h from the inputs rather than re-reading H_OUT: no ordering
            # question between this program's own stores and loads.
            x = _load_rows(X, R, H_OUT, rows64, c, mask, stride_x, stride_r, stride_h, HAS_RESIDUAL, False)
            w = tl.load(W + c, mask=c < n_cols, other=0.0).to(tl.float32)
            y = x * rstd[:, None] * w[None, :]
            tl.store(Y + rows64[:, None] * stride_y + c[None, :], y.to(Y.dtype.element_ty), mask=mask)


def _default_config(rows: int, cols: int, elem: int, residual: bool = False) -> dict:
    """One row per program, about 32 bytes of input per thread (8 warps at 4096 bf16, 16 at
    8192); short rows (under 2 KB) are grouped so that a program still moves a useful
    amount of data. `rows` is the row count rounded up to a power of two (the launch key)."""
    single = cols <= MAX_SINGLE_BLOCK
    block_n = next_power_of_2(cols) if single else CHUNK
    rows_per_program = 1
    while rows_per_program * block_n * elem < 2048 and rows_per_program < 64 and rows_per_program < rows:
        rows_per_program *= 2
    num_warps = min(max(rows_per_program * block_n * elem // (32 * 32), 4), 16)
    return dict(ROWS=rows_per_program, BLOCK_N=block_n, SINGLE_PASS=single, num_warps=num_warps)


def _candidates(rows: int, cols: int, elem: int, residual: bool = False) -> list[dict]:
    """Rows per program x warps, at most 32K values a program (the registers of 32 warps)."""
    block_n = next_power_of_2(cols) if cols <= MAX_SINGLE_BLOCK else CHUNK
    return [dict(ROWS=r, num_warps=w) for r in (1, 2, 4, 8, 16, 32, 64) for w in (4, 8, 16, 32)
            if r <= rows and r * block_n <= 32768 and r * block_n >= 32 * w]


def _check_config(cfg: dict) -> None:
    for name in ("ROWS", "num_warps"):
        v = cfg[name]
        if not (isinstance(v, int) and v >= 1 and v & (v - 1) == 0):
            raise ValueError(f"{name} must be a power of two >= 1, got {v!r}")


LAUNCH = LaunchSpace("rmsnorm", _default_config, _candidates, _check_config)
SHAPE_OPTIONS = ("BLOCK_N", "SINGLE_PASS")  # set by the row length: other values leave columns unwritten


def refuse_shape_options(config: dict | None) -> None:
    given = sorted(set(config or {}) & set(SHAPE_OPTIONS))
    if given:
        raise ValueError(f"{given} follow from the row length, not launch options: set ROWS or num_warps")


def launch_config(x: torch.Tensor, n_rows: int, n_cols: int, residual: bool, config: dict | None = None) -> dict:
    """The launch of a (n_rows, n_cols) RMSNorm of x's dtype (with the residual add or not):
    tuned for this GPU, or the default."""
    refuse_shape_options(config)
    key = dict(rows=pow2_bucket(n_rows), cols=n_cols, elem=x.element_size(), residual=residual)
    return LAUNCH.choose(x.device, key, config)


def _as_rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    """2-D view (rows, hidden) with unit stride along hidden; copies only when it must
    (a stride along hidden, or leading dims that cannot be merged into one)."""
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t.reshape(-1, n_cols)


def _check(x: torch.Tensor, weight: torch.Tensor, eps: float) -> int:
    check_tensor("x", x)
    check_same_device(x=x, weight=weight)
    check_tensor("weight", weight)
    n_cols = x.shape[-1]
    if n_cols == 0:
        raise ValueError(f"x has hidden size 0 (shape {tuple(x.shape)}): nothing to normalize")
    if weight.dim() != 1 or weight.shape[0] != n_cols:
        raise ValueError(f"weight must have shape ({n_cols},) to match x's hidden size; got {tuple(weight.shape)}")
    if weight.dtype != x.dtype:
        raise TypeError(f"weight dtype {weight.dtype} must match x dtype {x.dtype}")
    check_number("eps", eps, minimum=0.0)
    return n_cols


def _run(x, residual, weight, eps, out, residual_out, config):
    n_cols = x.shape[-1]
    x2 = _as_rows(x, n_cols)
    n_rows = x2.shape[0]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    y2 = y.view(-1, n_cols)
    if residual is not None:
        r2 = _as_rows(residual, n_cols)
        h = torch.empty(x.shape, dtype=x.dtype, device=x.device) if residual_out is None else residual_out
        h2 = h.view(-1, n_cols)
    else:
        r2, h, h2 = x2, None, y2  # unused by the kernel when HAS_RESIDUAL is False
    if n_rows == 0:
        return y, h
    w = weight if weight.stride(0) == 1 else weight.contiguous()
    cfg = launch_config(x, n_rows, n_cols, residual is not None, config)
    grid = (cdiv(n_rows, cfg["ROWS"]),)
    _rmsnorm_kernel[grid](
        x2, r2, w, y2, h2,
        x2.stride(0), r2.stride(0), y2.stride(0), h2.stride(0),
        n_rows, n_cols, float(eps),
        HAS_RESIDUAL=residual is not None,
        **cfg, **pdl_options(x.device),
    )
    return y, h


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, out: torch.Tensor | None = None, *,
             config: dict | None = None) -> torch.Tensor:
    """RMSNorm over the last dimension of x, scaled by weight; output in x's dtype.
    out=x works in place (each row, or row chunk, is read before it is written).
    config: launch options over the tuned or default ones (ROWS, num_warps)."""
    _check(x, weight, eps)
    check_out("out", out, x.shape, x.dtype, x.device)
    check_no_overlap("out", out, {"x": x, "weight": weight}, in_place_ok=("x",))
    return _run(x, None, weight, eps, out, None, config)[0]


def fused_add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    out: torch.Tensor | None = None,
    residual_out: torch.Tensor | None = None,
    *,
    config: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + residual; returns (rms_norm(h, weight), h) in one pass over memory."""
    _check(x, weight, eps)
    check_same_device(x=x, residual=residual)
    check_tensor("residual", residual)
    if residual.shape != x.shape:
        raise ValueError(f"residual shape {tuple(residual.shape)} must equal x shape {tuple(x.shape)}")
    if residual.dtype != x.dtype:
        raise TypeError(f"residual dtype {residual.dtype} must match x dtype {x.dtype}")
    check_out("out", out, x.shape, x.dtype, x.device)
    check_out("residual_out", residual_out, x.shape, x.dtype, x.device)
    # Out of place only: wide rows are read twice, and h = x + residual is recomputed then.
    inputs = {"x": x, "residual": residual, "weight": weight}
    check_no_overlap("out", out, inputs)
    check_no_overlap("residual_out", residual_out, {**inputs, "out": out})
    return _run(x, residual, weight, eps, out, residual_out, config)
