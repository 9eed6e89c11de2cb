"""A GGUF model's projections quantized by one of the suite's weight-only recipes, for
accuracy deltas (perplexity, retrieval) against the unquantized model.

Each projection weight (out, in) is quantized as kernels/quant stores it and replaced by
the weight that stored format represents (kernels.quant.dequantize): the product the
weight-only GEMMs compute (tests/correctness/quant checks them against exactly this). The
embedding and the output head stay as the file has them.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

from kernels.quant import dequantize, quantize_int4_weight, quantize_int4_weight_hqq, quantize_int8_weight

from .gguf_weights import GGUFModel

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def _int4(quantize, group):
    def run(w):
        g = group if w.shape[1] % group == 0 else 64  # SmolLM2's 576 inputs take groups of 64, not 128
        return quantize(w, g)
    return run


RECIPES = {
    "int8wo": quantize_int8_weight,
    "int4wo-128": _int4(quantize_int4_weight, 128),
    "int4wo-128-hqq": _int4(quantize_int4_weight_hqq, 128),
}


def quantize_weights(source: GGUFModel, recipe: str) -> GGUFModel:
    """A copy of `source` whose projections carry `recipe`'s rounding."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: use {', '.join(RECIPES)}")
    quantize = RECIPES[recipe]
    tensors = dict(source.tensors)
    for name, w in source.tensors.items():
        if name.startswith("blk.") and name.split(".")[2] in PROJECTIONS:
            tensors[name] = dequantize(quantize(w)).to(w.dtype)
    return dataclasses.replace(source, tensors=tensors)


# ---- recipes that quantize the activations too: the model runs through quantized_ops ----

def _mixq_product(bits: int):
    """MixQ (W8A8O16 or W4A4O16) as its kernels compute it (kernels.quant.mixq_reference):
    per-token int8/int4 activations, per-channel int8/int4 weights, outlier channels at full
    precision. W8A8O16's outliers: the channels over the threshold (6.0) in this input, as its
    online predictor converges to; W4A4O16's: the 128 channels of largest |x| in this input
    (its offline calibration, done here on the input itself)."""
    from kernels.quant import MixQLinear, mixq_reference

    layers = {}

    def product(x2, w):
        layer = layers.get(w.data_ptr())
        if layer is None:
            layer = layers[w.data_ptr()] = MixQLinear(w.t().float(), dtype=torch.bfloat16, bits=bits)
        amax = x2.abs().amax(dim=0)
        if bits == 8:
            idx = torch.nonzero(amax > layer.cache.threshold).flatten()
        else:
            idx = torch.topk(amax, min(128, amax.numel())).indices.sort().values
        return mixq_reference(x2, layer, idx.to(torch.int32)).to(x2.dtype)
    return product


def _fp8_rowwise_product(x2, w):
    """fp8 e4m3 activations (per token) and weights (per output channel), as the fp8 baseline
    quantizes them for torch._scaled_mm, the product accumulated in float32."""
    from kernels.quant.baselines import fp8_rowwise

    x8, w8t, sx, swt = fp8_rowwise(x2, w.t())  # w (in, out): its rows are w.t()'s
    return ((x8.float() @ w8t.float()) * sx * swt).to(x2.dtype)


ACTIVATION_RECIPES = {"mixq-w8a8o16": lambda: _mixq_product(8), "mixq-w4a4o16": lambda: _mixq_product(4),
                      "fp8-rowwise": lambda: _fp8_rowwise_product}


def quantized_ops(ops, recipe: str):
    """`ops` (models.get_ops("torch")) with every projection's product replaced by the
    recipe's (weights (in, out) as the layers hold them); norms, attention and the output
    head unchanged."""
    if recipe not in ACTIVATION_RECIPES:
        raise ValueError(f"unknown activation recipe {recipe!r}: use {', '.join(ACTIVATION_RECIPES)}")
    if getattr(ops, "name", None) != "torch":
        raise ValueError("quantized_ops wraps the torch backend (the recipes are simulated in PyTorch)")
    product = ACTIVATION_RECIPES[recipe]()

    def mm(x, w):
        return product(x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], w.shape[1])

    def linear(x, w, residual=None):
        y = mm(x, w)
        return y if residual is None else residual + y

    return SimpleNamespace(**{**vars(ops), "recipe": recipe, "linear": linear,
                              "rmsnorm_linear": lambda x, nw, w, eps: mm(ops.rms_norm(x, nw, eps), w),
                              "gated_mlp": lambda x, w1, w3: torch.nn.functional.silu(mm(x, w1)) * mm(x, w3)})
