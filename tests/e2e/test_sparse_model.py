"""models/sparse.py: dynamic sparse prefill inside a model (each layer its own per-head
patterns), the calibration capture and the per-head search on a model's own attention."""
import pytest
import torch

from models import LLAMA3_8B, get_ops, tiny
from models.model import Transformer, random_source
from models.sparse import capture_attention, main, search_model, sparse_ops

pytestmark = pytest.mark.e2e

PROMPT = list(range(1, 81))  # two 64-row blocks


@pytest.fixture(scope="module")
def tiny_model(device):
    src = random_source(tiny(LLAMA3_8B), 151, 512, n_layers=2, device="cpu", dtype=torch.bfloat16)
    return Transformer(src, torch.bfloat16, device)


def _logits(model, ops):
    return model(torch.tensor([PROMPT]), model.new_cache(1, len(PROMPT)), 0, ops)


@pytest.fixture(scope="module")
def dense_logits(tiny_model):
    return _logits(tiny_model, get_ops("triton"))


def test_patterns_that_keep_every_key_give_the_dense_logits(tiny_model, dense_logits):
    ops = get_ops("triton")
    every = {h: ["vertical_and_slash", 512, 512, 1.0] for h in range(tiny_model.cfg.n_heads)}
    dense, sparse = dense_logits, _logits(tiny_model, sparse_ops(ops, [every, every], dense_below=0))
    assert torch.allclose(sparse, dense, atol=2e-2, rtol=2e-2)
    assert torch.equal(sparse.argmax(-1), dense.argmax(-1))


def test_each_layer_gets_its_own_pattern(tiny_model, dense_logits):
    """A narrow pattern on layer 0 and one on layer 1 change the logits, and differently: the
    attention calls map to the layers in order."""
    ops = get_ops("triton")
    every = {h: ["vertical_and_slash", 512, 512, 1.0] for h in range(tiny_model.cfg.n_heads)}
    narrow = {h: ["stream_llm", 1, 4, 1.0] for h in range(tiny_model.cfg.n_heads)}
    dense = dense_logits
    first_only = _logits(tiny_model, sparse_ops(ops, [narrow, every], dense_below=0))
    second_only = _logits(tiny_model, sparse_ops(ops, [every, narrow], dense_below=0))
    assert not torch.allclose(first_only, dense, atol=2e-2) and not torch.allclose(second_only, dense, atol=2e-2)
    assert not torch.allclose(first_only, second_only, atol=2e-2)
    # decode steps after the prompt stay dense: a generation runs and its first token is the prefill's
    tokens = tiny_model.generate(PROMPT, 2, sparse_ops(ops, [narrow, every], dense_below=0))
    assert tokens[0] == int(first_only[0, -1].argmax())


def test_capture_gives_each_layers_attention_inputs(tiny_model):
    layers = capture_attention(tiny_model, get_ops("triton"), PROMPT)
    cfg = tiny_model.cfg
    assert len(layers) == 2
    for q, k, v in layers:
        assert q.shape == (1, len(PROMPT), cfg.n_heads, cfg.head_dim)
        assert k.shape == v.shape == (1, len(PROMPT), cfg.n_kv_heads, cfg.head_dim)


def test_search_on_the_model_writes_minference_patterns(tiny_model, tmp_path):
    cands = [("stream_llm", 8, 16), ("vertical_and_slash", 100, 100)]
    layers, record = search_model(tiny_model, get_ops("triton"), PROMPT, cands, min_recall=0.99,
                                  cost=lambda c: {cands[0]: 1.0, cands[1]: 5.0}[tuple(c)])
    assert len(layers) == 2 and len(record["layers"]) == 2 and record["search_s"] > 0
    for layer, rec in zip(layers, record["layers"]):
        assert set(layer) == {str(h) for h in range(tiny_model.cfg.n_heads)}
        for h, (kind, a, b, recall) in layer.items():
            assert recall >= 0.99 or [kind, a, b] == list(cands[1])  # the cheap one only where it keeps enough
            assert recall == pytest.approx(rec["recall"][int(h)][cands.index((kind, a, b))])


def test_bad_patterns_are_named(tiny_model):
    with pytest.raises(ValueError, match="non-empty list"):
        sparse_ops(get_ops("triton"), [])
    ops = sparse_ops(get_ops("triton"), [{0: ["stream_llm", 1, 1]}, {9: ["stream_llm", 1, 1]}], dense_below=0)
    with pytest.raises(ValueError, match="pattern names head 9"):
        _logits(tiny_model, ops)


def test_search_command_names_a_missing_model_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["search", "--out", str(out), "--device", "cpu", "--tokens", "8",
                 "--gguf", str(tmp_path / "missing.gguf")]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()


def test_a_prefill_without_a_kept_cache_gives_the_models_logits(tiny_model):
    """prefill_logits reuses one layer's cache for every layer (the end-to-end prefill perf
    case keeps no KV cache): the same last-position logits as a forward over a cache per layer,
    dense and with each layer's sparse pattern."""
    ops = get_ops("triton")
    narrow = {h: ["stream_llm", 4, 16, 1.0] for h in range(tiny_model.cfg.n_heads)}
    every = {h: ["vertical_and_slash", 512, 512, 1.0] for h in range(tiny_model.cfg.n_heads)}
    tokens = torch.tensor([PROMPT])
    for layer_ops in (ops, sparse_ops(ops, [narrow, every], dense_below=0)):
        want = tiny_model(tokens, tiny_model.new_cache(1, len(PROMPT)), 0, layer_ops, last_only=True)
        assert torch.equal(tiny_model.prefill_logits(tokens, layer_ops), want)
