"""Root of the suite. Picks the lane before any kernel is imported: with no CUDA GPU the
Triton kernels run in the interpreter on CPU tensors. Everything else (options, fixtures,
hypothesis profiles, machine info, the perf harness) is in harness/pytest_plugin.py."""
from harness.lanes import configure_interpreter, refuse_unknown_launch_options

configure_interpreter()
refuse_unknown_launch_options()

pytest_plugins = ["harness.pytest_plugin"]
