"""Greedy decoding of two low-precision paths compared by teacher forcing: both are fed the
same tokens (the reference path's own greedy choices), so one early tie cannot turn the
rest of a continuation into another text. Where the tested path picks another token than
the reference path at a step, the float32 model must call that choice a tie within the
reference path's own error there: the tolerance rule's factor 2 applied to a decision. Two
bf16 paths that order their sums differently can flip a tie, never a clear choice."""
from __future__ import annotations

import torch


def greedy_flips(exact: torch.Tensor, lowp: torch.Tensor, got: torch.Tensor, forced: torch.Tensor):
    """exact, lowp, got: logits (..., steps, vocab) of the same forced tokens (..., steps),
    which are lowp's argmaxes; exact from a float32 model. Returns (ties, clear): for each
    step where got's argmax differs from forced, (index, margin, allowed), where margin is
    exact's preference for the forced token over got's and allowed twice lowp's largest
    error against exact at that step; ties have margin <= allowed."""
    exact, lowp, got, forced = (t.detach().double().cpu() for t in (exact, lowp, got, forced))
    forced = forced.long()
    if not torch.equal(lowp.argmax(-1), forced):
        raise ValueError("forced must be the reference path's (lowp's) own greedy tokens")
    pick = got.argmax(-1)
    ties, clear = [], []
    for idx in map(tuple, (pick != forced).nonzero().tolist()):
        e = exact[idx]
        margin = (e[forced[idx]] - e[pick[idx]]).item()
        allowed = 2 * (lowp[idx] - e).abs().max().item()
        (ties if margin <= allowed else clear).append((idx, margin, allowed))
    return ties, clear


def own_flips(exact: torch.Tensor, forced: torch.Tensor) -> int:
    """Steps at which the float32 model prefers another token than the reference path's:
    how often low precision alone turns a choice."""
    return int((exact.detach().cpu().argmax(-1) != forced.cpu()).sum())


def assert_greedy_agrees(exact, lowp, got, forced, max_ties: int | None = None) -> None:
    """No clear choice flipped, and at most max_ties ties. max_ties None: twice as many as
    the reference path itself turns against float32 (at least 3), since two low-precision
    paths that differ only in summation order meet ties about as often as one meets float32."""
    ties, clear = greedy_flips(exact, lowp, got, forced)
    assert not clear, f"a clear greedy choice flipped at (step, exact's margin, allowed): {clear[:5]}"
    if max_ties is None:
        max_ties = max(3, 2 * own_flips(exact, forced))
    assert len(ties) <= max_ties, f"{len(ties)} ties flipped (at most {max_ties}): {ties[:5]}"


def logit_error(exact: torch.Tensor, lowp: torch.Tensor) -> float:
    """Mean over steps of the largest logit error against float32."""
    return (lowp.detach().double().cpu() - exact.detach().double().cpu()).abs().amax(-1).mean().item()
