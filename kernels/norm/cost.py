"""Cost models of the norm operations: the fewest bytes moved and the arithmetic."""
from kernels.cost import Cost


def rms_norm_cost(rows: int, hidden: int, elem_bytes: int, residual: bool = False) -> Cost:
    """Read x (and residual), write y (and h), read the weight once."""
    tensors = 4 if residual else 2
    return Cost(
        flops=(5 if residual else 4) * rows * hidden,  # square, sum, scale by rstd, by w (+ add)
        bytes=tensors * rows * hidden * elem_bytes + hidden * elem_bytes,
        flops_ceiling=None,  # bandwidth-bound: arithmetic is a few ops per element
    )
