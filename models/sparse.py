"""Dynamic sparse prefill inside a model, and the pattern search run on a model's attention.

    sparse_ops(ops, layers)              ops whose prefill attention runs each layer's pattern
    capture_attention(model, ops, ids)   each layer's q, k, v of one prompt's prefill
    search_model(model, ops, ids)        MInference's per-head search on that prompt

python -m models.sparse search --out FILE [--tokens N] [--text-file F] [--device ...] [--gguf PATH]
writes the searched patterns as MInference's configuration file (never over an existing
one) with the search's record beside it (kernels/attention/sparse_search.py); models.eval
--sparse FILE then measures perplexity and passkey retrieval with them."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from kernels.attention.sparse_prefill import DENSE_BELOW, head_patterns, sparse_prefill
from kernels.attention.sparse_search import CANDIDATES, save_patterns, search_patterns
from kernels.checks import check_int


def sparse_ops(ops, layers: list[dict], dense_below: int = DENSE_BELOW):
    """`ops` with a prompt's prefill from scratch (T queries over exactly T keys) through
    sparse_prefill with layer i's pattern; decode steps and chunks after a prefix stay dense.
    The model calls attention once per layer, in layer order, each forward: the i-th call
    (modulo the layer count) is layer i."""
    if not isinstance(layers, list) or not layers:
        raise ValueError("layers must be a non-empty list of per-layer patterns (sparse_search.load_patterns)")
    check_int("dense_below", dense_below, minimum=0)
    calls = [0]

    def attention(q, k_cache, v_cache, kv_len):
        layer = calls[0] % len(layers)
        calls[0] += 1
        T = q.shape[1]
        if kv_len == T and T >= dense_below:
            head_patterns(layers[layer], q.shape[2])
            return sparse_prefill(q, k_cache[:, :T], v_cache[:, :T], layers[layer], dense_below=dense_below)
        return ops.attention(q, k_cache, v_cache, kv_len)

    return SimpleNamespace(**{**vars(ops), "sparse_layers": layers, "attention": attention})


@torch.no_grad()
def capture_attention(model, ops, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each layer's (q, k, v) in one prefill of ids from scratch (after RoPE, as attention
    sees them)."""
    if len(ids) < 2:
        raise ValueError(f"the calibration prompt needs at least 2 tokens, got {len(ids)}")
    seen = []

    def attention(q, k_cache, v_cache, kv_len):
        seen.append((q.clone(), k_cache[:, :kv_len].clone(), v_cache[:, :kv_len].clone()))
        return ops.attention(q, k_cache, v_cache, kv_len)

    recording = SimpleNamespace(**{**vars(ops), "attention": attention})
    model(torch.tensor([ids]), model.new_cache(1, len(ids)), 0, recording)
    return seen


def search_model(model, ops, ids: list[int], candidates=CANDIDATES, min_recall: float = 0.95, cost=None):
    """(per-layer patterns, record): search_patterns on every layer's attention of one
    prefill of ids. The record holds the search time, each layer's recalls and costs, and
    MInference's highest-recall choice."""
    t0 = time.perf_counter()
    layers, record = [], {"candidates": [list(c) for c in candidates], "min_recall": min_recall, "tokens": len(ids),
                          "layers": []}
    for q, k, v in capture_attention(model, ops, ids):
        res = search_patterns(q, k, v, candidates, min_recall=min_recall, cost=cost)
        layers.append(res.pattern)
        record["layers"].append({"recall": res.recall.tolist(), "cost_s": res.cost_s, "max_recall": res.max_recall,
                                 "search_s": res.search_s})
    record["search_s"] = time.perf_counter() - t0
    return layers, record


DEFAULT_TEXT = Path(__file__).parent / "data" / "declaration.txt"


def main(argv=None) -> int:
    from .gguf_weights import GGUFError
    from .model import load_model, prompt_ids

    ap = argparse.ArgumentParser(prog="python -m models.sparse", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["search"])
    ap.add_argument("--out", required=True, help="the pattern file to write (never overwritten)")
    ap.add_argument("--tokens", type=int, default=4096, help="calibration prompt length (the text repeated)")
    ap.add_argument("--text-file", default=str(DEFAULT_TEXT), help="the calibration text (repeated to --tokens)")
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gguf", default=None)
    args = ap.parse_args(argv)
    try:
        model, ops = load_model(args.gguf, backend="triton", device=args.device, dtype="bfloat16")
        ids = prompt_ids(model.source, Path(args.text_file).read_text(encoding="utf-8"))
        ids = (ids * (args.tokens // max(len(ids), 1) + 1))[:min(args.tokens, model.source.context_length)]
        layers, record = search_model(model, ops, ids, min_recall=args.min_recall)
        record["device"] = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        path = save_patterns(args.out, layers, record)
    except (GGUFError, OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"searched {len(layers)} layers on {len(ids)} tokens in {record['search_s']:.1f} s: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
