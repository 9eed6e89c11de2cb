"""A GGUF model's projections quantized by one of the suite's weight-only recipes, for
accuracy deltas (perplexity, retrieval) against the unquantized model.

Each projection weight (out, in) is quantized as kernels/quant stores it and replaced by
the weight that stored format represents (kernels.quant.dequantize): the product the
weight-only GEMMs compute (tests/correctness/quant checks them against exactly this). The
embedding and the output head stay as the file has them.
"""
from __future__ import annotations

import dataclasses

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
