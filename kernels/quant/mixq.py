"""MixQ's mixed-precision linear layers in Triton: W8A8 (and W4A4) with fp16/bf16 outlier
channels.

    y = (Xq Wq) * sx * sw + X[:, O] W[O, :]

W (N, K) is quantized per output channel to int8 (Wq, sw; kernels/quant/quantize.py). The
input channels O whose |x| exceeds a threshold (default 6) are the outliers: they stay in
the activation dtype and multiply the matching rows of the high-precision weight. Every
other channel is quantized per token to int8 (sx from the largest non-outlier |x| of the
token), so the int8 tensor-core GEMM never sees the outliers' range. Two kernels:
  1. quantize: per-token scale over non-outlier channels, int8 activations with the
     outlier channels zeroed, and (optional) the per-channel max |x| of this call;
  2. GEMM: int32 accumulation of Xq Wq, then in the same program the outlier product in
     fp32, gathered by channel index straight from x and W, and one epilogue.
The outlier set O is predicted from earlier calls (MixQ's observation that the same
channels stay outliers): OutlierCache holds the prediction, compares it with the channel
maxima the quantize kernel recorded, counts hits, and grows the set on a miss. A miss costs
accuracy on that call (the new outlier is quantized with its token), never a wrong shape
or index. A MixQLinear, called, runs its cache itself: its first call keeps the channels
over the threshold in that call's own input, and every call after updates the cache.
A NaN in a row of x makes that row of y NaN; an inf gives +-inf or NaN as x w does (the
GEMM writes such rows again from the infs' signs, on a path finite inputs never take).
The high-precision weight is kept whole (K, N), so any channel can become an outlier; it
doubles the layer's memory, as in MixQ, but only the outlier rows are read per call.

W4A4O16 (bits=4): weights per output channel and activations per token on the symmetric
int4 grid [-7, 7], the outlier set fixed offline (calibrate(): the channels with the
largest calibration maxima, default 128). Hopper has no int4 tensor cores, so the values
are held one per byte and multiplied on the int8 ones, by the same two kernels; the
accuracy is int4's, the speed int8's.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.checks import check_int_option, check_pow2_option, check_tensor
from kernels.interpreter import INTERPRETING, exact_operand
from kernels.launch import cdiv, grouped_tile, next_power_of_2, tile_ranges, use_tma
from kernels.tuning import LaunchSpace, pow2_bucket

from .quantize import check_int, check_number, quantize_int8_weight, stored_scale
from .rounding import to_float

DTYPES = (torch.float16, torch.bfloat16)
X_COMPACT_MIN_ROWS = 256  # from this many rows x's outlier columns are gathered once (mixq_linear)
ONE_PASS_MAX_K = 8192  # the quantize kernel holds rows up to this long in registers (measured at 8192)
QMAX = {8: 127, 4: 7}


@triton.jit
def _round_half_away(v):
    return tl.where(v >= 0, tl.floor(v + 0.5), tl.ceil(v - 0.5))


@triton.jit
def _load_x(X, IS_OUT, rm, m_ok, rk, k_ok, stride_xm):
    """One (rows, K block) tile of x as fp32, and the block's predicted-outlier flags."""
    x = tl.load(X + rm[:, None].to(tl.int64) * stride_xm + rk[None, :], mask=m_ok[:, None] & k_ok[None, :],
                other=0.0).to(tl.float32)
    return x, tl.load(IS_OUT + rk, mask=k_ok, other=0) != 0


@triton.jit
def _max_nan(a, b):
    """max keeping NaN (one max.NaN instruction, as fast as tl.max's, which drops NaN)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _row_max(v):
    """v's max over axis 1, NaN where a row holds one. Under the interpreter two numpy
    reductions: there a reduction with a combine function of one's own runs element by
    element in Python (12x slower at 130 x 520)."""
    if INTERPRETING:
        has_nan = tl.max((v != v).to(tl.int32), axis=1) != 0
        return tl.where(has_nan, float("nan"), tl.max(v, axis=1))
    else:
        return tl.reduce(v, 1, _max_nan)


@triton.jit
def _row_scale(amax, qmax):
    """The per-token scale from the rows' max |x| over the quantized channels (amax keeps a
    NaN), and what x is divided by. A row holding a NaN: scale NaN (y's row is NaN). A row
    holding an inf: scale inf, so the GEMM computes the row apart, and divisor 3.4e38 (the
    largest float), which quantizes each inf to +-qmax and every finite x to 0 or +-1."""
    sx = tl.maximum(tl.div_rn(amax, qmax), 1e-12, propagate_nan=tl.PropagateNan.ALL)
    return sx, tl.where(sx == float("inf"), 3.4028234663852886e38, sx)


@triton.jit
def _store_quantized(XQ, x, out, sx, qmax, rm, m_ok, rk, k_ok, stride_qm):
    q = tl.minimum(tl.maximum(_round_half_away(tl.div_rn(x, sx[:, None])), -qmax), qmax)
    q = tl.where(out[None, :], 0.0, q)
    tl.store(XQ + rm[:, None].to(tl.int64) * stride_qm + rk[None, :], q.to(tl.int8),
             mask=m_ok[:, None] & k_ok[None, :])


@triton.jit
def _record_misses(X, IS_OUT, CH_MAX, rm, m_ok, K, stride_xm, threshold, BLOCK_K: tl.constexpr):
    """max |x| of these rows into CH_MAX for the misses: channels over the threshold that
    the cache did not predict. x is read again (from L2), in blocks: the kernel calls this
    only for rows that have a miss, so the common case carries none of its registers
    (recording in the quantization's own loop was much slower)."""
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < K
        x, out = _load_x(X, IS_OUT, rm, m_ok, rk, k_ok, stride_xm)
        col = tl.max(tl.abs(x), axis=0)
        tl.atomic_max(CH_MAX + rk, col, mask=k_ok & (col > threshold) & ~out)


@triton.jit
def _mixq_quantize_kernel(X, IS_OUT, XQ, SX, CH_MAX, M, K, stride_xm, stride_qm, qmax, threshold,
                          TRACK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                          MISS_BLOCK_K: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = rm < M
    # The row maximum is kept per element and reduced across the program's warps once, not
    # once per K block (the barriers of those reductions led Nsight Compute's stalls).
    # IEEE divisions (div_rn), as the reference's: with 16-bit inputs, x / sx often lands
    # exactly on a rounding tie, and the GPU's default fast division (2 ulp) breaks ties
    # differently (seen on an H100: one flipped int4 step moved an output by 4%).
    if BLOCK_K >= K:  # the whole row in one block: held in registers, x is read once
        rk = tl.arange(0, BLOCK_K)
        k_ok = rk < K
        x, out = _load_x(X, IS_OUT, rm, m_ok, rk, k_ok, stride_xm)
        amax = _row_max(tl.where(out[None, :], 0.0, tl.abs(x)))
        sx, div = _row_scale(amax, qmax)
        _store_quantized(XQ, x, out, div, qmax, rm, m_ok, rk, k_ok, stride_qm)
    else:
        amax_el = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            k_ok = rk < K
            x, out = _load_x(X, IS_OUT, rm, m_ok, rk, k_ok, stride_xm)
            amax_el = _max_nan(amax_el, tl.where(out[None, :], 0.0, tl.abs(x)))
        amax = _row_max(amax_el)
        sx, div = _row_scale(amax, qmax)
        for k0 in range(0, K, BLOCK_K):  # x again (from L2 where it fits)
            rk = k0 + tl.arange(0, BLOCK_K)
            k_ok = rk < K
            x, out = _load_x(X, IS_OUT, rm, m_ok, rk, k_ok, stride_xm)
            _store_quantized(XQ, x, out, div, qmax, rm, m_ok, rk, k_ok, stride_qm)
    tl.store(SX + rm, sx, mask=m_ok)
    # amax is over the channels outside the prediction: above the threshold means a miss
    if TRACK:
        if tl.max(amax, axis=0) > threshold:
            _record_misses(X, IS_OUT, CH_MAX, rm, m_ok, K, stride_xm, threshold, MISS_BLOCK_K)


@triton.jit
def _outlier_block(X, IDX, WH, o0, n_out, rm, rn, m_ok, n_ok, stride_xm, stride_whk, BLOCK_O: tl.constexpr,
                   X_COMPACT: tl.constexpr):
    """Outlier channels o0 .. o0 + BLOCK_O: x's columns (rows rm) and the high-precision
    weight's rows (columns rn), gathered by index; zeros past n_out. X_COMPACT: X is x's
    outlier columns already gathered, (M, n_out), so the tile reads contiguous rows."""
    ro = o0 + tl.arange(0, BLOCK_O)
    o_ok = ro < n_out
    ch = tl.load(IDX + ro, mask=o_ok, other=0)
    x_col = ro if X_COMPACT else ch
    xo = tl.load(X + rm[:, None].to(tl.int64) * stride_xm + x_col[None, :], mask=m_ok[:, None] & o_ok[None, :],
                 other=0.0)
    wo = tl.load(WH + ch[:, None].to(tl.int64) * stride_whk + rn[None, :], mask=o_ok[:, None] & n_ok[None, :], other=0.0)
    return xo, wo


@triton.jit
def _int8_tiles(XQ, WQ, k0, pid_m, pid_n, rm, rn, m_ok, n_ok, K, stride_qm, stride_wqk, stride_wqn,
                USE_TMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The K block k0 of the tile's int8 operands: xq (BLOCK_M, BLOCK_K), wq (BLOCK_K, BLOCK_N)."""
    if USE_TMA:  # descriptors over xq (M, K) and the weight as stored (N, K); past the edges: zeros
        a = XQ.load([pid_m * BLOCK_M, k0])
        b = WQ.load([pid_n * BLOCK_N, k0]).T
    else:
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < K
        a = tl.load(XQ + rm[:, None].to(tl.int64) * stride_qm + rk[None, :], mask=m_ok[:, None] & k_ok[None, :],
                    other=0)
        b = tl.load(WQ + rk[:, None].to(tl.int64) * stride_wqk + rn[None, :].to(tl.int64) * stride_wqn,
                    mask=k_ok[:, None] & n_ok[None, :], other=0)
    return a, b


@triton.jit
def _outliers_added(y, X, IDX, WH, n_out, rm, rn, m_ok, n_ok, stride_xm, stride_whk, BLOCK_O: tl.constexpr,
                    X_COMPACT: tl.constexpr):
    """y plus the outlier channels' product, x[:, O] W[O, :], in fp32."""
    # (Gathering the first outlier block before the int8 loop, to hide its latency, gained
    # nothing and took more shared memory.)
    for o0 in range(0, n_out, BLOCK_O):
        xo, wo = _outlier_block(X, IDX, WH, o0, n_out, rm, rn, m_ok, n_ok, stride_xm, stride_whk, BLOCK_O, X_COMPACT)
        y = tl.dot(exact_operand(xo), exact_operand(wo), y)
    return y


@triton.jit
def _store_inf_rows(Y, XQ, WQ, X, IDX, WH, sw, inf_rows, pid_m, pid_n, rm, rn, m_ok, n_ok, K, n_out, stride_qm,
                    stride_wqk, stride_wqn, stride_xm, stride_whk, stride_ym, USE_TMA: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr,
                    X_COMPACT: tl.constexpr):
    """The tile's rows whose quantized channels hold an inf, written again. x w is +-inf
    there, or NaN where w = 0 or where infinities of both signs meet, which an integer sum
    cannot tell; the quantize kernel left +-qmax at the infs (+-1 or 0 elsewhere), so the
    infs, made +-inf floats, are multiplied by the int8 weights in fp16 dots (IEEE: inf 0 =
    NaN, inf - inf = NaN), then by the channel scales, and the outliers added. Slow, and run
    only for tiles holding such rows, after the tile's store (its registers free)."""
    y = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a, b = _int8_tiles(XQ, WQ, k0, pid_m, pid_n, rm, rn, m_ok, n_ok, K, stride_qm, stride_wqk, stride_wqn,
                           USE_TMA, BLOCK_M, BLOCK_N, BLOCK_K)
        a_inf = tl.where(inf_rows[:, None] & (tl.abs(a.to(tl.int32)) > 1), tl.where(a > 0, float("inf"), float("-inf")),
                         0.0)
        y = tl.dot(a_inf.to(tl.float16), b.to(tl.float16), y)
    y = _outliers_added(y * sw[None, :], X, IDX, WH, n_out, rm, rn, m_ok, n_ok, stride_xm, stride_whk, BLOCK_O,
                        X_COMPACT)
    tl.debug_barrier()  # the tile's first store of these rows lands first
    tl.store(Y + rm[:, None].to(tl.int64) * stride_ym + rn[None, :], to_float(y, Y.dtype.element_ty),
             mask=(m_ok & inf_rows)[:, None] & n_ok[None, :])


@triton.jit
def _mixq_gemm_kernel(XQ, SX, X, IDX, WQ, SW, WH, Y, M, N, K, n_out,
                      stride_qm, stride_xm, stride_wqk, stride_wqn, stride_whk, stride_ym,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr,
                      GROUP_M: tl.constexpr, USE_TMA: tl.constexpr, X_COMPACT: tl.constexpr):
    """One (BLOCK_M, BLOCK_N) tile of y: the int8 GEMM, the scales, the outlier product.
    (Persistent programs, a flattened loop nest and warp specialization gained nothing on
    an H100. A plain Triton int8 GEMM ran as fast as its fp8 twin, Hopper's peaks being
    equal: the gap to torch._int_mm is this kernel's outlier epilogue, not int8.)"""
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm, rn, m_ok, n_ok = tile_ranges(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        a, b = _int8_tiles(XQ, WQ, k0, pid_m, pid_n, rm, rn, m_ok, n_ok, K, stride_qm, stride_wqk, stride_wqn,
                           USE_TMA, BLOCK_M, BLOCK_N, BLOCK_K)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
    sx = tl.load(SX + rm, mask=m_ok, other=0.0)
    sw = tl.load(SW + rn, mask=n_ok, other=0.0).to(tl.float32)
    y = acc.to(tl.float32) * sx[:, None] * sw[None, :]  # a row holding a NaN (scale NaN): NaN throughout, as x w
    y = _outliers_added(y, X, IDX, WH, n_out, rm, rn, m_ok, n_ok, stride_xm, stride_whk, BLOCK_O, X_COMPACT)
    tl.store(Y + rm[:, None].to(tl.int64) * stride_ym + rn[None, :], to_float(y, Y.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])
    inf_rows = sx == float("inf")
    if tl.max(inf_rows.to(tl.int32), axis=0) != 0:
        _store_inf_rows(Y, XQ, WQ, X, IDX, WH, sw, inf_rows, pid_m, pid_n, rm, rn, m_ok, n_ok, K, n_out, stride_qm,
                        stride_wqk, stride_wqn, stride_xm, stride_whk, stride_ym, USE_TMA, BLOCK_M, BLOCK_N, BLOCK_K,
                        BLOCK_O, X_COMPACT)


class OutlierCache:
    """The predicted outlier channels of one layer (is_out, idx), and how often the
    prediction held.

    On each call the quantize kernel records in ch_max the max |x| of the channels outside
    the prediction that exceeded the threshold (the misses). update() reads them (one device
    sync), counts a hit if there were none, adds them, and clears the maxima. seed(x) adds
    the channels over the threshold in x itself: a first call, with nothing to predict from
    (not counted). The set only grows: when adding every new channel would pass
    max_outliers, the largest fill the room left. MixQLinear calls both itself; a caller of
    mixq_linear calls update() as often as the hit rate should be known."""

    def __init__(self, k: int, device, threshold: float = 6.0, max_outliers: int = 512):
        check_int("k", k, 1)
        check_number("threshold", threshold)
        if not threshold > 0:
            raise ValueError(f"threshold must be positive (inf: no outliers), got {threshold}")
        check_int("max_outliers", max_outliers)
        self.threshold, self.max_outliers = float(threshold), int(max_outliers)
        self.is_out = torch.zeros(k, dtype=torch.int8, device=device)
        self.idx = torch.zeros(0, dtype=torch.int32, device=device)
        self.ch_max = torch.zeros(k, dtype=torch.float32, device=device)
        self.hits = self.checks = 0

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.checks if self.checks else None

    def update(self) -> bool:
        hit = self._add(self.ch_max)
        self.checks += 1
        self.hits += hit
        self.ch_max.zero_()
        return hit

    def seed(self, x2: torch.Tensor) -> None:
        """Adds the channels whose max |x| over the rows of x2 (M, K) exceeds the threshold."""
        if x2.shape[0]:
            self._add(x2.abs().amax(dim=0).float())

    def _add(self, ch_max: torch.Tensor) -> bool:
        """Adds the channels over the threshold in ch_max that the set lacks; True if none."""
        missed = (ch_max > self.threshold) & (self.is_out == 0)
        n_missed = int(missed.sum())  # the device sync
        if not n_missed:
            return True
        room = self.max_outliers - self.idx.numel()
        if n_missed <= room:
            new = self.is_out.bool() | missed
        else:  # the largest misses fill the room left
            new = self.is_out.bool().clone()
            if room > 0:
                new[torch.topk(torch.where(missed, ch_max, -1.0), room).indices] = True
        self.is_out = new.to(torch.int8)
        self.idx = new.nonzero().flatten().to(torch.int32)
        return False


def _quantize_default(rows: int, k: int) -> dict:
    # the whole row held in registers and read once where it fits, else x read twice
    return dict(QUANT_ROWS=1, QUANT_BLOCK_K=max(16, next_power_of_2(k)) if k <= ONE_PASS_MAX_K else 2048,
                QUANT_WARPS=8)


def _quantize_candidates(rows: int, k: int) -> list:
    whole = min(max(16, next_power_of_2(k)), 2**14)
    return [dict(QUANT_ROWS=1, QUANT_BLOCK_K=bk, QUANT_WARPS=w)
            for bk in sorted({1024, 2048, 8192, whole}) if bk <= whole for w in (4, 8, 16)]


def _quantize_check(cfg: dict) -> None:
    for name, low, high in (("QUANT_ROWS", 1, 32), ("QUANT_BLOCK_K", 16, 2**14), ("QUANT_WARPS", 1, 32)):
        check_pow2_option(cfg, name, low, high)


QUANTIZE_SPACE = LaunchSpace("mixq_quantize", _quantize_default, _quantize_candidates, _quantize_check)


def mixq_quantize(x2: torch.Tensor, is_out: torch.Tensor, ch_max: torch.Tensor | None = None, qmax: int = 127,
                  threshold: float = 0.0, *, config: dict | None = None):
    """Per-token symmetric quantization (grid [-qmax, qmax]) of the non-outlier channels of
    x2 (M, K): (xq int8 (M, K) with the outlier channels zeroed, sx float32 (M,)). With
    ch_max, also max |x| into it for the channels whose max exceeds threshold.
    config (launch options, space "mixq_quantize"): QUANT_ROWS rows per program,
    QUANT_BLOCK_K the K block (a block of the whole row: x read once), QUANT_WARPS."""
    check_tensor("x2", x2, dtypes=DTYPES)
    if x2.dim() != 2 or x2.shape[1] == 0 or (x2.shape[0] > 1 and x2.stride(1) != 1):
        raise ValueError(f"x2 must be (M, K) with K > 0 and unit stride along K, got shape {tuple(x2.shape)}, "
                         f"strides {x2.stride()}")
    M, K = x2.shape
    check_tensor("is_out", is_out, dtypes=(torch.int8,))
    if is_out.shape != (K,) or is_out.device != x2.device:
        raise ValueError(f"is_out must be int8 ({K},) on {x2.device}, got {tuple(is_out.shape)} on {is_out.device}")
    if ch_max is not None:
        check_tensor("ch_max", ch_max, dtypes=(torch.float32,))
        if ch_max.shape != (K,) or ch_max.device != x2.device or not ch_max.is_contiguous():
            raise ValueError(f"ch_max must be contiguous float32 ({K},) on {x2.device}, got {tuple(ch_max.shape)} "
                             f"on {ch_max.device}")
    xq = torch.empty(M, K, dtype=torch.int8, device=x2.device)
    sx = torch.empty(M, dtype=torch.float32, device=x2.device)
    if M:
        cfg = QUANTIZE_SPACE.choose(x2.device, dict(rows=pow2_bucket(M), k=K), config)
        rows, block_k = cfg["QUANT_ROWS"], cfg["QUANT_BLOCK_K"]
        _mixq_quantize_kernel[(cdiv(M, rows),)](
            x2, is_out, xq, sx, ch_max if ch_max is not None else sx, M, K, x2.stride(0), xq.stride(0), float(qmax),
            float(threshold),
            TRACK=ch_max is not None, BLOCK_M=rows, BLOCK_K=block_k, MISS_BLOCK_K=min(block_k, 1024),
            num_warps=cfg["QUANT_WARPS"])
    return xq, sx


class MixQLinear:
    """A linear layer y = x W^T (W (N, K), nn.Linear's layout) run as MixQ W8A8O16
    (bits=8: outliers predicted online) or W4A4O16 (bits=4: outliers fixed by calibrate()).
    Called, the layer finds its outliers itself (see __call__); mixq_linear(x, layer) runs
    it with whatever its cache holds."""

    def __init__(self, w: torch.Tensor, threshold: float = 6.0, max_outliers: int = 512, dtype=None, bits: int = 8):
        # building the layer is PyTorch only (a CPU layer serves mixq_reference); calling it runs the kernels
        check_tensor("w", w, dtypes=(torch.float16, torch.bfloat16, torch.float32), ndim_min=2, kernel_input=False)
        if w.dim() != 2 or w.shape[1] == 0:
            raise ValueError(f"w must be (out_features, in_features) with in_features > 0, got shape {tuple(w.shape)}")
        check_int("bits", bits)
        if bits not in QMAX:
            raise ValueError(f"bits must be 8 (W8A8O16) or 4 (W4A4O16), got {bits}")
        dtype = dtype or (w.dtype if w.dtype != torch.float32 else torch.bfloat16)
        if not isinstance(dtype, torch.dtype) or dtype not in DTYPES:
            raise TypeError(f"dtype {dtype!r} is not supported: torch.float16 or torch.bfloat16")
        if not bool(torch.isfinite(w).all()):
            raise ValueError("w holds inf or NaN: it has no scale on the quantized grid")
        self.shape, self.dtype, self.bits = tuple(w.shape), dtype, bits
        if bits == 8:
            q = quantize_int8_weight(w, dtype)
            wq_nk, self.sw = q.qweight, q.scale
        else:  # symmetric int4 per output channel, one value per byte
            wf = w.float()
            self.sw = stored_scale(wf.abs().amax(dim=1) / 7, dtype)
            wq_nk = torch.round(wf / self.sw.float()[:, None]).clamp(-7, 7).to(torch.int8)
        # Stored (N, K), K contiguous: Hopper's 8-bit tensor cores take K-major operands only.
        # wq is the (K, N) view of it (column-major, as torch._int_mm wants its second operand).
        self.wq = wq_nk.t()
        self.w_hp = w.t().to(dtype).contiguous()  # (K, N)
        self.cache = OutlierCache(w.shape[1], w.device, threshold, max_outliers)
        self.track = bits == 8  # W8A8O16 records channel maxima for the cache on every call
        self.calibrated = False
        self.calls = 0  # through __call__

    def calibrate(self, x_samples: torch.Tensor, n_outliers: int = 128) -> torch.Tensor:
        """Fix the outlier set offline (W4A4O16): the n_outliers channels with the largest
        max |x| over x_samples (..., K), NaNs ignored (they say nothing of a channel's range).
        Returns their indices."""
        K = self.shape[1]
        if not isinstance(x_samples, torch.Tensor):
            raise TypeError(f"x_samples must be a tensor, got {type(x_samples).__name__}")
        if x_samples.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise TypeError(f"x_samples has dtype {x_samples.dtype}; supported: float16, bfloat16, float32")
        if x_samples.device.type not in ("cpu", "cuda"):  # samples anywhere else are moved to the layer
            raise ValueError(f"x_samples is on {x_samples.device}: calibration reads its values, on cpu or cuda")
        if x_samples.shape[-1] != K:
            raise ValueError(f"calibration samples have {x_samples.shape[-1]} channels, the layer {K}")
        if not x_samples.numel():
            raise ValueError(f"x_samples holds no samples (shape {tuple(x_samples.shape)})")
        check_int("n_outliers", n_outliers)
        n = min(n_outliers, K)
        ch = x_samples.reshape(-1, K).abs().nan_to_num(nan=0.0).amax(dim=0).float()
        idx = torch.topk(ch, n).indices.sort().values.to(self.wq.device)
        self.cache.is_out.zero_()
        self.cache.is_out[idx] = 1
        self.cache.idx = idx.to(torch.int32)
        self.track = False
        self.calibrated = True
        return self.cache.idx

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """y = x W^T with the outliers found by the layer itself. W8A8O16 (track): the first
        call keeps the channels over the threshold in its own input (nothing to predict them
        from yet), and after every later call the cache adds the channels that call missed
        and counts its hit rate (OutlierCache.update: one device sync a call). W4A4O16: the
        set calibrate() fixed; an uncalibrated layer calibrates on its first input."""
        _check_x(x, self)
        first = self.calls == 0
        self.calls += 1
        if self.track and first:
            self.cache.seed(x.reshape(-1, self.shape[1]))
        elif self.bits == 4 and not self.calibrated:
            self.calibrate(x)
        y = mixq_linear(x, self)
        if self.track:
            if first:  # predicted from this input itself: no check of the prediction
                self.cache.ch_max.zero_()
            else:
                self.cache.update()
        return y


def _check_x(x, layer: MixQLinear) -> None:
    check_tensor("x", x, dtypes=DTYPES)
    N, K = layer.shape
    if x.shape[-1] != K:
        raise ValueError(f"x has {x.shape[-1]} input channels; the layer has in_features {K}")
    if x.dtype != layer.dtype:
        raise TypeError(f"x is {x.dtype} but the layer was built for {layer.dtype}")
    if x.device != layer.wq.device:
        raise ValueError(f"x is on {x.device}, the layer on {layer.wq.device}")


def _gemm_default(rows: int, n: int, k: int) -> dict:
    # 256-wide N tiles and 4 stages at many rows; xq and the weight read through TMA where
    # they allow it (faster than pointer loads on Hopper)
    bm = 128 if rows > 64 else (64 if rows > 16 else 16)
    return dict(BLOCK_M=bm, BLOCK_N=256 if bm == 128 else 128, BLOCK_K=128, BLOCK_O=32, GROUP_M=8,
                num_warps=8 if bm in (16, 128) else 4, num_stages=4, tma="auto",
                X_COMPACT_MIN_ROWS=X_COMPACT_MIN_ROWS)


def _gemm_candidates(rows: int, n: int, k: int) -> list:
    tiles = ((16, 128, 8), (32, 128, 8)) if rows <= 16 else ((64, 128, 4), (64, 256, 8)) if rows <= 64 else \
        ((128, 256, 8), (256, 128, 8), (128, 128, 8))
    return [dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, BLOCK_O=bo, num_warps=w, num_stages=ns)
            for bm, bn, w in tiles for ns in (3, 4) for bo in (32, 64)]


def _gemm_check(cfg: dict) -> None:
    for name, low, high in (("BLOCK_M", 16, 256), ("BLOCK_N", 16, 256), ("BLOCK_K", 16, 256), ("BLOCK_O", 16, 256),
                            ("num_warps", 1, 16)):
        check_pow2_option(cfg, name, low, high)
    check_int_option(cfg, "GROUP_M", 1, 64)
    check_int_option(cfg, "num_stages", 1, 8)
    if cfg["tma"] not in ("auto", True, False):
        raise ValueError(f"tma must be 'auto', True or False, got {cfg['tma']!r}")
    v = cfg["X_COMPACT_MIN_ROWS"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"X_COMPACT_MIN_ROWS must be a non-negative int, got {v!r}")


GEMM_SPACE = LaunchSpace("mixq_gemm", _gemm_default, _gemm_candidates, _gemm_check)


def mixq_linear(x: torch.Tensor, layer: MixQLinear, outlier_idx: torch.Tensor | None = None, *,
                config: dict | None = None) -> torch.Tensor:
    """MixQ (W8A8O16 or W4A4O16, by the layer) of x (..., K) with the layer's outliers (or the given
    channel indices, int32, all < K). config: launch options, those named QUANT_* for the
    quantize kernel (space "mixq_quantize"), the rest for the GEMM (space "mixq_gemm")."""
    if not isinstance(layer, MixQLinear):
        raise TypeError(f"layer must be a MixQLinear, got {type(layer).__name__}")
    _check_x(x, layer)
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict of launch options, got {type(config).__name__}")
    N, K = layer.shape
    cache = layer.cache
    if outlier_idx is None:
        idx, is_out = cache.idx, cache.is_out
    else:
        if not isinstance(outlier_idx, torch.Tensor) or outlier_idx.dtype != torch.int32 or outlier_idx.dim() != 1:
            raise TypeError("outlier_idx must be a 1-D int32 tensor of channel indices")
        if outlier_idx.device.type not in ("cpu", "cuda"):
            raise ValueError(f"outlier_idx is on {outlier_idx.device}: its channels are read, on cpu or cuda")
        idx = outlier_idx.to(x.device)
        if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < K):  # syncs; the cache's are valid
            raise ValueError(f"outlier_idx must lie in [0, {K}); got {int(idx.min())} .. {int(idx.max())}")
        if torch.unique(idx).numel() != idx.numel():
            raise ValueError("outlier_idx has repeated channels: each would be added once per repeat")
        is_out = torch.zeros(K, dtype=torch.int8, device=x.device)
        is_out[idx.long()] = 1
    x2 = x.reshape(-1, K)
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    M = x2.shape[0]
    y = torch.empty(*x.shape[:-1], N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    gemm_options = dict(config or {})
    quant_options = {name: gemm_options.pop(name) for name in list(gemm_options) if name.startswith("QUANT_")}
    cfg = GEMM_SPACE.choose(x.device, dict(rows=pow2_bucket(M), n=N, k=K), gemm_options)
    xq, sx = mixq_quantize(x2, is_out, cache.ch_max if layer.track else None, QMAX[layer.bits], cache.threshold,
                           config=quant_options)
    y2 = y.view(-1, N)
    bm = cfg["BLOCK_M"]
    if not idx.numel():  # no outliers: the index pointer must still be int32 to compile
        idx = torch.zeros(1, dtype=torch.int32, device=x.device)
        n_out = 0
    else:
        n_out = idx.numel()
    # TMA reads of xq and the int8 weight as stored (N, K)
    tma = use_tma(cfg.pop("tma"), (xq, layer.wq.t()), f"in_features to be a multiple of 16 (got {K})")
    if tma:
        xq_arg = TensorDescriptor.from_tensor(xq, [bm, cfg["BLOCK_K"]])
        wq_arg = TensorDescriptor.from_tensor(layer.wq.t(), [cfg["BLOCK_N"], cfg["BLOCK_K"]])
    else:
        xq_arg, wq_arg = xq, layer.wq
    # From X_COMPACT_MIN_ROWS rows, x's outlier columns are gathered once, (M, n_out), before
    # the GEMM: gathered by every output tile instead, a 32-byte sector per element, they
    # cost a large part of the GEMM's time. Below it, the extra launch costs more than it saves.
    compact_from = cfg.pop("X_COMPACT_MIN_ROWS")  # a host option: the kernel takes only X_COMPACT
    compact = n_out > 0 and M >= compact_from
    x_out = x2.index_select(1, idx) if compact else x2
    grid = (cdiv(M, bm) * cdiv(N, cfg["BLOCK_N"]),)
    _mixq_gemm_kernel[grid](
        xq_arg, sx, x_out, idx, wq_arg, layer.sw, layer.w_hp, y2, M, N, K, n_out,
        xq.stride(0), x_out.stride(0), layer.wq.stride(0), layer.wq.stride(1), layer.w_hp.stride(0), y2.stride(0),
        USE_TMA=tma, X_COMPACT=compact, **cfg)
    return y
