"""python -m models.eval perplexity --text-file F [--tokens N] [--window W] [--backend ...]
   [--device ...] [--dtype ...] [--gguf PATH]

Perplexity of the model on a text: exp of the mean negative log-likelihood of each token
given the ones before it, over the first N tokens of the text (all by default), in
windows of W tokens (default: the model's context), each window a fresh prefill. Prints
`perplexity: <value>` as its last line."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from .generate import arguments
from .gguf_weights import GGUFError


def perplexity(model, ops, ids: list[int], window: int | None = None) -> tuple[float, int]:
    """(perplexity, tokens scored) of ids; each window's first token is context only."""
    if len(ids) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, the text gives {len(ids)}")
    window = min(window or model.source.context_length, model.source.context_length)
    if window < 2:
        raise ValueError(f"the window must hold at least 2 tokens, got {window}")
    nll, scored = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, window - 1):
            chunk = ids[start:start + window]
            if len(chunk) < 2:
                break
            logits = model(torch.tensor([chunk]), model.new_cache(1, len(chunk)), 0, ops)
            nll += float(torch.nn.functional.cross_entropy(logits[0, :-1].double().cpu(), torch.tensor(chunk[1:]),
                                                           reduction="sum"))
            scored += len(chunk) - 1
    return math.exp(nll / scored), scored


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.eval", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ppl = sub.add_parser("perplexity", help="perplexity on a text file")
    ppl.add_argument("--text-file", required=True)
    ppl.add_argument("--tokens", type=int, help="score only the first N tokens")
    ppl.add_argument("--window", type=int, help="tokens per prefill (default: the model's context)")
    arguments(ppl)
    args = p.parse_args(argv)
    from .model import load_model

    try:
        text = Path(args.text_file).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot read the text file: {exc}", file=sys.stderr)
        return 2
    try:
        if args.tokens is not None and args.tokens < 2:
            raise ValueError(f"--tokens must be at least 2, got {args.tokens}")
        model, ops = load_model(args.gguf, args.backend, args.device, args.dtype)
        ids = model.source.tokenizer.encode(text).ids
        if model.source.add_bos and model.source.bos_id is not None:
            ids = [model.source.bos_id] + ids
        ids = ids[:args.tokens] if args.tokens else ids
        value, scored = perplexity(model, ops, ids, args.window)
    except (GGUFError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"tokens scored: {scored}")
    print(f"perplexity: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
