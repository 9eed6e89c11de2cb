"""Triton kernels of the suite, one folder per family.

On a machine without a CUDA GPU the kernels run in Triton's interpreter on CPU tensors
(TRITON_INTERPRET=1 is set here, before any kernel is defined, unless already set).
"""
from kernels.platform import configure_interpreter

configure_interpreter()
