"""Bad input to every public entry point of kernels/norm, kernels/attention, kernels/linear and
models, as one table: a row per (entry point, kind of bad input), expecting either a named
error (its type and a regex of its message) or the right answer against float64 (NaN at the
same places, infinities of the same sign, finite values close). Never a crash inside Triton.

Kinds: dtype, device (a 'meta' tensor: a wrong device on both lanes), shape, strides (the
right answer or a named error), overlap (an output or an in-place argument sharing memory with
an input), nan/inf, empty (0 rows or another empty dimension), type (Python types: a list for
a tensor, a float for an int, a string).

In-place use that the kernels support is a row with the right answer: rms_norm(out=x) and
ngpt_update(out=h or y); every other overlap is refused. The linear layers take no out= and
write nothing in place, so they have no overlap rows.

Left out: the PyTorch references (*_reference), which are the float64 yardstick and take what
PyTorch takes; KVCache(k, v) and SharedPrefixCache themselves, plain holders whose tensors
DecoderLayer.forward and shared_prefix_decode check;
and kernels/quant (its own tests).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from kernels.attention import (a_shape_index, block_sparse_attention, block_sparse_index, estimate_vertical_slash, gqa_attention_reference, gqa_decode,
                               prefill_attention, prefix_tree, rope_kv_write, rope_kv_write_reference, rope_tables,
                               shared_prefix_decode, shared_prefix_reference, sparse_prefill, vertical_slash_attention,
                               vertical_slash_index, vertical_slash_pattern, vertical_slash_prefill)
from kernels.attention.reference import vertical_slash_estimate_reference, vertical_slash_mask
from kernels.linear import gated_mlp, gated_mlp_reference, linear, lora_linear, lora_linear_reference, rmsnorm_linear
from kernels.linear import rmsnorm_linear_reference
from kernels.norm import (fused_add_rms_norm, fused_add_rms_norm_reference, ngpt_update, ngpt_update_reference,
                          rms_norm, rms_norm_reference)
from models import LLAMA3_8B, DecoderLayer, KVCache, ModelConfig, get_ops, tiny
from tests.helpers.tolerance import nonfinite_mismatch

pytestmark = pytest.mark.correctness

F16 = torch.float16
NAN, INF = float("nan"), float("inf")


# ---- the entry points: valid arguments, the call, and the float64 answer --------------------

@dataclass(frozen=True)
class Entry:
    call: Callable[[dict], Any]                  # the entry point on named arguments
    valid: Callable[[str], dict]                 # valid arguments on a device
    exact: Callable[[dict], tuple] | None = None  # float64 answers, from the arguments before the call
    outputs: Callable[[dict, Any], tuple] = lambda a, r: r if isinstance(r, tuple) else (r,)
    rel: float = 4 * torch.finfo(F16).eps        # finite values: error <= rel x the largest |answer|


def randn(*shape, device, scale=1.0, seed=0, dtype=F16):
    g = torch.Generator().manual_seed(seed + len(shape) + shape[-1])
    return (torch.randn(*shape, generator=g) * scale).to(dtype).to(device)


def _norm_args(device):
    return dict(x=randn(5, 64, device=device), weight=1 + randn(64, device=device, scale=0.1), eps=1e-6)


def _ngpt_args(device):
    h = torch.nn.functional.normalize(randn(5, 64, device=device, dtype=torch.float32), dim=-1).to(F16)
    return dict(h=h, y=randn(5, 64, device=device, seed=1), alpha=torch.full((64,), 0.05, dtype=F16, device=device))


def _decode_args(device):
    return dict(q=randn(2, 2, 4, 64, device=device), k_cache=randn(2, 24, 2, 64, device=device, seed=1),
                v_cache=randn(2, 24, 2, 64, device=device, seed=2),
                kv_lens=torch.tensor([20, 24], dtype=torch.int32, device=device), return_lse=True)


def _attention_exact(k_name, v_name):
    """The float64 reference of gqa_decode or prefill_attention called with these arguments."""
    def exact(a):
        lens = a.get("kv_lens")
        if isinstance(lens, int):
            lens = torch.full((a["q"].shape[0],), lens)
        return gqa_attention_reference(a["q"], a[k_name], a[v_name], lens, scale=a.get("scale"),
                                       causal=a.get("causal", True), compute_dtype=torch.float64, return_lse=True)
    return exact


def _prefill_args(device):
    return dict(q=randn(2, 6, 4, 64, device=device), k=randn(2, 10, 2, 64, device=device, seed=1),
                v=randn(2, 10, 2, 64, device=device, seed=2),
                kv_lens=torch.tensor([7, 10], dtype=torch.int32, device=device), return_lse=True)


def _shared_prefix_args(device):
    tree = prefix_tree([-1, 0, 0], [9, 5, 3], [1, 1, 2], device=device)  # a root, two children
    return dict(q=randn(3, 2, 4, 64, device=device), k_pool=randn(17, 2, 64, device=device, seed=1),
                v_pool=randn(17, 2, 64, device=device, seed=2), tree=tree,
                k_suffix=randn(3, 6, 2, 64, device=device, seed=3), v_suffix=randn(3, 6, 2, 64, device=device, seed=4),
                suffix_lens=torch.tensor([2, 6, 4], dtype=torch.int32, device=device), return_lse=True)


def _shared_prefix_exact(a):
    return shared_prefix_reference(a["q"], a["k_pool"], a["v_pool"], a["tree"], a["k_suffix"], a["v_suffix"],
                                   a.get("suffix_lens"), scale=a.get("scale"), compute_dtype=torch.float64,
                                   return_lse=True)


SPARSE_T = 70
SPARSE_COLS = torch.tensor([[[3, 40, 66], [0, 9, 65]]])  # (batch 1, 2 query heads, 3)
SPARSE_DIAGS = torch.tensor([[[0, 1, 30], [0, 70 - 1, 5]]])


def _sparse_args(device):
    return dict(q=randn(1, SPARSE_T, 2, 64, device=device), k=randn(1, SPARSE_T, 1, 64, device=device, seed=1),
                v=randn(1, SPARSE_T, 1, 64, device=device, seed=2),
                index=vertical_slash_index(SPARSE_COLS, SPARSE_DIAGS, SPARSE_T).to(device), return_lse=True)


def _sparse_exact(a):
    t = a["q"].shape[1]
    mask = vertical_slash_mask(t, SPARSE_COLS, SPARSE_DIAGS) if t == SPARSE_T else None
    return gqa_attention_reference(a["q"], a["k"], a["v"], scale=a.get("scale"), compute_dtype=torch.float64,
                                   return_lse=True, mask=mask)


def _tree_counts_exact(a):
    """The sequences under each node, counted by walking up from each sequence's node."""
    counts = [0.0] * len(a["parents"])
    for n in a["seq_node"]:
        while n != -1:
            counts[n] += 1
            n = a["parents"][n]
    return (torch.tensor(counts, dtype=torch.float64),)


def _rope_args(device):
    qkv = randn(2, 2, (4 + 2 + 2) * 64, device=device)  # q, k, v: views of one fused output
    q, k, v = (t.view(2, 2, -1, 64) for t in qkv.split([4 * 64, 2 * 64, 2 * 64], dim=-1))
    cos, sin = rope_tables(8, 64, 1e4, device)
    return dict(q=q, k=k, v=v, k_cache=randn(2, 8, 2, 64, device=device, seed=3),
                v_cache=randn(2, 8, 2, 64, device=device, seed=4), pos=3, cos=cos, sin=sin)


def _rope_exact(a):
    kc, vc = a["k_cache"].double().cpu(), a["v_cache"].double().cpu()
    q = rope_kv_write_reference(a["q"].cpu(), a["k"].cpu(), a["v"].cpu(), kc, vc, a["pos"], a["cos"].double().cpu(),
                                a["sin"].double().cpu(), *(None if w is None else w.cpu() for w in
                                                          (a.get("q_norm_weight"), a.get("k_norm_weight"))),
                                a.get("eps", 1e-6), torch.float64)
    return q, kc, vc


def _rope_tables_exact(a):
    n, d, theta = a["n_positions"], a["head_dim"], a["theta"]
    ang = torch.arange(n, dtype=torch.float64)[:, None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    return ang.cos(), ang.sin()


def _linear_args(device):
    return dict(x=randn(3, 64, device=device), w=randn(64, 40, device=device, scale=0.125, seed=1))


def _with_residual(y, a):
    return y if a.get("residual") is None else y + a["residual"].double().cpu()


def _lora_args(device):
    return dict(_linear_args(device), a=randn(64, 4, device=device, scale=0.125, seed=2),
                b=randn(4, 40, device=device, scale=0.3, seed=3), scale=0.5)


def _layer_cfg():
    return tiny(LLAMA3_8B)


@functools.lru_cache(maxsize=None)
def _layer(device, dtype):
    return DecoderLayer(_layer_cfg(), dtype=dtype, device=device, seed=0)


def _layer_args(device):
    cfg = _layer_cfg()
    cache = KVCache(randn(2, 8, cfg.n_kv_heads, cfg.head_dim, device=device, seed=5),
                    randn(2, 8, cfg.n_kv_heads, cfg.head_dim, device=device, seed=6))
    return dict(layer=_layer(device, F16), x=randn(2, 2, cfg.hidden, device=device, seed=7), cache=cache, pos=5,
                ops=get_ops("triton"))


def _layer_exact(a):
    c = a["cache"]
    cache = KVCache(c.k.double().cpu(), c.v.double().cpu())
    return (_layer("cpu", torch.float64)(a["x"].double().cpu(), cache, a["pos"], get_ops("torch")),)


def _call(fn, *positional):
    """fn on the named arguments, those named in `positional` passed by position."""
    def call(a):
        kw = {k: v for k, v in a.items() if k not in positional}
        return fn(*(a[k] for k in positional), **kw)
    return call


ENTRIES = {
    "rms_norm": Entry(_call(rms_norm), _norm_args,
                      lambda a: (rms_norm_reference(a["x"], a["weight"], a["eps"], torch.float64),)),
    "fused_add_rms_norm": Entry(
        _call(fused_add_rms_norm), lambda d: dict(_norm_args(d), residual=randn(5, 64, device=d, seed=9)),
        lambda a: fused_add_rms_norm_reference(a["x"], a["residual"], a["weight"], a["eps"], torch.float64)),
    "ngpt_update": Entry(_call(ngpt_update), _ngpt_args,
                         lambda a: (ngpt_update_reference(a["h"], a["y"], a["alpha"], a.get("eps", 1e-12), torch.float64),)),
    "gqa_decode": Entry(_call(gqa_decode, "q", "k_cache", "v_cache", "kv_lens"), _decode_args,
                        _attention_exact("k_cache", "v_cache")),
    "prefill_attention": Entry(_call(prefill_attention, "q", "k", "v", "kv_lens"), _prefill_args,
                               _attention_exact("k", "v")),
    "shared_prefix_decode": Entry(_call(shared_prefix_decode, "q", "k_pool", "v_pool", "tree", "k_suffix", "v_suffix"),
                                  _shared_prefix_args, _shared_prefix_exact),
    "prefix_tree": Entry(_call(prefix_tree), lambda d: dict(parents=[-1, 0], kv_len=[4, 2], seq_node=[1, 1, 0], device=d),
                         _tree_counts_exact, outputs=lambda a, r: (torch.tensor(r.seq_count, dtype=torch.float64),)),
    "vertical_slash_attention": Entry(_call(vertical_slash_attention, "q", "k", "v", "index"), _sparse_args,
                                      _sparse_exact),
    "vertical_slash_prefill": Entry(
        _call(vertical_slash_prefill, "q", "k", "v"),
        lambda d: dict({n: t for n, t in _sparse_args(d).items() if n != "index"}, n_columns=SPARSE_T,
                       n_diagonals=SPARSE_T),
        lambda a: gqa_attention_reference(a["q"], a["k"], a["v"], scale=a.get("scale"), compute_dtype=torch.float64,
                                          return_lse=True)),  # every key chosen: dense attention
    "estimate_vertical_slash": Entry(_call(estimate_vertical_slash, "q", "k"),
                                     lambda d: {n: t for n, t in _sparse_args(d).items() if n in ("q", "k")},
                                     lambda a: vertical_slash_estimate_reference(a["q"], a["k"], a.get("last_q", 64),
                                                                                 a.get("scale")), rel=2e-2),
    "vertical_slash_index": Entry(_call(vertical_slash_index, "columns", "diagonals", "T"),
                                  lambda d: dict(columns=SPARSE_COLS.to(d), diagonals=SPARSE_DIAGS.to(d), T=SPARSE_T)),
    "vertical_slash_pattern": Entry(_call(vertical_slash_pattern, "vertical", "slash"),
                                    lambda d: dict(vertical=torch.rand(1, 2, 50).to(d), slash=torch.rand(1, 2, 50).to(d),
                                                   n_columns=40, n_diagonals=120)),
    "block_sparse_attention": Entry(
        _call(block_sparse_attention, "q", "k", "v", "index"),
        lambda d: dict({n: t for n, t in _sparse_args(d).items() if n != "index"},
                       index=block_sparse_index(*(_sparse_args(d)[n] for n in ("q", "k")), 100)),
        lambda a: gqa_attention_reference(a["q"], a["k"], a["v"], scale=a.get("scale"), compute_dtype=torch.float64,
                                          return_lse=True)),  # every block kept: dense attention
    "block_sparse_index": Entry(_call(block_sparse_index, "q", "k"),
                                lambda d: dict({n: t for n, t in _sparse_args(d).items() if n in ("q", "k")}, top_k=3)),
    "sparse_prefill": Entry(
        _call(sparse_prefill, "q", "k", "v"),
        lambda d: dict({n: t for n, t in _sparse_args(d).items() if n != "index"}, dense_below=0,
                       pattern={0: ["stream_llm", SPARSE_T, SPARSE_T, 1.0], 1: ["block_sparse", 100, 0, 1.0]}),
        lambda a: gqa_attention_reference(a["q"], a["k"], a["v"], scale=a.get("scale"), compute_dtype=torch.float64,
                                          return_lse=True)),  # both heads' patterns cover every key: dense
    "a_shape_index": Entry(_call(a_shape_index), lambda d: dict(batch=1, heads=2, T=300, device=d)),
    "rope_kv_write": Entry(_call(rope_kv_write), _rope_args, _rope_exact,
                           outputs=lambda a, r: (r, a["k_cache"], a["v_cache"])),
    "rope_tables": Entry(_call(rope_tables), lambda d: dict(n_positions=8, head_dim=64, theta=1e4, device=d),
                         _rope_tables_exact, rel=1e-6),
    "linear": Entry(_call(linear, "x", "w"), _linear_args,
                    lambda a: (_with_residual(a["x"].double().cpu() @ a["w"].double().cpu(), a),)),
    "rmsnorm_linear": Entry(
        _call(rmsnorm_linear), lambda d: dict(_linear_args(d), norm_weight=1 + randn(64, device=d, scale=0.1, seed=4)),
        lambda a: (rmsnorm_linear_reference(a["x"], a["norm_weight"], a["w"], a.get("eps", 1e-6), torch.float64),)),
    "gated_mlp": Entry(
        _call(gated_mlp, "x", "w1", "w3"),
        lambda d: dict(x=randn(3, 64, device=d), w1=randn(64, 40, device=d, scale=0.125, seed=1),
                       w3=randn(64, 40, device=d, scale=0.125, seed=2)),
        lambda a: (gated_mlp_reference(a["x"], a["w1"], a["w3"], torch.float64),)),
    "lora_linear": Entry(_call(lora_linear, "x", "w", "a", "b"), _lora_args,
                         lambda a: (_with_residual(lora_linear_reference(a["x"], a["w"], a["a"], a["b"], a["scale"],
                                                                         torch.float64), a),)),
    "get_ops": Entry(_call(get_ops), lambda d: dict(backend="triton")),
    "ModelConfig": Entry(_call(ModelConfig), lambda d: dict(name="t", hidden=128, n_heads=2, n_kv_heads=1, head_dim=64,
                                                            ffn=96)),
    "tiny": Entry(_call(tiny), lambda d: dict(cfg=LLAMA3_8B)),
    "KVCache.empty": Entry(_call(KVCache.empty), lambda d: dict(cfg=_layer_cfg(), batch=2, capacity=8, dtype=F16, device=d),
                           lambda a: (torch.zeros(a["batch"], a["capacity"], 1, 64, dtype=torch.float64),) * 2,
                           outputs=lambda a, r: (r.k, r.v)),
    "DecoderLayer": Entry(_call(DecoderLayer), lambda d: dict(cfg=_layer_cfg(), dtype=F16, device=d)),
    "DecoderLayer.forward": Entry(_call(lambda layer, **kw: layer(**kw), "layer"), _layer_args, _layer_exact,
                                  rel=2 ** -6),  # a whole layer: several fp16 roundings compound
}


# ---- the table -------------------------------------------------------------------------------

RIGHT = "right answer vs float64"


@dataclass(frozen=True)
class Raises:
    type: type
    match: str


def TE(match):
    return Raises(TypeError, match)


def VE(match):
    return Raises(ValueError, match)


@dataclass(frozen=True)
class Row:
    entry: str
    kind: str
    what: str
    change: Callable[[dict], dict]  # valid arguments -> bad ones
    expect: Raises | str

    @property
    def id(self):
        return f"{self.entry}-{self.kind}-{re.sub(r'[^A-Za-z0-9.+=_-]+', '_', self.what)}"


def table(entry, *rows):
    """The rows of one entry point, each (kind, what, change, expect) or a list of them."""
    flat = [r for row in rows for r in (row if isinstance(row, list) else [row])]
    return [Row(entry, *r) for r in flat]


def put(**changes):
    """The arguments with some replaced, in order; a callable value is applied to the
    arguments as changed so far."""
    def change(a):
        for k, v in changes.items():
            a = {**a, k: v(a) if callable(v) else v}
        return a
    return change


def poke(name, value, then=None):
    """The argument with its first element set to value (in a copy), then `then`'s changes."""
    def change(a):
        t = a[name].clone(memory_format=torch.contiguous_format)
        t.view(-1)[0] = value
        a = {**a, name: t}
        return then(a) if then else a
    return change


def dev(a):
    """The device of the arguments' tensors."""
    return next(v.device for v in a.values() if isinstance(v, torch.Tensor))


def ones(n, dtype=F16):
    return lambda a: torch.ones(n, dtype=dtype, device=dev(a))


def on_meta(name):
    return VE(rf"\b{re.escape(name)}\b.*\bmeta\b")


def strided(t, dim=-1, step=2):
    """t's values in a tensor whose `dim` has stride `step` (other strides grown to match)."""
    shape = list(t.shape)
    shape[dim] *= step
    index = [slice(None)] * t.dim()
    index[dim] = slice(None, None, step)
    view = torch.zeros(shape, dtype=t.dtype, device=t.device)[tuple(index)]
    return view.copy_(t)


def padded_rows(t, pad=8):
    """t's values with rows (the second-to-last dim) further apart than contiguous."""
    big = torch.zeros(*t.shape[:-1], t.shape[-1] + pad, dtype=t.dtype, device=t.device)
    big[..., : t.shape[-1]] = t
    return big[..., : t.shape[-1]]


def shifted(name, by):
    """a[name] moved into a buffer where out= starts `by` elements after it: an output
    partly overlapping the input."""
    def change(a):
        t = a[name]
        buf = torch.empty(t.numel() + by, dtype=t.dtype, device=t.device)
        buf[: t.numel()] = t.reshape(-1)
        return {**a, name: buf[: t.numel()].view(t.shape), "out": buf[by: by + t.numel()].view(t.shape)}
    return change


def tensor_rows(*names):
    """For each tensor argument: int32 (a TypeError naming it), on 'meta' (a ValueError naming
    it), a list (a TypeError naming it)."""
    return [row for n in names for row in (
        ("dtype", f"{n} int32", put(**{n: lambda a, n=n: a[n].int()}), TE(rf"\b{n}\b (has )?dtype int32")),
        ("device", f"{n} meta", put(**{n: lambda a, n=n: a[n].to("meta")}), on_meta(n)),
        ("type", f"{n} list", put(**{n: lambda a, n=n: a[n].tolist()}), TE(rf"\b{n} must be a torch.Tensor, got list")),
    )]


def nan_rows(*inputs):
    """NaN in each input; +inf and -inf in the first: the right answer."""
    return ([("nan/inf", f"{n} nan", poke(n, NAN), RIGHT) for n in inputs]
            + [("nan/inf", f"{inputs[0]} {v}", poke(inputs[0], v), RIGHT) for v in (INF, -INF)])


def int_option_rows(name, minimum):
    return [("type", f"{name} {minimum - 1}", put(**{name: minimum - 1}), VE(f"{name} must be an int >= {minimum}")),
            ("type", f"{name} True", put(**{name: True}), TE(f"{name} must be an int, got bool")),
            ("type", f"{name} 2.0", put(**{name: 2.0}), TE(f"{name} must be an int, got float"))]


ROWS = table(
    "rms_norm",
    tensor_rows("x", "weight"),
    ("dtype", "weight fp32 for fp16 x", put(weight=lambda a: a["weight"].float()), TE("weight dtype .* must match x dtype")),
    ("dtype", "out fp32", put(out=lambda a: a["x"].float()), TE("out has dtype float32")),
    ("device", "out meta", put(out=lambda a: a["x"].to("meta")), on_meta("out")),
    ("shape", "weight too long", put(weight=ones(65)), VE(r"weight must have shape \(64,\)")),
    ("shape", "out wrong shape", put(out=lambda a: a["x"][:4]), VE(r"out must have shape \(5, 64\)")),
    ("shape", "x 0-d", put(x=lambda a: a["x"][0, 0]), VE("x must have at least 1 dimension")),
    ("strides", "x rows padded", put(x=lambda a: padded_rows(a["x"])), RIGHT),
    ("strides", "x column stride 2", put(x=lambda a: strided(a["x"])), RIGHT),
    ("strides", "x leading dims unmergeable", put(x=lambda a: a["x"][:4].reshape(2, 2, 64).transpose(0, 1)), RIGHT),
    ("strides", "weight stride 2", put(weight=lambda a: strided(a["weight"])), RIGHT),
    ("strides", "out strided", put(out=lambda a: padded_rows(torch.empty_like(a["x"]))), VE("out must be contiguous")),
    ("overlap", "out half a row past x", shifted("x", 32), VE("out must not overlap x")),
    ("overlap", "out over weight", put(x=lambda a: a["x"][:1], out=lambda a: a["weight"].view(1, 64)),
     VE("out must not overlap weight")),
    ("overlap", "out is x (in place)", put(out=lambda a: a["x"]), RIGHT),
    nan_rows("x", "weight"),
    ("empty", "0 rows", put(x=lambda a: a["x"][:0]), RIGHT),
    ("empty", "hidden 0", put(x=lambda a: a["x"][:, :0], weight=lambda a: a["weight"][:0]), VE("x has hidden size 0")),
    ("type", "eps str", put(eps="1e-6"), TE("eps must be a number, got str")),
    ("type", "eps None", put(eps=None), TE("eps must be a number, got NoneType")),
    ("type", "eps nan", put(eps=NAN), VE("eps must be a finite number >= 0")),
    ("type", "out list", put(out=[0.0]), TE("out must be a torch.Tensor, got list")),
) + table(
    "fused_add_rms_norm",
    tensor_rows("x", "residual", "weight"),
    ("dtype", "residual bf16 for fp16 x", put(residual=lambda a: a["residual"].bfloat16()),
     TE("residual dtype .* must match x")),
    ("dtype", "residual_out fp32", put(residual_out=lambda a: a["x"].float()), TE("residual_out has dtype float32")),
    ("device", "residual_out meta", put(residual_out=lambda a: a["x"].to("meta")), on_meta("residual_out")),
    ("shape", "residual one row short", put(residual=lambda a: a["residual"][:4]),
     VE(r"residual shape \(4, 64\) must equal x shape \(5, 64\)")),
    ("strides", "residual column stride 2", put(residual=lambda a: strided(a["residual"])), RIGHT),
    ("strides", "x rows padded", put(x=lambda a: padded_rows(a["x"])), RIGHT),
    ("strides", "residual_out strided", put(residual_out=lambda a: padded_rows(torch.empty_like(a["x"]))),
     VE("residual_out must be contiguous")),
    ("overlap", "out is x", put(out=lambda a: a["x"]), VE("out must not overlap x")),
    ("overlap", "out half a row past x", shifted("x", 32), VE("out must not overlap x")),
    ("overlap", "residual_out is residual", put(residual_out=lambda a: a["residual"]),
     VE("residual_out must not overlap residual")),
    ("overlap", "residual_out over out", put(out=lambda a: torch.empty_like(a["x"]), residual_out=lambda a: a["out"]),
     VE("residual_out must not overlap out")),
    nan_rows("x", "residual", "weight"),
    ("empty", "0 rows", put(x=lambda a: a["x"][:0], residual=lambda a: a["residual"][:0]), RIGHT),
    ("type", "eps str", put(eps="1e-6"), TE("eps must be a number, got str")),
) + table(
    "ngpt_update",
    tensor_rows("h", "y", "alpha"),
    ("dtype", "alpha fp32 for fp16 h", put(alpha=lambda a: a["alpha"].float()),
     TE("alpha has dtype float32; it must match h's float16")),
    ("device", "out meta", put(out=lambda a: a["h"].to("meta")), on_meta("out")),
    ("shape", "y one row short", put(y=lambda a: a["y"][:4]), VE("y must match h")),
    ("shape", "alpha too short", put(alpha=lambda a: a["alpha"][:63]), VE(r"alpha must have shape \(64,\)")),
    ("shape", "hidden 20000", put(h=lambda a: torch.ones(1, 20000, dtype=F16, device=dev(a)), y=lambda a: a["h"],
                                  alpha=lambda a: a["h"][0]), VE("hidden size 20000 is not supported")),
    ("strides", "h and y rows padded", put(h=lambda a: padded_rows(a["h"]), y=lambda a: padded_rows(a["y"])), RIGHT),
    ("strides", "alpha stride 2", put(alpha=lambda a: strided(a["alpha"])), RIGHT),
    ("overlap", "out half a row past h", shifted("h", 32), VE("out must not overlap h")),
    ("overlap", "out over alpha", put(h=lambda a: a["h"][:1], y=lambda a: a["y"][:1], out=lambda a: a["alpha"].view(1, 64)),
     VE("out must not overlap alpha")),
    ("overlap", "out is h (in place)", put(out=lambda a: a["h"]), RIGHT),
    ("overlap", "out is y (in place)", put(out=lambda a: a["y"]), RIGHT),
    nan_rows("h", "y", "alpha"),
    ("empty", "0 rows", put(h=lambda a: a["h"][:0], y=lambda a: a["y"][:0]), RIGHT),
    ("type", "eps negative", put(eps=-1e-12), VE("eps must be a finite number >= 0")),
    ("type", "eps str", put(eps="1e-12"), TE("eps must be a number, got str")),
) + table(
    "prefill_attention",
    tensor_rows("q", "k", "v"),
    ("dtype", "q fp32", put(q=lambda a: a["q"].float()), TE("q has dtype float32")),
    ("dtype", "v bf16 for fp16 q", put(v=lambda a: a["v"].bfloat16()), TE("v has dtype torch.bfloat16; it must match q's")),
    ("dtype", "kv_lens float", put(kv_lens=lambda a: a["kv_lens"].float()), TE("kv_lens must be an int32 or int64 tensor")),
    ("shape", "q 3-D", put(q=lambda a: a["q"][0]), VE("q must be 4-D")),
    ("shape", "head_dim 32", put(**{n: (lambda a, n=n: a[n][..., :32]) for n in ("q", "k", "v")}),
     VE("head_dim 32 is not supported")),
    ("shape", "3 q heads over 2 kv heads", put(q=lambda a: a["q"][:, :, :3]), VE("q's 3 heads are not a multiple")),
    ("shape", "v shorter", put(v=lambda a: a["v"][:, :8]), VE("differ in shape")),
    ("shape", "k batch 1", put(k=lambda a: a["k"][:1], v=lambda a: a["v"][:1]), VE(r"k must have shape \(batch=2")),
    ("shape", "kv_lens one short", put(kv_lens=lambda a: a["kv_lens"][:1]), TE(r"of shape \(2,\)")),
    ("shape", "kv_lens past the keys", put(kv_lens=lambda a: a["kv_lens"] + 1), VE(r"kv_lens must lie in \[0, 10\]")),
    ("shape", "kv_lens int past the keys", put(kv_lens=11), VE(r"kv_lens must lie in \[0, 10\]")),
    ("strides", "q tokens and heads transposed", put(q=lambda a: a["q"].transpose(1, 2).contiguous().transpose(1, 2)),
     RIGHT),
    ("strides", "k rows padded", put(k=lambda a: padded_rows(a["k"]), v=lambda a: padded_rows(a["v"])), RIGHT),
    ("strides", "k head_dim stride 2", put(k=lambda a: strided(a["k"])), VE("k must have unit stride along head_dim")),
    nan_rows("q", "k", "v"),
    ("empty", "batch 0", put(**{n: (lambda a, n=n: a[n][:0]) for n in ("q", "k", "v", "kv_lens")}), RIGHT),
    ("empty", "0 query tokens", put(q=lambda a: a["q"][:, :0]), RIGHT),
    ("empty", "kv_lens 0", put(kv_lens=0), RIGHT),
    ("empty", "kv_lens None", put(kv_lens=None), RIGHT),
    ("type", "kv_lens list", put(kv_lens=[7, 10]), TE("kv_lens must be None, an int or a tensor")),
    ("type", "kv_lens True", put(kv_lens=True), TE("kv_lens must be None, an int or a tensor")),
    ("type", "non-causal", put(causal=False), RIGHT),
    ("type", "scale 0.5", put(scale=0.5), RIGHT),
    ("type", "scale str", put(scale="0.5"), TE("scale must be a number, got str")),
    ("type", "causal str", put(causal="yes"), TE("causal must be a bool")),
) + table(
    "gqa_decode",
    tensor_rows("q", "k_cache", "v_cache"),
    ("dtype", "q fp32", put(q=lambda a: a["q"].float()), TE("q has dtype float32")),
    ("dtype", "k_cache bf16 for fp16 q", put(k_cache=lambda a: a["k_cache"].bfloat16()), TE("must share one dtype")),
    ("dtype", "kv_lens float", put(kv_lens=lambda a: a["kv_lens"].float()), TE("kv_lens must be an int, or an int32")),
    ("dtype", "out fp32", put(out=lambda a: a["q"].float()), TE("out has dtype float32")),
    ("device", "kv_lens meta", put(kv_lens=lambda a: a["kv_lens"].to("meta")), on_meta("kv_lens")),
    ("device", "out meta", put(out=lambda a: a["q"].to("meta")), on_meta("out")),
    ("shape", "q 3-D", put(q=lambda a: a["q"][0]), VE("q must be 4-D")),
    ("shape", "head_dim 32", put(**{n: (lambda a, n=n: a[n][..., :32]) for n in ("q", "k_cache", "v_cache")}),
     VE("unsupported head dim 32")),
    ("shape", "3 q heads over 2 kv heads", put(q=lambda a: a["q"][:, :, :3]), VE("mismatched groups: 3 query heads")),
    ("shape", "v_cache shorter", put(v_cache=lambda a: a["v_cache"][:, :20]), VE("k_cache shape .* must equal v_cache")),
    ("shape", "kv_lens one short", put(kv_lens=lambda a: a["kv_lens"][:1]), VE(r"kv_lens must have shape \(2,\)")),
    ("shape", "kv_lens past capacity", put(kv_lens=lambda a: a["kv_lens"] + 1), VE(r"kv_lens must lie in \[0, 24\]")),
    ("shape", "out wrong shape", put(out=lambda a: a["q"][:1]), VE("out must match q")),
    ("strides", "q tokens and heads transposed", put(q=lambda a: a["q"].transpose(1, 2).contiguous().transpose(1, 2)),
     RIGHT),
    ("strides", "kv caches rows padded",
     put(k_cache=lambda a: padded_rows(a["k_cache"]), v_cache=lambda a: padded_rows(a["v_cache"])), RIGHT),
    ("strides", "kv_lens stride 2", put(kv_lens=lambda a: strided(a["kv_lens"])), RIGHT),
    ("strides", "k_cache head_dim stride 2", put(k_cache=lambda a: strided(a["k_cache"])),
     VE("k_cache must have unit stride along head_dim")),
    ("strides", "out head_dim stride 2", put(out=lambda a: strided(torch.empty_like(a["q"]))),
     VE("out must have unit stride along head_dim")),
    ("strides", "out rows padded", put(out=lambda a: padded_rows(torch.empty_like(a["q"]))), RIGHT),
    ("overlap", "out is q", put(out=lambda a: a["q"]), VE("out must not overlap q")),
    ("overlap", "out over v_cache", put(out=lambda a: a["v_cache"].view(-1)[: a["q"].numel()].view(a["q"].shape)),
     VE("out must not overlap v_cache")),
    nan_rows("q", "k_cache", "v_cache"),
    ("nan/inf", "k_cache +inf split", poke("k_cache", INF, then=put(num_splits=3)), RIGHT),
    ("empty", "batch 0", put(**{n: (lambda a, n=n: a[n][:0]) for n in ("q", "k_cache", "v_cache", "kv_lens")}), RIGHT),
    ("empty", "0 query tokens", put(q=lambda a: a["q"][:, :0]), RIGHT),
    ("empty", "kv capacity 0", put(k_cache=lambda a: a["k_cache"][:, :0], v_cache=lambda a: a["v_cache"][:, :0],
                                   kv_lens=None), RIGHT),
    ("empty", "kv_lens 0", put(kv_lens=0), RIGHT),
    ("empty", "0 kv heads", put(k_cache=lambda a: a["k_cache"][:, :, :0], v_cache=lambda a: a["v_cache"][:, :, :0]),
     VE("mismatched groups")),
    ("type", "kv_lens float", put(kv_lens=3.0), TE("kv_lens must be an int")),
    ("type", "kv_lens list", put(kv_lens=[20, 24]), TE("kv_lens must be an int")),
    int_option_rows("num_splits", 1),
    ("type", "num_splits -1", put(num_splits=-1), VE("num_splits must be an int >= 1")),
    ("type", "max_kv_len str", put(max_kv_len="8"), TE("max_kv_len must be an int, got str")),
    ("type", "causal 1", put(causal=1), TE("causal must be a bool, got int")),
    ("type", "scale str", put(scale="0.1"), TE("scale must be a number, got str")),
    ("type", "scale inf", put(scale=INF), VE("scale must be a finite number")),
    ("type", "q_norm_weight list", put(q_norm_weight=[1.0] * 64, k_norm_weight=ones(64)),
     TE("q_norm_weight must be a torch.Tensor, got list")),
    ("type", "qk_norm_eps str", put(qk_norm_eps="1e-6"), TE("qk_norm_eps must be a number")),
) + table(
    "rope_kv_write",
    tensor_rows("q", "k", "v", "k_cache", "v_cache"),
    ("dtype", "v fp32", put(v=lambda a: a["v"].float()), TE("v has dtype")),
    ("dtype", "cos float64", put(cos=lambda a: a["cos"].double()), TE("cos has dtype float64; it must be float32")),
    ("dtype", "k_norm_weight bf16", put(q_norm_weight=ones(64), k_norm_weight=ones(64, torch.bfloat16)),
     TE("k_norm_weight has dtype bfloat16; it must match q's float16")),
    ("device", "sin meta", put(sin=lambda a: a["sin"].to("meta")), on_meta("sin")),
    ("shape", "k tokens differ", put(k=lambda a: a["k"][:, :1]), VE(r"k \(2, 1, 2, 64\)")),
    ("shape", "caches differ", put(v_cache=lambda a: a["v_cache"][:, :6]), VE("caches")),
    ("shape", "pos past capacity", put(pos=7), VE("do not fit the cache capacity 8")),
    ("shape", "tables too short", put(cos=lambda a: a["cos"][:4], sin=lambda a: a["sin"][:4]), VE("cos covers 4 positions")),
    ("shape", "head_dim 32", put(**{n: (lambda a, n=n: a[n][..., :32]) for n in ("q", "k", "v", "k_cache", "v_cache")}),
     VE("head_dim 32 is not supported")),
    ("strides", "q k v contiguous copies", put(q=lambda a: a["q"].contiguous(), k=lambda a: a["k"].contiguous()), RIGHT),
    ("strides", "caches rows padded",
     put(k_cache=lambda a: padded_rows(a["k_cache"]), v_cache=lambda a: padded_rows(a["v_cache"])), RIGHT),
    ("strides", "q head_dim stride 2", put(q=lambda a: strided(a["q"])), VE("q must have unit stride along head_dim")),
    ("strides", "cos stride 2", put(cos=lambda a: strided(a["cos"])), VE("cos must be a contiguous")),
    ("strides", "q_norm_weight stride 2", put(q_norm_weight=lambda a: strided(ones(64)(a)), k_norm_weight=ones(64)),
     VE(r"q_norm_weight must have shape \(64,\), contiguous")),
    ("overlap", "k_cache is v_cache", put(v_cache=lambda a: a["k_cache"]), VE("k_cache must not overlap v_cache")),
    ("overlap", "caches one position apart",  # two views of one (2, 9, 2, 64) buffer
     put(k_cache=lambda a: torch.zeros(2, 9, 2, 64, dtype=F16, device=dev(a))[:, :8],
         v_cache=lambda a: a["k_cache"].as_strided(a["k_cache"].shape, a["k_cache"].stride(), 2 * 64)),
     VE("k_cache must not overlap v_cache")),
    ("overlap", "k in k_cache", put(k=lambda a: a["k_cache"][:, 3:5]), VE("k_cache must not overlap k")),
    ("overlap", "v in v_cache", put(v=lambda a: a["v_cache"][:, :2]), VE("v_cache must not overlap v")),
    nan_rows("q", "k", "v"),
    ("nan/inf", "k nan with qk-norm", poke("k", NAN, then=put(q_norm_weight=ones(64), k_norm_weight=ones(64))), RIGHT),
    ("empty", "0 tokens", put(**{n: (lambda a, n=n: a[n][:, :0]) for n in ("q", "k", "v")}), RIGHT),
    ("empty", "batch 0", put(**{n: (lambda a, n=n: a[n][:0]) for n in ("q", "k", "v", "k_cache", "v_cache")}), RIGHT),
    ("type", "pos 0-d tensor", put(pos=lambda a: torch.tensor(3, device=dev(a))),
     TE(r"pos must be an int, got a Tensor: pass int\(pos\)")),
    ("type", "pos float", put(pos=3.0), TE("pos must be an int, got float")),
    ("type", "pos True", put(pos=True), TE("pos must be an int, got bool")),
    ("type", "pos str", put(pos="3"), TE("pos must be an int, got str")),
    ("type", "pos negative", put(pos=-1), VE("positions -1 .. 0 do not fit")),
    ("type", "cos list", put(cos=lambda a: a["cos"].tolist()), TE("cos must be a torch.Tensor")),
    ("type", "eps str", put(eps="1e-6"), TE("eps must be a number, got str")),
) + table(
    "rope_tables",
    ("dtype", "dtype int32", put(dtype=torch.int32), TE("dtype must be a floating-point torch.dtype")),
    ("shape", "head_dim odd", put(head_dim=63), VE("head_dim must be even")),
    ("shape", "n_positions negative", put(n_positions=-1), VE("n_positions must be an int >= 0")),
    ("nan/inf", "theta nan", put(theta=NAN), VE("theta must be a finite number")),
    ("nan/inf", "theta 0", put(theta=0.0), VE("theta must be > 0")),
    ("empty", "0 positions", put(n_positions=0), RIGHT),
    ("type", "n_positions float", put(n_positions=8.0), TE("n_positions must be an int, got float")),
    ("type", "head_dim str", put(head_dim="64"), TE("head_dim must be an int, got str")),
    ("type", "theta str", put(theta="1e4"), TE("theta must be a number, got str")),
    ("type", "dtype str", put(dtype="float32"), TE("dtype must be a floating-point torch.dtype")),
)


def linear_rows(weights, extra=()):
    """Rows shared by the four linear layers; `weights` names their (K, N) weights, `extra`
    their other tensors."""
    w = weights[0]
    k0 = {n: (lambda a, n=n: a[n][:0]) for n in (*weights, *extra) if n != "b"}  # K = 0 throughout
    return [
        *tensor_rows("x", *weights, *extra),
        ("dtype", "x fp32", put(x=lambda a: a["x"].float()), TE("x has dtype float32")),
        ("dtype", f"{w} bf16 for fp16 x", put(**{w: lambda a: a[w].bfloat16()}), TE(f"{w} dtype .* must match x dtype")),
        ("shape", f"{w} K off by one", put(**{w: lambda a: a[w][:63]}), VE(rf"{w} must have shape \(K=64, N\)")),
        ("shape", f"{w} 1-D", put(**{w: lambda a: a[w][:, 0]}), VE(rf"{w} must have shape \(K=64, N\)")),
        ("strides", "x rows padded", put(x=lambda a: padded_rows(a["x"])), RIGHT),
        ("strides", "x column stride 2", put(x=lambda a: strided(a["x"])), RIGHT),
        ("strides", "x 3-D", put(x=lambda a: a["x"][None]), RIGHT),
        ("strides", f"{w} rows padded", put(**{w: lambda a: padded_rows(a[w])}), RIGHT),
        ("strides", f"{w} transposed", put(**{w: lambda a: a[w].t().contiguous().t()}),
         VE(f"{w} must have unit stride along N")),
        *nan_rows("x", w),
        ("empty", "0 rows", put(x=lambda a: a["x"][:0]), RIGHT),
        ("empty", "K 0", put(x=lambda a: a["x"][:, :0], **k0), VE("K = 0")),
        *int_option_rows("num_splits", 1),
    ]


ROWS += table(
    "linear",
    linear_rows(["w"]),
    ("empty", "N 0", put(w=lambda a: a["w"][:, :0]), RIGHT),
    ("dtype", "residual bf16", put(residual=lambda a: torch.zeros(3, 40, dtype=torch.bfloat16, device=dev(a))),
     TE("residual has dtype bfloat16; it must match x's float16")),
    ("device", "residual meta", put(residual=lambda a: torch.zeros(3, 40, dtype=F16, device="meta")), on_meta("residual")),
    ("shape", "residual (3, 64)", put(residual=lambda a: a["x"]), VE(r"residual must have the output's shape \(3, 40\)")),
    ("strides", "residual transposed", put(residual=lambda a: randn(40, 3, device=dev(a), seed=8).t()), RIGHT),
    ("nan/inf", "residual nan", lambda a: poke("residual", NAN)({**a, "residual": randn(3, 40, device=dev(a), seed=8)}),
     RIGHT),
    ("type", "residual list", put(residual=[[0.0] * 40] * 3), TE("residual must be a torch.Tensor")),
) + table(
    "rmsnorm_linear",
    linear_rows(["w"], ["norm_weight"]),
    ("shape", "norm_weight too short", put(norm_weight=lambda a: a["norm_weight"][:63]),
     VE(r"norm_weight must have shape \(64,\)")),
    ("strides", "norm_weight stride 2", put(norm_weight=lambda a: strided(a["norm_weight"])), RIGHT),
    ("nan/inf", "norm_weight nan", poke("norm_weight", NAN), RIGHT),
    ("type", "eps str", put(eps="1e-6"), TE("eps must be a number, got str")),
    ("type", "eps negative", put(eps=-1.0), VE("eps must be a finite number >= 0")),
) + table(
    "gated_mlp",
    linear_rows(["w1", "w3"]),
    ("shape", "w3 narrower", put(w3=lambda a: a["w3"][:, :16]), VE("weights disagree on N")),
    ("strides", "w3 transposed", put(w3=lambda a: a["w3"].t().contiguous().t()), VE("w3 must have unit stride along N")),
    ("nan/inf", "w3 nan", poke("w3", NAN), RIGHT),
    ("type", "norm_weight (not an option)", put(norm_weight=ones(64)), TE("unexpected keyword argument 'norm_weight'")),
) + table(
    "lora_linear",
    linear_rows(["w"], ["a", "b"]),
    ("dtype", "a bf16", put(a=lambda a: a["a"].bfloat16()), TE("a has dtype bfloat16; it must match x's float16")),
    ("shape", "rank 65", put(a=lambda a: torch.zeros(64, 65, dtype=F16, device=dev(a)),
                             b=lambda a: torch.zeros(65, 40, dtype=F16, device=dev(a))),
     VE("LoRA rank 65 is not supported")),
    ("shape", "b rank off", put(b=lambda a: a["b"][:3]), VE(r"b must have shape \(rank=4, N=40\)")),
    ("strides", "a transposed", put(a=lambda a: a["a"].t().contiguous().t()),
     VE("a must have shape .* unit stride along rank")),
    ("strides", "b transposed", put(b=lambda a: a["b"].t().contiguous().t()), VE("b must have unit stride along N")),
    ("strides", "a rows padded", put(a=lambda a: padded_rows(a["a"])), RIGHT),
    ("nan/inf", "a nan", poke("a", NAN), RIGHT),
    ("nan/inf", "b -inf", poke("b", -INF), RIGHT),
    ("empty", "rank 0", put(a=lambda a: a["a"][:, :0], b=lambda a: a["b"][:0]), VE("LoRA rank 0 is not supported")),
    ("type", "scale str", put(scale="0.5"), TE("scale must be a number, got str")),
    ("type", "scale nan", put(scale=NAN), VE("scale must be a finite number")),
    ("type", "scale 0", put(scale=0.0), VE("scale must be non-zero")),
) + table(
    "get_ops",
    ("type", "backend 3", put(backend=3), TE("backend must be a str")),
    ("type", "backend None", put(backend=None), TE("backend must be a str")),
    ("type", "backend cuda", put(backend="cuda"), VE("unknown backend 'cuda'")),
) + table(
    "shared_prefix_decode",
    tensor_rows("q", "k_pool", "v_pool", "k_suffix", "v_suffix"),
    ("dtype", "q fp32", put(q=lambda a: a["q"].float()), TE("q has dtype float32")),
    ("dtype", "k_pool bf16 for fp16 q", put(k_pool=lambda a: a["k_pool"].bfloat16()),
     TE("k_pool has dtype torch.bfloat16; it must match q's")),
    ("dtype", "suffix_lens float", put(suffix_lens=lambda a: a["suffix_lens"].float()),
     TE("suffix_lens must be an int, or an int32 or int64 tensor")),
    ("shape", "q 3-D", put(q=lambda a: a["q"][0]), VE("q must be 4-D")),
    ("shape", "k_pool 4-D", put(k_pool=lambda a: a["k_pool"][None]), VE(r"k_pool must be 3-D \(pool_tokens")),
    ("shape", "pool short of the tree", put(k_pool=lambda a: a["k_pool"][:16], v_pool=lambda a: a["v_pool"][:16]),
     VE("the tree's nodes reach pool row 17; k_pool has 16 rows")),
    ("shape", "pool kv heads off", put(k_pool=lambda a: a["k_pool"][:, :1], v_pool=lambda a: a["v_pool"][:, :1]),
     VE(r"k_pool holds \(kv_heads, head_dim\) \(1, 64\)")),
    ("shape", "3 q heads over 2 kv heads", put(q=lambda a: a["q"][:, :, :3]), VE("3 query heads is not a multiple")),
    ("shape", "v_suffix shorter", put(v_suffix=lambda a: a["v_suffix"][:, :5]), VE("must equal v_suffix shape")),
    ("shape", "a sequence more than the tree", put(q=lambda a: torch.cat([a["q"], a["q"][:1]]),
                                                    k_suffix=lambda a: torch.cat([a["k_suffix"], a["k_suffix"][:1]]),
                                                    v_suffix=lambda a: torch.cat([a["v_suffix"], a["v_suffix"][:1]]),
                                                    suffix_lens=lambda a: torch.cat([a["suffix_lens"]] * 2)[:4]),
     VE("q has 4 sequences; the tree has 3")),
    ("shape", "suffix_lens past the capacity", put(suffix_lens=lambda a: a["suffix_lens"] + 1),
     VE(r"suffix_lens must lie in \[q_tokens=2, capacity=6\]")),
    ("shape", "suffix_lens below the query tokens", put(suffix_lens=1), VE(r"suffix_lens must lie in \[q_tokens=2")),
    ("strides", "k_suffix rows padded", put(k_suffix=lambda a: padded_rows(a["k_suffix"])), RIGHT),
    ("strides", "k_pool rows padded", put(k_pool=lambda a: padded_rows(a["k_pool"])), RIGHT),
    ("strides", "k_pool head_dim stride 2", put(k_pool=lambda a: strided(a["k_pool"])),
     VE("k_pool must have unit stride along head_dim")),
    nan_rows("q", "k_pool", "v_pool", "k_suffix", "v_suffix"),
    ("empty", "0 query tokens", put(q=lambda a: a["q"][:, :0]), RIGHT),
    ("empty", "suffix_lens None", put(suffix_lens=None), RIGHT),
    ("empty", "no shared node", put(tree=lambda a: prefix_tree([-1], [9], [-1, -1, -1], device=dev(a))), RIGHT),
    ("type", "tree dict", put(tree={"parents": [-1]}), TE("tree must be a PrefixTree")),
    ("type", "scale 0.5", put(scale=0.5), RIGHT),
    ("type", "scale str", put(scale="0.5"), TE("scale must be a number, got str")),
    ("type", "return_lse 1", put(return_lse=1), TE("return_lse must be a bool")),
) + table(
    "vertical_slash_attention",
    tensor_rows("q", "k", "v"),
    ("dtype", "v bf16 for fp16 q", put(v=lambda a: a["v"].bfloat16()), TE("v has dtype torch.bfloat16; it must match q's")),
    ("dtype", "index columns int64", put(index=lambda a: a["index"]._replace(columns=a["index"].columns.long())),
     VE(r"index.columns must be a contiguous int32 tensor")),
    ("device", "index on meta", put(index=lambda a: a["index"].to("meta")), VE(r"index.intervals must be .* on")),
    ("shape", "q 3-D", put(q=lambda a: a["q"][0]), VE("q must be 4-D")),
    ("shape", "head_dim 32", put(**{n: (lambda a, n=n: a[n][..., :32]) for n in ("q", "k", "v")}),
     VE("head_dim 32 is not supported")),
    ("shape", "k shorter than q", put(k=lambda a: a["k"][:, :60], v=lambda a: a["v"][:, :60]),
     VE("a prefill from scratch")),
    ("shape", "an index of another length", put(**{n: (lambda a, n=n: a[n][:, :60]) for n in ("q", "k", "v")}),
     VE("the index was made for 70 tokens; q has 60")),
    ("shape", "an index of other heads", put(q=lambda a: torch.cat([a["q"]] * 2, dim=2)),
     VE(r"index.intervals must be .* shape \(1, 4, \*, 2\)")),
    ("strides", "q tokens and heads transposed", put(q=lambda a: a["q"].transpose(1, 2).contiguous().transpose(1, 2)),
     RIGHT),
    ("strides", "k rows padded", put(k=lambda a: padded_rows(a["k"]), v=lambda a: padded_rows(a["v"])), RIGHT),
    ("strides", "k head_dim stride 2", put(k=lambda a: strided(a["k"])), VE("k must have unit stride along head_dim")),
    nan_rows("q", "k", "v"),
    ("empty", "batch 0", put(**{n: (lambda a, n=n: a[n][:0]) for n in ("q", "k", "v")},
                              index=lambda a: vertical_slash_index(SPARSE_COLS[:0], SPARSE_DIAGS[:0], SPARSE_T).to(dev(a))),
     RIGHT),
    ("type", "index tuple", put(index=lambda a: tuple(a["index"])), TE("index must be a SparseIndex")),
    ("type", "scale 0.5", put(scale=0.5), RIGHT),
    ("type", "scale str", put(scale="0.5"), TE("scale must be a number, got str")),
    ("type", "BLOCK_N 48", put(config={"BLOCK_N": 48}), VE("BLOCK_N must be 16, 32, 64 or 128")),
    ("type", "an unknown launch option", put(config={"block_n": 64}), VE("unknown launch option")),
    ("type", "return_lse 1", put(return_lse=1), TE("return_lse must be a bool")),
) + table(
    "vertical_slash_prefill",
    ("dtype", "q fp32", put(q=lambda a: a["q"].float()), TE("q has dtype float32")),
    ("shape", "k shorter than q", put(k=lambda a: a["k"][:, :60], v=lambda a: a["v"][:, :60]),
     VE("a prefill from scratch")),
    ("shape", "per-head budgets of the wrong shape", put(n_columns=lambda a: torch.tensor([5, 5])),
     VE(r"n_columns must be an int, a list of 2 ints or a \(1, 2\) tensor")),
    nan_rows("q", "k", "v"),
    ("type", "n_diagonals -1", put(n_diagonals=-1), VE("n_diagonals must be an int >= 0")),
    ("type", "n_columns 2.5", put(n_columns=2.5), TE("n_columns must be an int, got float")),
) + table(
    "estimate_vertical_slash",
    tensor_rows("q", "k"),
    ("shape", "k shorter than q", put(k=lambda a: a["k"][:, :60]), VE("a prefill from scratch")),
    ("empty", "0 tokens", put(q=lambda a: a["q"][:, :0], k=lambda a: a["k"][:, :0]), RIGHT),
    ("nan/inf", "k nan", poke("k", NAN), RIGHT),
    ("type", "last_q 0", put(last_q=0), VE("last_q must be an int >= 1")),
    ("type", "last_q 256", put(last_q=256), VE("last_q must be at most 128")),
) + table(
    "vertical_slash_index",
    ("dtype", "columns float", put(columns=lambda a: a["columns"].float()), TE("columns has dtype float32")),
    ("shape", "columns 2-D", put(columns=lambda a: a["columns"][0]), VE("columns must be 3-D")),
    ("shape", "a column past T", put(T=60), VE(r"columns must lie in \[0, 60\)")),
    ("shape", "a repeated diagonal", put(diagonals=lambda a: torch.cat([a["diagonals"], a["diagonals"][..., :1]], -1)),
     VE("diagonals repeat within a head")),
    ("shape", "counts of the wrong shape", put(n_columns=lambda a: torch.tensor([3])),
     VE(r"the count of columns must be an int tensor of shape \(1, 2\)")),
    ("type", "T str", put(T="70"), TE("T must be an int, got str")),
    ("type", "columns list", put(columns=lambda a: a["columns"].tolist()), TE("columns must be a torch.Tensor, got list")),
) + table(
    "vertical_slash_pattern",
    ("shape", "n_columns tensor of the wrong shape", put(n_columns=lambda a: torch.tensor([1])),
     VE(r"n_columns must be an int, a list of 2 ints or a \(1, 2\) tensor")),
    ("shape", "a budget list of the wrong length", put(n_columns=[5, 5, 5]), VE("n_columns lists 3 counts for 2 heads")),
    ("type", "a negative budget in a list", put(n_diagonals=[4, -1]), VE("n_diagonals must be an int >= 0")),
    ("type", "n_diagonals -3", put(n_diagonals=-3), VE("n_diagonals must be an int >= 0")),
) + table(
    "block_sparse_attention",
    tensor_rows("q", "k", "v"),
    ("shape", "an index of another length", put(**{n: (lambda a, n=n: a[n][:, :60]) for n in ("q", "k", "v")}),
     VE("the index was made for 70 tokens; q has 60")),
    ("shape", "head_dim 32", put(**{n: (lambda a, n=n: a[n][..., :32]) for n in ("q", "k", "v")}),
     VE("head_dim 32 is not supported")),
    ("strides", "k rows padded", put(k=lambda a: padded_rows(a["k"]), v=lambda a: padded_rows(a["v"])), RIGHT),
    nan_rows("q", "k", "v"),
    ("type", "index tuple", put(index=lambda a: tuple(a["index"])), TE("index must be a BlockIndex")),
    ("type", "num_warps 3", put(config={"num_warps": 3}), VE(r"num_warps must be one of \(1, 2, 4, 8, 16\)")),
    ("type", "scale 0.5", put(scale=0.5), RIGHT),
) + table(
    "block_sparse_index",
    tensor_rows("q", "k"),
    ("shape", "k shorter than q", put(k=lambda a: a["k"][:, :60]), VE("a prefill from scratch")),
    ("type", "top_k 0", put(top_k=0), VE("top_k must be an int >= 1")),
    ("type", "top_k 1.5", put(top_k=1.5), TE("top_k must be an int, got float")),
) + table(
    "sparse_prefill",
    tensor_rows("q", "k", "v"),
    ("shape", "k shorter than q", put(k=lambda a: a["k"][:, :60], v=lambda a: a["v"][:, :60]),
     VE("a prefill from scratch")),
    ("shape", "a pattern for head 5", put(pattern={5: ["stream_llm", 1, 1]}), VE("pattern names head 5; q has 2")),
    nan_rows("q", "k", "v"),
    ("empty", "0 tokens", put(**{n: (lambda a, n=n: a[n][:, :0]) for n in ("q", "k", "v")}), RIGHT),
    ("type", "pattern list", put(pattern=[["stream_llm", 1, 1]]), TE("pattern must be a dict")),
    ("type", "an unknown pattern", put(pattern={0: ["sliding", 1, 1]}), VE("type one of")),
    ("type", "dense_below -1", put(dense_below=-1), VE("dense_below must be an int >= 0")),
    ("type", "dense below the length", put(dense_below=71), RIGHT),
) + table(
    "a_shape_index",
    ("type", "sink -1", put(sink=-1), VE("sink must be an int >= 0")),
    ("type", "window 1.5", put(window=1.5), TE("window must be an int, got float")),
) + table(
    "prefix_tree",
    ("shape", "a parent after its child", put(parents=[1, -1]), VE(r"node 0's parent 1 must be -1 \(a root\)")),
    ("shape", "kv_len one short", put(kv_len=[4]), VE("kv_len has 1 entries for 2 nodes")),
    ("shape", "a sequence's node past the tree", put(seq_node=[1, 2]), VE("sequence 1's node 2 is not a node")),
    ("shape", "sequences of a node apart", put(parents=[-1, -1], seq_node=[0, 1, 0]),
     VE(r"the sequences under node 0 \(\[0, 2\]\) are not adjacent")),
    ("shape", "negative length", put(kv_len=[4, -2]), VE("node 1 has a negative length -2")),
    ("empty", "no sequence", put(seq_node=[]), RIGHT),
    ("type", "parents floats", put(parents=[-1.0, 0.0]), TE("parents must hold ints, got -1.0")),
    ("type", "kv_len str", put(kv_len="42"), TE("kv_len must hold ints, got '4'")),
) + table(
    "ModelConfig",
    ("shape", "0 kv heads", put(n_kv_heads=0), VE("n_kv_heads must be >= 1")),
    ("shape", "3 heads over 2 kv heads", put(n_heads=3, n_kv_heads=2), VE("3 heads is not a multiple of 2")),
    ("shape", "head_dim odd", put(head_dim=63), VE("head_dim must be even")),
    ("shape", "lora_rank -1", put(lora_rank=-1), VE("lora_rank must be >= 0")),
    ("nan/inf", "eps nan", put(eps=NAN), VE("eps must be a finite number >= 0")),
    ("type", "hidden str", put(hidden="128"), TE("hidden must be an int, got str")),
    ("type", "ffn float", put(ffn=96.0), TE("ffn must be an int, got float")),
    ("type", "qk_norm 1", put(qk_norm=1), TE("qk_norm must be a bool, got int")),
    ("type", "eps str", put(eps="1e-5"), TE("eps must be a number, got str")),
) + table(
    "tiny",
    ("type", "cfg str", put(cfg="llama3-8b"), TE("cfg must be a ModelConfig, got str")),
) + table(
    "KVCache.empty",
    ("type", "cfg None", put(cfg=None), TE("cfg must be a ModelConfig, got NoneType")),
    ("type", "capacity float", put(capacity=8.0), TE("capacity must be an int, got float")),
    ("shape", "batch -1", put(batch=-1), VE("batch must be an int >= 0")),
    ("empty", "batch 0", put(batch=0), RIGHT),
) + table(
    "DecoderLayer",
    ("type", "cfg dict", put(cfg={}), TE("cfg must be a ModelConfig, got dict")),
    ("dtype", "dtype int32", put(dtype=torch.int32), TE("dtype must be one of")),
    ("type", "seed str", put(seed="0"), TE("seed must be an int, got str")),
) + table(
    "DecoderLayer.forward",
    ("dtype", "x fp32", put(x=lambda a: a["x"].float()), TE("x has dtype torch.float32")),
    ("dtype", "cache.v bf16", put(cache=lambda a: KVCache(a["cache"].k, a["cache"].v.bfloat16())),
     TE("cache.v has dtype torch.bfloat16")),
    ("device", "x meta", put(x=lambda a: a["x"].to("meta")), on_meta("x")),
    ("shape", "x hidden off", put(x=lambda a: a["x"][..., :64]), VE(r"x must have shape \(batch, tokens, hidden=256\)")),
    ("shape", "x 2-D", put(x=lambda a: a["x"][0]), VE("x must have shape")),
    ("shape", "cache batch off", put(cache=lambda a: KVCache(a["cache"].k[:1], a["cache"].v[:1])),
     VE(r"cache.k must have shape \(batch=2")),
    ("shape", "pos past capacity", put(pos=7), VE("positions 7 .. 8 do not fit the cache capacity 8")),
    ("strides", "x hidden stride 10", put(x=lambda a: padded_rows(a["x"].transpose(1, 2)).transpose(1, 2)), RIGHT),
    ("overlap", "cache.k is cache.v", put(cache=lambda a: KVCache(a["cache"].k, a["cache"].k)),
     VE("k_cache must not overlap v_cache")),
    ("nan/inf", "x nan", poke("x", NAN), RIGHT),
    ("empty", "batch 0", put(x=lambda a: a["x"][:0], cache=lambda a: KVCache(a["cache"].k[:0], a["cache"].v[:0])), RIGHT),
    ("type", "x list", put(x=lambda a: a["x"].tolist()), TE("x must be a torch.Tensor, got list")),
    ("type", "cache tuple", put(cache=lambda a: (a["cache"].k, a["cache"].v)), TE("cache must be a KVCache")),
    ("type", "pos float", put(pos=5.0), TE("pos must be an int, got float")),
    ("type", "pos tensor", put(pos=lambda a: torch.tensor(5)), TE("pos must be an int, got a Tensor")),
    ("type", "ops str", put(ops="triton"), TE("ops must come from models.get_ops")),
)


# ---- the test --------------------------------------------------------------------------------

def assert_right(got, exact, rel):
    """NaN at the same places, infinities of the same sign, finite values within rel x the
    largest finite |answer|."""
    assert len(got) == len(exact)
    for i, (g, e) in enumerate(zip(got, exact)):
        g, e = g.detach().double().cpu(), e.detach().double().cpu()
        assert g.shape == e.shape, f"output {i}: shape {tuple(g.shape)}, float64 {tuple(e.shape)}"
        why = nonfinite_mismatch(g, e)
        assert why is None, f"output {i}: {why}"
        fin = e.isfinite()
        if fin.any():
            err = (g[fin] - e[fin]).abs().max().item()
            assert err <= rel * max(e[fin].abs().max().item(), 1e-3), f"output {i}: max error {err:.3g}"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on NaN arithmetic
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(device, row):
    entry = ENTRIES[row.entry]
    args = row.change(entry.valid(device))
    if row.expect == RIGHT:
        exact = entry.exact({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in args.items()})
        got = entry.outputs(args, entry.call(args))
        assert_right(got, exact, entry.rel)
    else:
        with pytest.raises(row.expect.type, match=row.expect.match):
            entry.call(args)


def test_every_entry_point_has_rows():
    """Every public name of the kernel packages (its references aside) and of models is here."""
    import kernels.attention
    import kernels.linear
    import kernels.norm
    import models

    packages = (kernels.norm, kernels.attention, kernels.linear)
    public = {n for m in packages for n in m.__all__ if not n.endswith("_reference")}
    public |= {n for n in models.__all__ if callable(getattr(models, n))} - {"KVCache", "SharedPrefixCache"}
    public |= {"KVCache.empty", "DecoderLayer.forward"}
    assert public == set(ENTRIES), f"missing: {public - set(ENTRIES)}; unknown: {set(ENTRIES) - public}"
    assert {r.entry for r in ROWS} == set(ENTRIES)
    assert len({r.id for r in ROWS}) == len(ROWS), "row ids must be unique"
