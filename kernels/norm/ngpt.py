"""nGPT's hidden-state update (Loshchilov et al.), fused in one pass over each row:

    h_new = Norm(h + alpha * (Norm(y) - h)),    Norm(v) = v / max(||v||_2, eps)

(Norm as torch.nn.functional.normalize). h is the hidden state, y a block's output, alpha
a learned per-channel step (hidden,). Rows of any leading shape; hidden up to 16384.
Arithmetic in float32; fp16, bf16 or fp32 in and out.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.checks import (check_no_overlap, check_number, check_out, check_same_device, check_same_dtype,
                            check_tensor)
from kernels.launch import cdiv, pdl_launch_dependents, pdl_options, pdl_wait
from kernels.norm.rmsnorm import (MAX_SINGLE_BLOCK, _as_rows, _candidates, _check_config, _default_config,
                                  refuse_shape_options)
from kernels.tuning import LaunchSpace, pow2_bucket


@triton.jit
def _norm_or_eps(v, eps):
    """max(||row||_2, eps) per row, as F.normalize; a NaN norm (a NaN or infinite input) stays
    NaN, where tl.maximum's default would return eps and turn the row into huge values."""
    return tl.maximum(tl.sqrt(tl.sum(v * v, axis=1)), eps, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _ngpt_update_kernel(H, Y, ALPHA, OUT, stride_h, stride_y, stride_o, n_rows, n_cols, eps,
                        ROWS: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    pdl_launch_dependents(PDL)
    pdl_wait(PDL)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rows64 = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    alpha = tl.load(ALPHA + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    h = tl.load(H + rows64[:, None] * stride_h + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = tl.load(Y + rows64[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = y / _norm_or_eps(y, eps)[:, None]
    t = h + alpha[None, :] * (y - h)
    t = t / _norm_or_eps(t, eps)[:, None]
    tl.store(OUT + rows64[:, None] * stride_o + cols[None, :], t.to(OUT.dtype.element_ty), mask=mask)


# The same launch shape as RMSNorm's single-pass kernel (one row in registers), tuned apart.
LAUNCH = LaunchSpace("ngpt_update", _default_config, _candidates, _check_config)


def ngpt_update(h: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor, eps: float = 1e-12,
                out: torch.Tensor | None = None, *, config: dict | None = None) -> torch.Tensor:
    """Norm(h + alpha * (Norm(y) - h)) over the last dimension; see the module doc.
    out=h or out=y works in place (each row is read whole before it is written).
    config: launch options over the tuned or default ones (ROWS, num_warps)."""
    for name, t in (("h", h), ("y", y), ("alpha", alpha)):
        check_tensor(name, t)
    check_same_device(h=h, y=y, alpha=alpha)
    n_cols = h.shape[-1]
    check_same_dtype("y", y, "h", h)
    check_same_dtype("alpha", alpha, "h", h)
    if y.shape != h.shape:
        raise ValueError(f"y must match h: shape {tuple(h.shape)}; got {tuple(y.shape)}")
    if alpha.shape != (n_cols,):
        raise ValueError(f"alpha must have shape ({n_cols},); got {tuple(alpha.shape)}")
    if not 1 <= n_cols <= MAX_SINGLE_BLOCK:
        raise ValueError(f"hidden size {n_cols} is not supported: 1 <= hidden <= {MAX_SINGLE_BLOCK}")
    check_number("eps", eps, minimum=0.0)
    refuse_shape_options(config)
    check_out("out", out, h.shape, h.dtype, h.device)
    check_no_overlap("out", out, {"h": h, "y": y, "alpha": alpha}, in_place_ok=("h", "y"))
    h2, y2 = _as_rows(h, n_cols), _as_rows(y, n_cols)
    o = torch.empty(h.shape, dtype=h.dtype, device=h.device) if out is None else out
    o2 = o.view(-1, n_cols)
    n_rows = h2.shape[0]
    if n_rows == 0:
        return o
    key = dict(rows=pow2_bucket(n_rows), cols=n_cols, elem=h.element_size())
    cfg = LAUNCH.choose(h.device, key, config)
    _ngpt_update_kernel[(cdiv(n_rows, cfg["ROWS"]),)](
        h2, y2, alpha.contiguous(), o2, h2.stride(0), y2.stride(0), o2.stride(0), n_rows, n_cols, float(eps),
        ROWS=cfg["ROWS"], BLOCK_N=cfg["BLOCK_N"], num_warps=cfg["num_warps"], **pdl_options(h.device),
    )
    return o
