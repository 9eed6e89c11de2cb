"""python -m models.eval perplexity --text-file F [--tokens N] [--window W] [--backend ...]
   [--device ...] [--dtype ...] [--gguf PATH]
python -m models.eval needle [--contexts 512,1024,...] [--depths 0,0.5,1] [--trials N] [...]

perplexity: exp of the mean negative log-likelihood of each token given the ones before
it, over the first N tokens of the text (all by default), in windows of W tokens (default:
the model's context), each window a fresh prefill. Prints `perplexity: <value>` last.
(models/data/declaration.txt, the opening of the United States Declaration of
Independence, 1776, public domain, is the suite's fixed text.)

needle: passkey retrieval. A random 5-digit key is stated once inside filler text of about
the context's length, at a depth (0: the start, 1: the end); the model is asked for it
through its chat template and answers greedily. Prints one line per context and depth
with the hits, then `hits: <found>/<asked>` last."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from .generate import arguments, load
from .gguf_weights import GGUFError


def perplexity(model, ops, ids: list[int], window: int | None = None) -> tuple[float, int]:
    """(perplexity, tokens scored) of ids; each window's first token is context only."""
    if len(ids) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, the text gives {len(ids)}")
    window = min(model.source.context_length if window is None else window, model.source.context_length)
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


FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
QUESTION = "What is the pass key? Answer with the number only."


def needle_prompt(tokenizer, context: int, depth: float, key: str) -> str:
    """Filler of about `context` tokens with the key stated at `depth` (0..1)."""
    per = len(tokenizer.encode(FILLER).ids)
    reps = max(1, (context - 60) // per)
    at = round(depth * reps)
    needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
    return "".join(FILLER * at + needle + FILLER * (reps - at)) + "\n" + QUESTION


def needle(model, ops, contexts, depths, trials: int = 1, seed: int = 0) -> list[tuple[int, float, int, int]]:
    """(context, depth, hits, trials) for each context and depth."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an int >= 1, got {trials!r}")
    from .model import prompt_ids

    src = model.source
    rng = torch.Generator().manual_seed(seed)
    rows = []
    for context in contexts:
        for depth in depths:
            hits = 0
            for _ in range(trials):
                key = str(int(torch.randint(10000, 100000, (1,), generator=rng)))
                ids = prompt_ids(src, needle_prompt(src.tokenizer, context, depth, key), chat=True)
                answer = src.tokenizer.decode(model.generate(ids, 16, ops, stop={src.eos_id}))  # digits are one token each
                hits += key in answer
            rows.append((context, depth, hits, trials))
    return rows


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _fractions(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v]
    if any(not 0 <= v <= 1 for v in values):
        raise ValueError(f"depths must lie in [0, 1], got {text}")
    return values


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.eval", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ppl = sub.add_parser("perplexity", help="perplexity on a text file")
    ppl.add_argument("--text-file", required=True)
    ppl.add_argument("--tokens", type=int, help="score only the first N tokens")
    ppl.add_argument("--window", type=int, help="tokens per prefill (default: the model's context)")
    arguments(ppl)
    ndl = sub.add_parser("needle", help="passkey retrieval over contexts and depths")
    ndl.add_argument("--contexts", type=_ints, default=[512, 1024, 2048, 4096, 8000],
                     help="prompt lengths in tokens, comma-separated (default 512,1024,2048,4096,8000)")
    ndl.add_argument("--depths", type=_fractions, default=[0.0, 0.5, 1.0], help="where the key sits, 0..1")
    ndl.add_argument("--trials", type=int, default=1, help="keys asked per context and depth")
    ndl.add_argument("--seed", type=int, default=0)
    arguments(ndl)
    args = p.parse_args(argv)
    if args.cmd == "needle":
        return _needle_main(args)
    from .model import prompt_ids

    try:
        text = Path(args.text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read the text file as UTF-8 text: {exc}", file=sys.stderr)
        return 2
    try:
        if args.tokens is not None and args.tokens < 2:
            raise ValueError(f"--tokens must be at least 2, got {args.tokens}")
        model, ops = load(args)
        ids = prompt_ids(model.source, text)
        ids = ids[:args.tokens] if args.tokens else ids
        value, scored = perplexity(model, ops, ids, args.window)
    except (GGUFError, ValueError, TypeError, OSError) as exc:  # OSError: the --sparse file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"tokens scored: {scored}")
    print(f"perplexity: {value:.4f}")
    return 0



def _needle_main(args) -> int:
    try:
        model, ops = load(args)
        too_long = [c for c in args.contexts if c + 64 > model.source.context_length]
        if too_long:
            raise ValueError(f"contexts {too_long} do not fit the model's {model.source.context_length} tokens "
                             "with the question and the answer")
        rows = needle(model, ops, args.contexts, args.depths, args.trials, args.seed)
    except (GGUFError, ValueError, TypeError, OSError) as exc:  # OSError: the --sparse file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for context, depth, hits, trials in rows:
        print(f"context {context:>6}  depth {depth:.2f}  hits {hits}/{trials}")
    print(f"hits: {sum(r[2] for r in rows)}/{sum(r[3] for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
