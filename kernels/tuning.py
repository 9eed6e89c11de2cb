"""Launch configurations per GPU model.

Each tunable kernel declares a `LaunchSpace`: its default configuration (a heuristic of the
launch key), the candidates a tuner may search, and the key itself (the shape facts the
best configuration depends on, e.g. rows rounded up to a power of two and the hidden
size). At launch, `LaunchSpace.choose` returns, in order of precedence:

1. the caller's explicit `config` (a dict of launch options; the one name for an override
   in every kernel of the suite),
2. a configuration forced by the tuner while it searches (`forcing`),
3. the winner recorded for this key in the table of this GPU model,
   kernels/tuned/<gpu-slug>.json (written by `python -m harness tune`),
4. the default.

Entries of the table replace only the keys they name; the rest of the default stays. The
CPU lane (the interpreter) never reads a table: its launch shapes are the defaults'.
KERNELS_TUNED_TABLE=<path> reads that table instead (for a GPU, or to try a table out);
KERNELS_TUNED_TABLE=off reads none.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from kernels.platform import gpu_slug

TABLE_DIR = Path(__file__).resolve().parent / "tuned"
TABLE_ENV = "KERNELS_TUNED_TABLE"
TABLE_FORMAT = 1

_SPACES: dict[str, "LaunchSpace"] = {}
_forced: dict[str, dict] = {}
_seen: list | None = None  # (space, key) of each choose() while the tuner records


def key_text(key: dict) -> str:
    """The table's name for a launch key: 'cols=4096,elem=2,rows=16' (sorted, so stable)."""
    return ",".join(f"{k}={key[k]}" for k in sorted(key))


@dataclass(frozen=True)
class LaunchSpace:
    kernel: str                              # the table's section for this kernel
    default: Callable[..., dict]             # key fields -> the default configuration
    candidates: Callable[..., list]          # key fields -> configurations worth searching
    check: Callable[[dict], None] | None = None  # raises ValueError on an invalid configuration

    def __post_init__(self):
        if self.kernel in _SPACES:
            raise ValueError(f"two launch spaces are named {self.kernel!r}")
        _SPACES[self.kernel] = self

    def choose(self, device: torch.device, key: dict, config: dict | None = None) -> dict:
        cfg = self.default(**key)
        if _seen is not None:
            _seen.append((self, dict(key)))
        forced = _forced.get(self.kernel)
        if forced is not None:
            cfg.update(forced)
        else:
            entry = tuned_entry(device, self.kernel, key)
            if entry is not None:
                cfg.update(entry)
        if config:
            unknown = set(config) - set(cfg) - set(self.extra_options(key))
            if unknown:
                raise ValueError(f"{self.kernel}: unknown launch option(s) {sorted(unknown)}; "
                                 f"known: {sorted(set(cfg) | set(self.extra_options(key)))}")
            cfg.update(config)
        if self.check is not None:
            self.check(cfg)
        return cfg

    def extra_options(self, key: dict) -> set:
        """Options a candidate may set that the default leaves out (e.g. 'tma')."""
        return {k for c in self.candidates(**key) for k in c}

    def search_space(self, key: dict) -> list[dict]:
        """The candidates for `key`, each a whole configuration, the default first, no repeats."""
        default = self.default(**key)
        out, seen = [], set()
        for c in [{}] + list(self.candidates(**key)):
            full = {**default, **c}
            text = json.dumps(full, sort_keys=True)
            if text not in seen:
                seen.add(text)
                out.append(full)
        return out


def spaces() -> dict[str, LaunchSpace]:
    """Every declared launch space (import the kernels first)."""
    return dict(_SPACES)


def table_path(gpu_name: str) -> Path:
    return TABLE_DIR / f"{gpu_slug(gpu_name)}.json"


@functools.lru_cache(maxsize=None)
def load_table(path: str) -> dict:
    """A table file's kernels section: {kernel: {key text: {"config": {...}, ...}}}."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != TABLE_FORMAT:
        raise ValueError(f"{path}: launch table format {data.get('format')!r}, this code reads {TABLE_FORMAT}")
    return data.get("kernels", {})


@functools.lru_cache(maxsize=None)
def _table_for_device(index: int) -> dict:
    chosen = os.environ.get(TABLE_ENV)
    if chosen == "off":
        return {}
    path = Path(chosen) if chosen else table_path(torch.cuda.get_device_name(index))
    return load_table(str(path)) if path.exists() else {}


def tuned_entry(device: torch.device, kernel: str, key: dict) -> dict | None:
    """The configuration the table of `device`'s GPU model records for `key`, or None."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    found = _table_for_device(index).get(kernel, {}).get(key_text(key))
    return dict(found["config"]) if found else None


def reload_tables() -> None:
    """Forget the tables read so far (after the tuner writes one, or KERNELS_TUNED_TABLE changes)."""
    load_table.cache_clear()
    _table_for_device.cache_clear()


@contextlib.contextmanager
def forcing(kernel: str, config: dict):
    """Every launch of `kernel` inside uses `config` over its default (the tuner's candidates)."""
    if kernel not in _SPACES:
        raise KeyError(f"no launch space named {kernel!r}; known: {sorted(_SPACES)}")
    previous = _forced.get(kernel)
    _forced[kernel] = dict(config)
    try:
        yield
    finally:
        if previous is None:
            _forced.pop(kernel, None)
        else:
            _forced[kernel] = previous


@contextlib.contextmanager
def recording():
    """Collects (space, key) of every launch inside: which kernels a call runs, at which keys."""
    global _seen
    outer, _seen = _seen, []
    try:
        yield _seen
    finally:
        _seen = outer


def pow2_bucket(n: int) -> int:
    """n rounded up to a power of two (at least 1): launch keys group nearby sizes."""
    return 1 << max(int(n) - 1, 0).bit_length()
