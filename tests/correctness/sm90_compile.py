"""Compile the suite's newer Triton kernels for Hopper (sm_90) without a GPU, at the
specializations that only a GPU run would otherwise reach: integer arguments equal to 1
become constants (a decode batch of one row), an absent pointer becomes None, and every
constexpr branch (split merged in the kernel, gated, LoRA, QK-norm, int4/int8) is taken.
The CPU lane runs kernels in Triton's interpreter, which forgives type errors the compiler
rejects (an index pointer of the wrong type compiled only on the GPU, and failed there).
A case compiled at its kernel's shipped launch must also keep its registers (spill_free): a
spill to local memory (LDL/STL in the SASS) made the vertical-slash attention nine times
slower on an H100 and passed every other test. Other cases print their count.
Usage: python tests/correctness/sm90_compile.py  (exit 1 on the first kernel that does not compile)."""
import inspect
import os
import re
import subprocess
import sys
import tempfile

os.environ["TRITON_INTERPRET"] = "0"  # before any kernel module is imported
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernels.attention.decode import _combine_kernel, _decode_kernel  # noqa: E402
from kernels.attention.prefill import _prefill_kernel  # noqa: E402
from kernels.attention.rope import _rope_kv_write_kernel  # noqa: E402
from kernels.attention.shared_prefix import _merge_kernel, _node_kernel  # noqa: E402
from kernels.attention.sparse_prefill import (  # noqa: E402
    _block_sparse_kernel, _bs_default, _estimate_scores_kernel, _estimate_stats_kernel, _vertical_slash_kernel,
    _vs_candidates, _vs_default,
)
from kernels.linear.fused import _fused_linear_kernel, _merge_splits_kernel, _prompt_kernel  # noqa: E402
from kernels.norm.ngpt import _ngpt_update_kernel  # noqa: E402
from kernels.norm.rmsnorm import _rmsnorm_kernel  # noqa: E402
from kernels.quant.mixq import _mixq_gemm_kernel, _mixq_quantize_kernel  # noqa: E402
from kernels.quant.wo_dequant import _dequant_kernel  # noqa: E402
from kernels.quant.wo_gemv import _wo_gemv_int4_kernel, _wo_gemv_int8_kernel  # noqa: E402
from kernels.quant.wo_mma import _wo_mma_kernel  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)


def check(fn, types, consts, num_warps=4, num_stages=3, spill_free=False):
    """Compile fn with argument types (default i32) and constants; raise on failure, and on
    a register spill where the case is the kernel's shipped launch (spill_free). Returns the
    count of local-memory instructions."""
    params = inspect.signature(fn.fn).parameters
    names = list(params)
    # a constexpr left out takes its default, as a launch does (not a runtime i32 compiling both branches)
    consts = {**{n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}, **consts}
    sig = {n: ("constexpr" if n in consts else types.get(n, "i32")) for n in names}
    # Pointers 16-byte aligned, as PyTorch allocates them, and strides and sizes divisible
    # by 16, as they are at the suite's shapes: Triton specializes both at launch, and
    # without them the compiler neither vectorizes nor pipelines with cp.async.
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if sig[n].startswith("*") or n.startswith("stride") or n in ("N", "K", "k_chunk")}
    compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs), target=HOPPER,
                              options={"num_warps": num_warps, "num_stages": num_stages})
    spills = local_memory_instructions(compiled.asm["cubin"])
    if spills and spill_free:
        raise RuntimeError(f"spills registers: {spills} local-memory loads and stores in its SASS")
    return spills


NVDISASM = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")


def local_memory_instructions(cubin: bytes) -> int:
    """LDL/STL instructions in the cubin's SASS: register spills (the suite's kernels keep no
    local arrays). 0 when nvdisasm is not shipped with triton."""
    if not os.path.exists(NVDISASM):
        return 0
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([NVDISASM, "-c", f.name], capture_output=True, text=True, check=True).stdout
    return len(re.findall(r"\b(?:LDL|STL)\b", sass))


def cases():
    bf = lambda names: {n: "*bf16" for n in names.split()}
    f32 = lambda names: {n: "*fp32" for n in names.split()}
    lin = bf("X G W1 W3 Y R A B") | f32("P1 P3 SS") | {"COUNT": "*i32", "eps": "fp32", "lora_scale": "fp32"}
    for gated, lora, m_one in ((True, False, True), (False, True, False), (False, False, True)):
        yield (f"fused_linear gated={gated} lora={lora} M={'1' if m_one else 'n'}", _fused_linear_kernel, lin,
               {**({"M": 1} if m_one else {}), "HAS_NORM": not lora, "GATED": gated, "SPLIT": True, "HAS_LORA": lora,
                "FIXUP": True, "USE_TMA": False, "HAS_RESIDUAL": lora, "PDL": m_one,
                "BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "BLOCK_R": 16})
    f16 = {n: "*fp16" for n in "X G W1 W3 Y R A B".split()}
    for tma in ({"USE_TMA": False}, {"USE_TMA": True, "XD": "tensordesc<fp16[16,64]>", "W1D": "tensordesc<fp16[64,128]>",
                                     "W3D": "tensordesc<fp16[64,128]>", "AD": "tensordesc<fp16[64,16]>"}):
        use_tma = tma.pop("USE_TMA")  # fp16 decode rows: each row scaled by a power of two
        yield (f"fused_linear fp16 row scale TMA={use_tma}", _fused_linear_kernel, lin | f16 | tma,
               {"HAS_NORM": True, "GATED": False, "SPLIT": True, "HAS_LORA": False, "FIXUP": True, "USE_TMA": use_tma,
                "HAS_RESIDUAL": False, "PDL": True, "BLOCK_M": 16, "BLOCK_N": 128 if use_tma else 64,
                "BLOCK_K": 64 if use_tma else 128, "BLOCK_R": 16, "ROW_SCALE": True})
    for block_m, gated, lora in ((16, False, True), (64, True, False)):  # x and the weights read through TMA
        tma = {"XD": f"tensordesc<bf16[{block_m},64]>", "W1D": "tensordesc<bf16[64,128]>",
               "W3D": "tensordesc<bf16[64,128]>", "AD": "tensordesc<bf16[64,16]>"}
        yield (f"fused_linear TMA BLOCK_M={block_m} gated={gated} lora={lora}", _fused_linear_kernel, lin | tma,
               {"HAS_NORM": not gated, "GATED": gated, "SPLIT": True, "HAS_LORA": lora, "FIXUP": True,
                "USE_TMA": True, "HAS_RESIDUAL": not gated, "PDL": True,
                "BLOCK_M": block_m, "BLOCK_N": 128, "BLOCK_K": 64, "BLOCK_R": 16})
    for gated, block_n in ((True, 128), (False, 128), (False, 256)):  # a prompt's rows, x and weights through TMA
        tma = {"XD": "tensordesc<bf16[128,64]>", "W1D": f"tensordesc<bf16[64,{block_n}]>",
               "W3D": f"tensordesc<bf16[64,{block_n}]>", "AD": "tensordesc<bf16[64,16]>"}
        yield (f"fused_linear prompt rows gated={gated} BLOCK_N={block_n}", _fused_linear_kernel, lin | tma,
               {"HAS_NORM": False, "GATED": gated, "SPLIT": False, "HAS_LORA": False, "FIXUP": False,
                "USE_TMA": True, "HAS_RESIDUAL": not gated, "PDL": True,
                "BLOCK_M": 128, "BLOCK_N": block_n, "BLOCK_K": 64, "BLOCK_R": 16, "GROUP_M": 8},
               dict(num_warps=8, num_stages=3, spill_free=block_n == 128))  # 128 x 128: the shipped launch
    for gated, block_n in ((True, 128), (False, 256)):  # the persistent prompt-row kernel (a tuner candidate)
        desc = {"XD": "tensordesc<bf16[128,64]>", "W1D": f"tensordesc<bf16[64,{block_n}]>",
                "W3D": f"tensordesc<bf16[64,{block_n}]>", "Y": "*bf16", "R": "*bf16"}
        yield (f"fused_linear persistent prompt rows gated={gated} BLOCK_N={block_n}", _prompt_kernel, desc,
               {"GATED": gated, "HAS_RESIDUAL": not gated, "BLOCK_M": 128, "BLOCK_N": block_n, "BLOCK_K": 64,
                "GROUP_M": 8}, dict(num_warps=8, num_stages=3))
    yield ("merge_splits", _merge_splits_kernel, f32("P1 P3 SS") | {"Y": "*bf16", "R": "*bf16", "eps": "fp32"},
           {"HAS_NORM": True, "GATED": True, "HAS_RESIDUAL": True, "PDL": True, "BLOCK_N": 256, "BLOCK_S": 16})
    wo = {"X": "*bf16", "S": "*bf16", "Z": "*bf16", "Y": "*bf16", "P": "*fp32", "COUNT": "*i32"}
    for bits in (4, 8):
        for swap in (False, True):
            yield (f"wo_mma int{bits} M=1 swap_ab={swap}", _wo_mma_kernel, wo | {"Q": "*u8" if bits == 4 else "*i8"},
                   {"M": 1, "BITS": bits, "GROUP": 128, "SPLIT": True, "SWAP_AB": swap,
                    "BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128})
    for masked in (False, True):
        for dt in ("bf16", "fp16"):
            io = {"X": f"*{dt}", "S": f"*{dt}", "Z": f"*{dt}", "Y": f"*{dt}"}
            yield (f"wo_gemv int4 masked={masked} {dt}", _wo_gemv_int4_kernel, wo | io | {"Q": "*i32"},
                   {"GROUP": 128, "STRIDE": 3584, "ROWS": 32, "WORDS": 128, "SPLIT": True,  # 4 warps
                    "MASKED": masked, "IS_BF16": dt == "bf16"})
            yield (f"wo_gemv int8 masked={masked} {dt}", _wo_gemv_int8_kernel, wo | io | {"Q": "*i8"},
                   {"BLOCK_N": 4, "BLOCK_W": 512, "SPLIT": True, "MASKED": masked, "IS_BF16": dt == "bf16", "ASM": True},
                   {"num_warps": 4, "num_stages": 3})  # the small-N default
    # the default launches: int4 one warp, no pipelining; int8 16 rows of 512 k over 4 warps
    yield ("wo_gemv int4 default launch", _wo_gemv_int4_kernel, wo | {"Q": "*i32"},
           {"GROUP": 128, "STRIDE": 3584, "ROWS": 32, "WORDS": 32, "SPLIT": True, "MASKED": False,
            "IS_BF16": True}, {"num_warps": 1, "num_stages": 1, "spill_free": True})
    yield ("wo_gemv int8 16 rows", _wo_gemv_int8_kernel, wo | {"Q": "*i8"},
           {"BLOCK_N": 16, "BLOCK_W": 128, "SPLIT": False, "MASKED": False, "IS_BF16": True, "ASM": True},
           {"num_warps": 4, "num_stages": 3})
    for swap in (False, True):
        yield (f"wo_mma int4 prefill fp16 swap_ab={swap}", _wo_mma_kernel,
               wo | {"X": "*fp16", "S": "*fp16", "Z": "*fp16", "Y": "*fp16", "Q": "*u8"},
               {"BITS": 4, "GROUP": 128, "SPLIT": False, "SWAP_AB": swap, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64},
               {"num_warps": 8, "num_stages": 3, "spill_free": True})  # the prefill tiles' launch (wo_mma._default)
        yield (f"wo_mma int4 prefill swap_ab={swap}", _wo_mma_kernel, wo | {"Q": "*u8"},
               {"BITS": 4, "GROUP": 128, "SPLIT": False, "SWAP_AB": swap, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128},
               {"num_warps": 8, "num_stages": 3, "spill_free": True})
    for bits in (4, 8):
        yield (f"dequant int{bits}", _dequant_kernel, {"Q": "*u8" if bits == 4 else "*i8", "S": "*bf16", "Z": "*bf16",
                                                      "W": "*bf16"},
               {"BITS": bits, "GROUP": 128, "BLOCK_R": 16, "BLOCK_C": 512})
    mixq = {"XQ": "*i8", "SX": "*fp32", "X": "*bf16", "IDX": "*i32", "WQ": "*i8", "SW": "*bf16", "WH": "*bf16",
            "Y": "*bf16"}
    tiles = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "BLOCK_O": 32, "GROUP_M": 8}
    launch = {"num_warps": 8, "num_stages": 4}  # mixq._gemm_default's at many rows
    yield ("mixq_gemm", _mixq_gemm_kernel, mixq, {"stride_wqk": 1, "USE_TMA": False, "X_COMPACT": False} | tiles, launch)
    yield ("mixq_gemm TMA, x's outliers compact", _mixq_gemm_kernel,
           mixq | {"XQ": "tensordesc<i8[128,128]>", "WQ": "tensordesc<i8[256,128]>"},
           {"USE_TMA": True, "X_COMPACT": True} | tiles, launch)
    yield ("mixq_quantize", _mixq_quantize_kernel,
           {"X": "*bf16", "IS_OUT": "*i8", "XQ": "*i8", "SX": "*fp32", "CH_MAX": "*fp32", "qmax": "fp32",
            "threshold": "fp32"}, {"TRACK": True, "BLOCK_M": 16, "BLOCK_K": 256, "MISS_BLOCK_K": 256})
    dec = bf("Q K V O QW KW") | f32("LSE O_PART LSE_PART X_O X_LSE") | {
        "KV_LENS": "*i32", "COUNT": "*i32", "qk_eps": "fp32", "scale_log2": "fp32", "X_SEQ_PARTS": "*i32",
        "X_PART_ROW0": "*i64", "X_PART_NODE": "*i32", "X_NODE_META": "*i32"}
    yield ("decode one chunk, shared-prefix partials merged before the store", _decode_kernel, dec,
           {"KV_LENS": None, "CAUSAL": True, "HEAD_DIM": 128, "BLOCK_M": 16, "BLOCK_N": 32, "WRITE_PARTIAL": False,
            "QK_NORM": False, "FIXUP": False, "UNIFORM_LEN": True, "PDL": True, "MERGE_EXTRA": True,
            "EARLY": True})
    yield ("decode uniform length, split merged in kernel", _decode_kernel, dec,
           {"KV_LENS": None, "CAUSAL": True, "HEAD_DIM": 128, "BLOCK_M": 16, "BLOCK_N": 64, "WRITE_PARTIAL": True,
            "QK_NORM": False, "FIXUP": True, "UNIFORM_LEN": True, "PDL": True})
    yield ("decode lengths tensor, QK-norm, one chunk", _decode_kernel, dec,
           {"q_tokens": 1, "CAUSAL": True, "HEAD_DIM": 64, "BLOCK_M": 16, "BLOCK_N": 128, "WRITE_PARTIAL": False,
            "QK_NORM": True, "FIXUP": False, "UNIFORM_LEN": False, "PDL": False})
    yield ("decode combine", _combine_kernel, f32("O_PART LSE_PART LSE") | {"O": "*bf16"},
           {"HEAD_DIM": 128, "BLOCK_S": 32, "PDL": True})
    pre = bf("Q K V O desc_k desc_v") | {"LSE": "*fp32", "KV_LENS": "*i32", "HEADS": "*i32", "qk_scale": "fp32"}
    for d, lens, lse in ((128, False, False), (64, True, True)):  # the default launches of both head dims
        yield (f"prefill head_dim={d} lengths tensor={lens} lse={lse}", _prefill_kernel, pre,
               {"HEAD_DIM": d, "BLOCK_M": 128, "BLOCK_N": 64, "CAUSAL": True, "UNIFORM_LEN": not lens,
                "WRITE_LSE": lse, "USE_TMA": False, "POS_SCALE": True}, {"num_warps": 8 if d == 128 else 4, "num_stages": 3})
    for bm, bn, st in ((128, 64, 3), (128, 128, 2)):  # keys and values through TMA
        desc = f"tensordesc<bf16[{bn},128]>"
        yield (f"prefill TMA BLOCK_M={bm} BLOCK_N={bn}", _prefill_kernel, pre | {"desc_k": desc, "desc_v": desc},
               {"HEAD_DIM": 128, "BLOCK_M": bm, "BLOCK_N": bn, "CAUSAL": True, "UNIFORM_LEN": True,
                "WRITE_LSE": False, "USE_TMA": True, "POS_SCALE": True}, {"num_warps": 8, "num_stages": st})
    # the shipped launch on the H100 (its table), and two softmax streams a program (tuning candidates)
    for bn, warps, st, tma, halves in ((64, 4, 2, True, False), (64, 8, 2, True, True), (64, 8, 3, True, True),
                                       (64, 8, 2, False, True), (64, 8, 3, False, True)):
        desc = {"desc_k": f"tensordesc<bf16[{bn},128]>", "desc_v": f"tensordesc<bf16[{bn},128]>"} if tma else {}
        yield (f"prefill BLOCK_N={bn} {warps} warps {st} stages tma={tma} halves={halves}", _prefill_kernel,
               pre | desc, {"HEAD_DIM": 128, "BLOCK_M": 128, "BLOCK_N": bn, "CAUSAL": True, "UNIFORM_LEN": True,
                            "WRITE_LSE": False, "USE_TMA": tma, "POS_SCALE": True, "HALVES": halves},
               {"num_warps": warps, "num_stages": st})
    # four query heads of a KV head a program (pack), 32 positions each: the H100 table's 8K launch
    desc = {"desc_k": "tensordesc<bf16[64,128]>", "desc_v": "tensordesc<bf16[64,128]>"}
    yield ("prefill pack=4 BLOCK_M=32 4 warps 2 stages tma=True", _prefill_kernel, pre | desc,
           {"HEAD_DIM": 128, "BLOCK_M": 32, "BLOCK_N": 64, "CAUSAL": True, "UNIFORM_LEN": True, "WRITE_LSE": False,
            "USE_TMA": True, "POS_SCALE": True, "PACK": 4}, {"num_warps": 4, "num_stages": 2})
    # a sliding window over a list of heads (sparse prefill's A-shape): the default launch and the dense tuned one
    for bm, warps, tma in ((128, 8, False), (64, 4, True)):
        desc = {"desc_k": "tensordesc<bf16[64,128]>", "desc_v": "tensordesc<bf16[64,128]>"} if tma else {}
        yield (f"prefill window BLOCK_M={bm} {warps} warps tma={tma}", _prefill_kernel, pre | desc,
               {"HEAD_DIM": 128, "BLOCK_M": bm, "BLOCK_N": 64, "CAUSAL": True, "UNIFORM_LEN": True, "WRITE_LSE": False,
                "USE_TMA": tma, "POS_SCALE": True, "HEAD_LIST": True, "WINDOW": True, "WINDOW_BLOCK": 64},
               {"num_warps": warps, "num_stages": 3, "spill_free": True})
    node = bf("Q KP VP desc_k desc_v") | f32("O_PART LSE_PART") | {"scale_log2": "fp32",
        "WORK": "*i32", "NODE_META": "*i32", "PART_ROW0": "*i64"}
    for tma in (False, True):  # shared-prefix decode: the node kernel, then the merge
        desc = {"desc_k": "tensordesc<bf16[64,128]>", "desc_v": "tensordesc<bf16[64,128]>"} if tma else {}
        yield (f"shared-prefix nodes tma={tma}", _node_kernel, node | desc,
               {"HEAD_DIM": 128, "BLOCK_M": 64, "BLOCK_N": 64, "USE_TMA": tma, "PDL": True},
               {"num_warps": 4, "num_stages": 2, "spill_free": True})
    yield ("shared-prefix merge", _merge_kernel, bf("O_SUF O") | f32("LSE_SUF O_PART LSE_PART LSE") | {
        "SEQ_PARTS": "*i32", "PART_ROW0": "*i64", "PART_NODE": "*i32", "NODE_META": "*i32"},
           {"HEAD_DIM": 128, "BLOCK_M": 16, "WRITE_LSE": True})
    est = bf("Q K") | f32("M_PART L_PART M L VERT SLASH") | {"qk_scale": "fp32"}
    yield ("sparse prefill: estimate, row statistics", _estimate_stats_kernel, est,
           {"HEAD_DIM": 128, "ROWS": 64, "BLOCK_N": 64}, {"spill_free": True})
    yield ("sparse prefill: estimate, column and diagonal sums (tl.gather)", _estimate_scores_kernel, est,
           {"HEAD_DIM": 128, "ROWS": 64, "BLOCK_N": 64, "WINDOW": 128}, {"spill_free": True})
    vs = _vs_default(128, 1 << 15, "vertical-slash")  # the default launch, which must keep its registers
    vs_types = bf("Q K V desc_k desc_v O") | {"LSE": "*fp32", "qk_scale": "fp32"} | {
        n: "*i32" for n in ("HEADS", "DIAG", "N_DIAG", "COLS", "BLOCK_COLS")}
    vs_consts = {"HEAD_DIM": 128, "BLOCK_M": 64, "SEARCH_STEPS": 10, "WRITE_LSE": True, "POS_SCALE": True}
    yield ("sparse prefill: vertical-slash attention", _vertical_slash_kernel, vs_types,
           vs_consts | {"BLOCK_N": vs["BLOCK_N"]},
           {"num_warps": vs["num_warps"], "num_stages": vs["num_stages"], "spill_free": True})
    yield ("sparse prefill: vertical-slash attention, range loops pipelined", _vertical_slash_kernel, vs_types,
           vs_consts | {"BLOCK_N": 64}, {"num_warps": 8, "num_stages": 3, "spill_free": True})  # a tuning candidate
    # tuning candidates: one loop over all of a block's range tiles (4 warps 3 stages: the
    # H100 table's 128K launch)
    for warps, stages in ((4, 2), (4, 3), (8, 3)):
        yield (f"sparse prefill: vertical-slash attention, flat range walk, {warps} warps {stages} stages",
               _vertical_slash_kernel, vs_types, vs_consts | {"BLOCK_N": 64, "FLAT": True},
               {"num_warps": warps, "num_stages": stages})
    for c in _vs_candidates(128, 1 << 15, "vertical-slash"):  # the candidates of two pattern blocks a program, or through TMA
        rows, tma = c.get("BLOCK_M", 64), c.get("tma", False)
        if rows == 64 and not tma:
            continue  # the one-block walks: above
        desc = f"tensordesc<bf16[{c['BLOCK_N']},128]>"
        # without TMA, two pattern blocks a program keep their registers
        yield (f"sparse prefill: vertical-slash attention, {rows} rows, {c['BLOCK_N']}-key tiles, {c['num_warps']} "
               f"warps {c['num_stages']} stages{', flat' if c['flat'] else ''}{', TMA' if tma else ''}",
               _vertical_slash_kernel, vs_types | ({"desc_k": desc, "desc_v": desc} if tma else {}),
               vs_consts | {"BLOCK_M": rows, "BLOCK_N": c["BLOCK_N"], "FLAT": c["flat"], "USE_TMA": tma},
               {"num_warps": c["num_warps"], "num_stages": c["num_stages"], "spill_free": not tma})
    yield ("sparse prefill: block-sparse attention", _block_sparse_kernel,
           bf("Q K V O") | {"LSE": "*fp32", "HEADS": "*i32", "BLOCKS": "*i32", "COUNTS": "*i32", "qk_scale": "fp32"},
           {"HEAD_DIM": 128, "BLOCK_M": 64, "WRITE_LSE": False, "POS_SCALE": True},
           {**_bs_default(128, 1 << 15), "spill_free": True})
    for qk in (True, False):
        w = "*bf16" if qk else "*fp32"  # without QK-norm the weight pointers are the cos table
        types = bf("Q K V QO KC VC") | {"COS": "*fp32", "SIN": "*fp32", "QW": w, "KW": w, "eps": "fp32"}
        # a decode step (a row a program, one warp) and a prompt (32 rows a program)
        yield (f"rope_kv_write qk_norm={qk} decode", _rope_kv_write_kernel, types,
               {"QK_NORM": qk, "HALF": 64, "BLOCK_T": 1, "q_tokens": 1, "pos": 1, "PDL": qk},
               {"num_warps": 1, "spill_free": True})
        yield (f"rope_kv_write qk_norm={qk} prompt", _rope_kv_write_kernel, types,
               {"QK_NORM": qk, "HALF": 64, "BLOCK_T": 32, "PDL": qk}, {"num_warps": 4, "spill_free": True})

    for residual in (True, False):  # the decode step's norms, launched with PDL on Hopper
        yield (f"rmsnorm residual={residual}", _rmsnorm_kernel, bf("X R W Y H_OUT") | {"eps": "fp32"},
               {"HAS_RESIDUAL": residual, "ROWS": 1, "BLOCK_N": 4096, "SINGLE_PASS": True, "PDL": True})
    yield ("ngpt_update", _ngpt_update_kernel, bf("H Y ALPHA OUT") | {"eps": "fp32"},
           {"ROWS": 1, "BLOCK_N": 2048, "PDL": True})


def main() -> int:
    print(f"triton {triton.__version__}", flush=True)
    failed = 0
    for name, fn, types, consts, *launch in cases():
        try:
            spills = check(fn, types, consts, **(launch[0] if launch else {}))
            print(f"ok   {name}" + (f" ({spills} local-memory instructions at this launch)" if spills else ""),
                  flush=True)
        except Exception as e:  # noqa: BLE001 - report every kernel, then fail
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
