"""Cost models of the quantized GEMMs: the weight's stored bytes read once, x read, y
written; the arithmetic on the tensor cores it runs on."""
from kernels.cost import Cost

def activation_ceiling(dtype_name: str) -> str:
    ceilings = {"bf16": "bf16_tflops", "fp16": "fp16_tflops", "fp32": "fp32_tflops"}
    if dtype_name not in ceilings:
        raise ValueError(f"no matmul ceiling for activations of dtype {dtype_name!r}; known: {', '.join(ceilings)}")
    return ceilings[dtype_name]


def wo_matmul_cost(m: int, k: int, n: int, weight_bytes: int, dtype_name: str = "bf16") -> Cost:
    """Weight-only (W8A16, W4A16): the weight (values, scales, zeros) is dequantized to the
    activation dtype on the way in, so the product runs on that dtype's tensor cores."""
    return Cost(flops=2 * m * n * k, bytes=weight_bytes + 2 * m * (k + n), flops_ceiling=activation_ceiling(dtype_name))


def mixq_cost(m: int, n: int, k: int, outliers: int, dtype_name: str = "bf16") -> Cost:
    """MixQ (W8A8O16, W4A4O16): the int8 product of the k - outliers normal channels on the
    int8 tensor cores (int4 values run there too), then the outlier channels' product in
    the activation dtype. Bytes: the int8 weight (int4: one value a byte, as stored), the
    outlier columns of the weight in 16 bits, x read and y written."""
    return Cost(flops=2 * m * n * (k - outliers), bytes=n * k + 2 * n * outliers + 2 * m * (k + n),
                flops_ceiling="int8_tops", more_flops=((2 * m * n * outliers, activation_ceiling(dtype_name)),))
