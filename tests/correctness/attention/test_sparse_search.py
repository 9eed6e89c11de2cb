"""kernels/attention/sparse_search.py: recall is the dense softmax mass the pattern keeps,
the choice is the cheapest candidate with enough recall, and the configuration file is
MInference's, written once."""
import json

import pytest
import torch

from kernels.attention.reference import vertical_slash_mask
from kernels.attention.sparse_search import head_recall, load_patterns, save_patterns, search_patterns
from kernels.attention.prefill import prefill_attention

pytestmark = pytest.mark.correctness

T = 200


def _layer(device, seed=0):
    """Head 0 looks at key 0 (a sink) and its neighbours only; head 1 spreads its attention."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, T, 2, 64, generator=g)
    k = torch.randn(1, T, 2, 64, generator=g)
    q[:, :, 0] = q[:, :, 0] * 0.1 + 3.0  # head 0: large positive queries ...
    k[:, 0, 0] = 4.0                    # ... that score key 0 far above the rest
    v = torch.randn(1, T, 2, 64, generator=g)
    return tuple(t.to(device, torch.float16) for t in (q, k, v))


def test_recall_is_the_dense_mass_the_pattern_keeps(device):
    q, k, v = _layer(device)
    cand = ("stream_llm", 4, 16)
    _, dense_lse = prefill_attention(q, k, v, return_lse=True)
    got = head_recall(q, k, v, cand, dense_lse)
    scores = torch.einsum("bthd,bshd->bhts", q.double(), k.double()).cpu() * 64 ** -0.5
    keys = torch.arange(T)
    p = torch.softmax(scores.masked_fill(keys[None, :] > keys[:, None], float("-inf")), -1)
    mask = vertical_slash_mask(T, torch.arange(4).expand(1, 2, 4), torch.arange(16).expand(1, 2, 16))
    want = (p * mask).sum(-1).mean(dim=(0, 2))
    assert torch.allclose(got.cpu(), want, atol=2e-3)
    assert got[0] > 0.9 > got[1]  # the sink head keeps its mass, the spread one does not


def test_every_key_kept_is_recall_one(device):
    q, k, v = _layer(device)
    _, dense_lse = prefill_attention(q, k, v, return_lse=True)
    assert torch.allclose(head_recall(q, k, v, ("vertical_and_slash", T, T), dense_lse).cpu(),
                          torch.ones(2, dtype=torch.float64), atol=1e-3)


def test_each_head_gets_the_cheapest_candidate_with_enough_recall(device):
    q, k, v = _layer(device)
    cands = [("stream_llm", 4, 16), ("block_sparse", 2, 0), ("vertical_and_slash", T, T)]
    cost = {cands[0]: 1.0, cands[1]: 2.0, cands[2]: 10.0}
    res = search_patterns(q, k, v, cands, min_recall=0.9, cost=lambda c: cost[tuple(c)])
    assert res.pattern["0"][:3] == list(cands[0])          # the sink head: the cheapest one is enough
    assert res.pattern["1"][:3] == list(cands[2])          # the spread head needs every key
    assert res.max_recall["1"][:3] == list(cands[2])
    assert res.recall.shape == (2, 3) and res.cost_s == [1.0, 2.0, 10.0] and res.search_s > 0
    none_enough = search_patterns(q, k, v, cands[:2], min_recall=1.01, cost=lambda c: cost[tuple(c)])
    assert none_enough.pattern == none_enough.max_recall    # none reaches it: the highest recall


def test_search_times_the_candidates_by_default(device):
    q, k, v = _layer(device)
    res = search_patterns(q, k, v, [("stream_llm", 4, 16), ("vertical_and_slash", 30, 40)])
    assert all(c > 0 for c in res.cost_s)


def test_bad_candidates_are_refused_before_any_work(device):
    q, k, v = _layer(device)
    with pytest.raises(ValueError, match="type one of"):
        search_patterns(q, k, v, [("dense", 1, 1)])
    with pytest.raises(ValueError, match="no candidate"):
        search_patterns(q, k, v, [])


def test_pattern_file_round_trips_and_is_never_overwritten(tmp_path):
    layers = [{"0": ["vertical_and_slash", 1000, 6096, 0.96], "1": ["stream_llm", 128, 3968, 0.97]},
              {"0": ["block_sparse", 100, 0, 0.95]}]
    path = save_patterns(tmp_path / "llama.json", layers, {"search_s": 1.5})
    assert load_patterns(path) == layers
    assert json.loads((tmp_path / "llama.search.json").read_text())["search_s"] == 1.5
    with pytest.raises(FileExistsError, match="never overwritten"):
        save_patterns(tmp_path / "llama.json", layers)
    (tmp_path / "bad.json").write_text(json.dumps([{"0": ["sliding", 1, 1, 1.0]}]))
    with pytest.raises(ValueError, match="layer 0: head 0's pattern"):
        load_patterns(tmp_path / "bad.json")
    (tmp_path / "dict.json").write_text(json.dumps({"0": ["stream_llm", 1, 1, 1.0]}))
    with pytest.raises(ValueError, match="a JSON list of per-layer objects"):
        load_patterns(tmp_path / "dict.json")
