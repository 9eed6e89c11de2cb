"""Tensor-parallel decoding through torch.distributed (Megatron's split of a decoder): each
process of a group holds its share of every layer's attention heads (their columns of the
q, k, v projection and rows of the output projection) and of the MLP's hidden dimension
(columns of the gate and up projections, rows of the down projection); the two row-split
projections' partial products are summed over the group (layer.DecoderLayer._sum_shards).
The embedding, the norms and the output head stay whole on every process, so every rank
computes the same logits and picks the same tokens.

    shard_model(model, group=None)   the rank's shard of a Transformer, in place

torchrun --nproc-per-node N -m models.tp [--gguf PATH | --random llama3-8b|llama3-mini] [--layers L]
    [--prompt-tokens P] [--new-tokens T] [--backend triton|torch] [--device auto|cuda|cpu]
times greedy decoding on N GPUs (NCCL) or N CPU processes (gloo) and prints, on rank 0,
the tokens and the decode rate. NCCL's NVLink multicast stays off unless NCCL_NVLS_ENABLE
is set: it is not available on every lent machine and its setup can hang there."""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import torch

from .config import LLAMA3_8B, SEED_MODELS

# LLaMA-3-8B's heads (32 query, 8 KV) at a size a CPU decodes in a moment: splits over 2 to 8
LLAMA3_MINI = replace(LLAMA3_8B, name="llama3-mini", hidden=1024, head_dim=32, ffn=512)
RANDOM_MODELS = {c.name: c for c in (*SEED_MODELS.values(), LLAMA3_MINI) if not (c.qk_norm or c.ngpt or c.lora_rank)}


def shard_model(model, group=None):
    """Keep this rank's share of every layer of `model` (a models.model.Transformer, whole on
    every rank, loaded from the same weights) and sum the shards over `group` (default: the
    whole world). The heads, the KV heads and the MLP's hidden dimension must split evenly."""
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialized: call init_process_group first (torchrun sets "
                           "its environment)")
    group = dist.group.WORLD if group is None else group
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    cfg = model.cfg
    if any(layer.tp_group is not None for layer in model.layers):
        raise ValueError("the model is already sharded")
    if cfg.lora_rank:
        raise ValueError(f"{cfg.name}: LoRA adapters are not split; tensor parallelism takes models without them")
    for what, n in (("attention heads", cfg.n_heads), ("KV heads", cfg.n_kv_heads), ("MLP hidden units", cfg.ffn)):
        if n % world:
            raise ValueError(f"{cfg.name}'s {n} {what} do not split evenly over {world} processes")
    local = replace(cfg, n_heads=cfg.n_heads // world, n_kv_heads=cfg.n_kv_heads // world, ffn=cfg.ffn // world)
    D = cfg.head_dim
    q_width, kv_width = local.n_heads * D, local.n_kv_heads * D
    k_start, v_start = cfg.n_heads * D, (cfg.n_heads + cfg.n_kv_heads) * D

    def columns(w, start, width):  # this rank's block of `width` columns of the part starting at `start`
        return w[:, start + rank * width: start + (rank + 1) * width]

    for layer in model.layers:
        w = layer.w_qkv
        layer.w_qkv = torch.cat([columns(w, 0, q_width), columns(w, k_start, kv_width),
                                 columns(w, v_start, kv_width)], dim=1).contiguous()
        layer.w_o = layer.w_o[rank * q_width:(rank + 1) * q_width].contiguous()
        layer.w1 = columns(layer.w1, 0, local.ffn).contiguous()
        layer.w3 = columns(layer.w3, 0, local.ffn).contiguous()
        layer.w2 = layer.w2[rank * local.ffn:(rank + 1) * local.ffn].contiguous()
        layer.cfg, layer.tp_group = local, group
    model.cfg = local  # the caches hold this rank's KV heads
    return model


def main(argv=None) -> int:
    import torch.distributed as dist

    from .model import MODEL_DTYPES, Transformer, random_source
    from .ops import get_ops

    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m models.tp", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--gguf", help="a GGUF model file (its heads and MLP must split over the processes)")
    src.add_argument("--random", default="llama3-8b", choices=sorted(RANDOM_MODELS),
                     help="random weights of a seed model's dimensions (default llama3-8b; llama3-mini: its heads, "
                          "small)")
    p.add_argument("--layers", type=int, default=32, help="layers of the random model (default 32)")
    p.add_argument("--vocab", type=int, default=128256, help="vocabulary of the random model")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--backend", choices=("triton", "torch"), default="triton")
    p.add_argument("--dtype", choices=sorted(MODEL_DTYPES), default="bfloat16")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="cuda: one GPU a process (NCCL); cpu: CPU processes (gloo); auto: cuda where there is one")
    args = p.parse_args(argv)
    if "RANK" not in os.environ:
        p.error("start it with torchrun (it sets RANK, WORLD_SIZE and the rendezvous)")
    for name in ("layers", "vocab", "prompt_tokens", "new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if cuda:
        local, gpus = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local >= gpus:
            p.error(f"process {local} of this machine needs GPU {local}, and it has {gpus}: start at most "
                    f"{gpus} processes on it with --device cuda, or pass --device cpu")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    device, dtype = ("cuda" if cuda else "cpu"), MODEL_DTYPES[args.dtype]
    try:
        if args.gguf:
            from .gguf_weights import load_gguf
            source = load_gguf(args.gguf)
        else:
            context = args.prompt_tokens + args.new_tokens
            source = random_source(RANDOM_MODELS[args.random], args.vocab, context, args.layers, device, dtype)
        model = shard_model(Transformer(source, dtype, device))
        ops = get_ops(args.backend if cuda else "torch")
        prompt = torch.randint(0, source.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0))
        model.generate(prompt.tolist()[:8], 2, ops)  # compile and warm up
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        tokens = model.generate(prompt.tolist(), args.new_tokens, ops)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        if dist.get_rank() == 0:
            world = dist.get_world_size()
            print(f"tensor parallel {world} ({'NCCL' if cuda else 'gloo'}): {source.path.name}, prompt "
                  f"{args.prompt_tokens} tokens, {len(tokens)} new in {seconds:.3f} s "
                  f"({len(tokens) / seconds:.1f} tokens/s, prefill included)")
            print("tokens:", tokens)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
