"""What the baselines of every family share: the error a baseline raises where it cannot
run, and the one torch.compile wrapper every compiled baseline goes through."""
from __future__ import annotations

import torch


class ProviderUnavailable(Exception):
    """A baseline that cannot run here (library missing, unsupported GPU): skipped, with why."""


def compiled(fn):
    """torch.compile for one static shape (each perf case compiles its own).

    Every shape is a recompile of the same function: raise Dynamo's recompile limit so a
    sweep never silently falls back to eager, and make hitting it an error."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 1024))
    if hasattr(cfg, "fail_on_recompile_limit_hit"):
        cfg.fail_on_recompile_limit_hit = True
    return torch.compile(fn, dynamic=False)
