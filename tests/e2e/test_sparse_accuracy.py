"""MInference's accuracy check on a real model (GPU): SmolLM2-135M's per-head patterns are
searched on one 4K calibration prompt (models.sparse.search_model), then the model with them
is held to the dense model on perplexity (at most 2% higher, 2K and 8K tokens) and on passkey
retrieval (the same hits, 2K to 8K tokens, three depths). The sparse prefill runs at every
length here (dense_below=0): SmolLM2's 8K context lies below the crossover."""
from statistics import mean

import pytest

pytest.importorskip("gguf", reason="the GGUF reader (pip install gguf)")
pytest.importorskip("tokenizers", reason="the tokenizer library (pip install tokenizers)")

from models.eval import needle, perplexity  # noqa: E402
from models.model import load_model, prompt_ids  # noqa: E402
from models.sparse import DEFAULT_TEXT, search_model, sparse_ops  # noqa: E402
from tests.helpers.weights import needs_weights  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.gpu]


def _repeat(ids, n):
    return (ids * (n // len(ids) + 1))[:n]


@needs_weights
def test_searched_patterns_keep_perplexity_and_passkeys():
    model, ops = load_model(backend="triton", device="cuda", dtype="bfloat16")
    ids = prompt_ids(model.source, DEFAULT_TEXT.read_text(encoding="utf-8"))
    layers, record = search_model(model, ops, _repeat(ids, 4096))
    chosen = [spec[3] for layer in layers for spec in layer.values()]
    assert len(layers) == len(model.layers) and mean(chosen) >= 0.95, record["search_s"]
    sparse = sparse_ops(ops, layers, dense_below=0)
    print(f"\nsearch: {record['search_s']:.1f} s, mean recall of the chosen patterns {mean(chosen):.4f}")
    for n in (2048, 8192):
        text = _repeat(ids, n)
        dense_ppl, _ = perplexity(model, ops, text, window=n)
        sparse_ppl, _ = perplexity(model, sparse, text, window=n)
        print(f"perplexity at {n} tokens: dense {dense_ppl:.4f}, sparse {sparse_ppl:.4f} ({sparse_ppl / dense_ppl:.4f}x)")
        assert sparse_ppl <= 1.02 * dense_ppl, (n, dense_ppl, sparse_ppl)
    contexts, depths = [2048, 4096, 8000], [0.0, 0.5, 1.0]
    hits = {name: needle(model, o, contexts, depths) for name, o in (("sparse", sparse), ("dense", ops))}
    print(f"passkeys (context, depth, hits, trials): {hits}")
    assert hits["sparse"] == hits["dense"]
