"""The suite's dependencies run one way: kernels/ needs only torch, triton and the standard
library (baselines may import their own libraries lazily, inside the function that uses
them); harness/ measures and records, and takes from kernels/ only its neutral modules
(the lane, the GPU's name, the PDL switch, the provider error and compile wrapper, the cost
type, the launch tables), except the two runners of kernels, the tuner and the
torchao-config runner; tests/ and models/ use both."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE_PACKAGES = {"kernels", "harness", "models", "tests", "tools", "conftest"}
NEUTRAL_KERNEL_MODULES = {"kernels", "kernels.platform", "kernels.providers", "kernels.cost", "kernels.tuning"}
KERNEL_RUNNERS = {"harness/tune.py", "harness/microbench.py"}


def _imports(path: Path):
    """(top-level package, line) of every import in the file, relative imports resolved
    to the file's own package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = path.relative_to(ROOT).parts[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom):
            yield (own if node.level else (node.module or "").split(".")[0]), node.lineno


def _files(package: str):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package,allowed", [
    ("kernels", {"kernels"}),
    ("harness", {"harness", "kernels"}),
])
def test_dependencies_run_one_way(package, allowed):
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for path in _files(package):
        for top, line in _imports(path):
            if top in SUITE_PACKAGES and top not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
            elif package == "kernels" and top not in SUITE_PACKAGES | stdlib | {"torch", "triton", "__future__"}:
                # third-party libraries only lazily, inside a baseline's function body
                if _is_module_level(path, line):
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {top} at module level")
    assert not wrong, "dependencies against the suite's direction:\n" + "\n".join(wrong)


def _is_module_level(path: Path, line: int) -> bool:
    tree = ast.parse(path.read_text())
    return any(getattr(n, "lineno", None) == line for n in tree.body)


def test_the_check_sees_a_wrong_import(tmp_path, monkeypatch):
    """The scan finds a kernels -> harness import (so the test above can fail)."""
    bad = ROOT / "kernels" / "_dependency_probe.py"
    bad.write_text("from harness.lanes import has_gpu\n")
    try:
        with pytest.raises(AssertionError, match="_dependency_probe.py:1 imports harness"):
            test_dependencies_run_one_way("kernels", {"kernels"})
    finally:
        bad.unlink()


def test_harness_takes_only_the_neutral_modules_of_kernels():
    wrong = []
    for path in _files("harness"):
        rel = path.relative_to(ROOT).as_posix()
        if rel in KERNEL_RUNNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            for name in names:
                if name.split(".")[0] == "kernels" and name not in NEUTRAL_KERNEL_MODULES:
                    wrong.append(f"{rel}:{node.lineno} imports {name}")
                if name == "kernels" and isinstance(node, ast.ImportFrom):
                    wrong += [f"{rel}:{node.lineno} imports kernels.{a.name}" for a in node.names
                              if f"kernels.{a.name}" not in NEUTRAL_KERNEL_MODULES]
    assert not wrong, "harness reaching into kernel families:\n" + "\n".join(wrong)
