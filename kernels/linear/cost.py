"""Cost models of the fused linear layers: weights read once, x read, y written."""
from kernels.cost import Cost


def rmsnorm_linear_cost(m, k, n, elem_bytes, flops_ceiling="bf16_tflops"):
    return Cost(flops=2 * m * k * n, bytes=(k * n + m * k + m * n + k) * elem_bytes, flops_ceiling=flops_ceiling)


def gated_mlp_cost(m, k, n, elem_bytes, flops_ceiling="bf16_tflops"):
    return Cost(flops=4 * m * k * n, bytes=(2 * k * n + m * k + m * n) * elem_bytes, flops_ceiling=flops_ceiling)


def linear_cost(m, k, n, elem_bytes, residual=False, flops_ceiling="bf16_tflops"):
    return Cost(flops=2 * m * k * n, bytes=(k * n + m * k + m * n * (2 if residual else 1)) * elem_bytes,
                flops_ceiling=flops_ceiling)
