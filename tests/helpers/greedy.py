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


def assert_greedy_agrees(exact, lowp, got, forced, max_ties: int) -> None:
    ties, clear = greedy_flips(exact, lowp, got, forced)
    assert not clear, f"a clear greedy choice flipped at (step, exact's margin, allowed): {clear[:5]}"
    assert len(ties) <= max_ties, f"{len(ties)} ties flipped (at most {max_ties}): {ties[:5]}"
