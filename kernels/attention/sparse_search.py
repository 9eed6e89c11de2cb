"""MInference's kernel-aware pattern search, offline, per head, from one calibration prompt.

    search_patterns(q, k, v)          each head's cheapest candidate that keeps enough attention
    save_patterns(path, layers, ...)  MInference's configuration file, plus the search's record
    load_patterns(path)               the per-layer patterns sparse_prefill takes

A candidate is a pattern (type, a, b) of kernels.attention.sparse_prefill. Its recall on a
head is the softmax mass it keeps, exp(lse_sparse - lse_dense) per query row, averaged over
the rows (1 when it keeps every key the dense softmax weighs). Its cost is the time its
sparse prefill takes on the device the search runs on (all heads in one launch, shared by
the heads). Each head gets the cheapest candidate whose recall reaches `min_recall`, or the
one of highest recall when none does; MInference's own rule (the highest recall) is kept
beside it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kernels.attention.prefill import prefill_attention
from kernels.attention.sparse_prefill import head_patterns, sparse_prefill
from kernels.checks import check_number

CANDIDATES = (
    ("vertical_and_slash", 30, 800), ("vertical_and_slash", 100, 750), ("vertical_and_slash", 500, 700),
    ("vertical_and_slash", 3500, 100), ("vertical_and_slash", 1000, 6096),
    ("stream_llm", 128, 3968),   # A-shape: the sink and the local window
    ("block_sparse", 100, 0),    # the 100 best 64-token key blocks of each query block
)


@dataclass
class SearchResult:
    candidates: list          # (type, a, b) each
    recall: torch.Tensor      # (heads, candidates), float64
    cost_s: list              # seconds per candidate (all heads)
    pattern: dict             # head (str) -> [type, a, b, recall]: the cheapest with enough recall
    max_recall: dict          # head (str) -> [type, a, b, recall]: MInference's choice
    search_s: float


def device_time(fn, reps: int = 3) -> float:
    """Median seconds of fn() on q's device (CUDA events; the host clock elsewhere)."""
    fn()  # compile, warm
    times = []
    for _ in range(reps):
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def head_recall(q, k, v, candidate, dense_lse: torch.Tensor) -> torch.Tensor:
    """(heads,) float64: the mean over sequences and rows of exp(lse_sparse - lse_dense), the
    candidate applied to every head."""
    heads = q.shape[2]
    _, lse = sparse_prefill(q, k, v, {h: list(candidate) for h in range(heads)}, dense_below=0, return_lse=True)
    return torch.exp(lse.double() - dense_lse.double()).mean(dim=(0, 2))


def search_patterns(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, candidates=CANDIDATES, *,
                    min_recall: float = 0.95, cost=None) -> SearchResult:
    """Score every candidate on every head of one layer's q, k, v (a calibration prompt's
    prefill) and choose per head; see the module doc. cost: candidate -> seconds (default:
    its sparse prefill timed here)."""
    check_number("min_recall", min_recall, minimum=0.0)
    if not candidates:
        raise ValueError("no candidate to search")
    heads = q.shape[2]
    for c in candidates:
        head_patterns({0: list(c)}, 1)  # a bad candidate is refused before any work
    t0 = time.perf_counter()
    _, dense_lse = prefill_attention(q, k, v, return_lse=True)
    recall = torch.stack([head_recall(q, k, v, c, dense_lse).cpu() for c in candidates], dim=1)
    if cost is None:
        def cost(c):
            pattern = {h: list(c) for h in range(heads)}
            return device_time(lambda: sparse_prefill(q, k, v, pattern, dense_below=0))
    cost_s = [float(cost(c)) for c in candidates]
    pattern, best = {}, {}
    for h in range(heads):
        ok = [i for i in range(len(candidates)) if recall[h, i] >= min_recall]
        top = int(torch.argmax(recall[h]))
        pick = min(ok, key=lambda i: (cost_s[i], -float(recall[h, i]))) if ok else top
        pattern[str(h)] = [*candidates[pick], float(recall[h, pick])]
        best[str(h)] = [*candidates[top], float(recall[h, top])]
    return SearchResult([tuple(c) for c in candidates], recall, cost_s, pattern, best, time.perf_counter() - t0)


def save_patterns(path, layers: list[dict], record: dict | None = None) -> Path:
    """Write the per-layer patterns as MInference's configuration (a JSON list of {head:
    [type, a, b, recall]}) at path, never over an existing file, and `record` (the search's
    time, recalls, costs, device) beside it as <path stem>.search.json."""
    path = Path(path)
    for layer in layers:
        head_patterns(layer, max((int(h) for h in layer), default=-1) + 1)
    side = path.with_name(path.stem + ".search.json")
    for p in (path, side):
        if p.exists():
            raise FileExistsError(f"{p} exists; pattern files are never overwritten")
    path.write_text(json.dumps(layers, indent=1))
    if record is not None:
        side.write_text(json.dumps(record, indent=1, default=str))
    return path


def load_patterns(path) -> list[dict]:
    """The per-layer patterns of a MInference configuration file, each checked."""
    layers = json.loads(Path(path).read_text())
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise ValueError(f"{path}: a pattern file is a JSON list of per-layer objects {{head: [type, a, b, score]}}")
    for i, layer in enumerate(layers):
        try:
            head_patterns(layer, max((int(h) for h in layer), default=-1) + 1)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: layer {i}: {e}") from None
    return layers
