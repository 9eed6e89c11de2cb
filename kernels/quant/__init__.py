"""Quantized linear layers: weight-only int8 / int4 (min-max and HQQ) with their Triton
GEMMs, and MixQ's int8 GEMM with fp16 outliers."""
from .quantize import (GROUP_SIZES, QuantizedWeight, dequantize, hqq_zero, quantize_int4_weight,
                       quantize_int4_weight_hqq, quantize_int8_activations, quantize_int8_weight, unpack_int4)
from .mixq import MixQLinear, OutlierCache, mixq_linear
from .reference import mixq_reference, sqnr_db, wo_matmul_reference
from .wo_matmul import wo_matmul

__all__ = ["MixQLinear", "OutlierCache", "mixq_linear", "mixq_reference", "GROUP_SIZES", "QuantizedWeight", "dequantize", "hqq_zero", "quantize_int4_weight", "quantize_int4_weight_hqq",
           "quantize_int8_activations", "quantize_int8_weight", "unpack_int4", "sqnr_db", "wo_matmul_reference",
           "wo_matmul"]
