"""The suite's dependencies run one way: kernels/ needs only torch, triton and the standard
library (baselines may import their own libraries lazily, inside the function that uses
them); harness/ measures and may use kernels/; tests/ and models/ use both."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE_PACKAGES = {"kernels", "harness", "models", "tests", "tools", "conftest"}


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
