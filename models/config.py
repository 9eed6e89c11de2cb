"""Decoder configurations of the four seed models (LLaMA-3-8B, Chameleon-7B, GPT-3-7B-LoRA
and nGPT-1B, the decoders Mirage's evaluation uses) and tiny look-alikes for the CPU lane,
which keep every structural feature at a size the interpreter can run."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class ModelConfig:
    name: str
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    qk_norm: bool = False      # Chameleon: RMSNorm over the head dim of q and k (before RoPE)
    lora_rank: int = 0         # GPT-3-7B-LoRA: adapters on the MLP projections
    lora_scale: float = 2.0
    ngpt: bool = False         # nGPT: normalized residual updates instead of pre-norms
    rope_theta: float = 500000.0
    eps: float = 1e-5

    def __post_init__(self):
        for f in fields(self):  # each field by the type it is declared with
            v = getattr(self, f.name)
            if f.type == "int" and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
                raise TypeError(f"{self.name}: {f.name} must be an int, got {type(v).__name__}")
            if f.type == "float" and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise TypeError(f"{self.name}: {f.name} must be a number, got {type(v).__name__}")
            if f.type == "bool" and not isinstance(v, bool):
                raise TypeError(f"{self.name}: {f.name} must be a bool, got {type(v).__name__}")
        for name in ("hidden", "n_heads", "n_kv_heads", "head_dim", "ffn"):
            if getattr(self, name) < 1:
                raise ValueError(f"{self.name}: {name} must be >= 1, got {getattr(self, name)}")
        if self.head_dim % 2:
            raise ValueError(f"{self.name}: head_dim must be even (rotary embedding), got {self.head_dim}")
        if self.lora_rank < 0:
            raise ValueError(f"{self.name}: lora_rank must be >= 0, got {self.lora_rank}")
        if not (math.isfinite(self.eps) and self.eps >= 0) or not (math.isfinite(self.rope_theta) and self.rope_theta > 0):
            raise ValueError(f"{self.name}: eps must be a finite number >= 0 and rope_theta one > 0; "
                             f"got {self.eps}, {self.rope_theta}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"{self.name}: {self.n_heads} heads is not a multiple of {self.n_kv_heads} KV heads")

    @property
    def qkv_dim(self) -> int:
        return (self.n_heads + 2 * self.n_kv_heads) * self.head_dim


LLAMA3_8B = ModelConfig("llama3-8b", 4096, 32, 8, 128, 14336)
CHAMELEON_7B = ModelConfig("chameleon-7b", 4096, 32, 32, 128, 11008, qk_norm=True, rope_theta=10000.0)
GPT3_7B_LORA = ModelConfig("gpt3-7b-lora", 4096, 32, 8, 128, 14336, lora_rank=16)
NGPT_1B = ModelConfig("ngpt-1b", 1536, 12, 12, 128, 4096, ngpt=True, rope_theta=10000.0)
SEED_MODELS = {c.name: c for c in (LLAMA3_8B, CHAMELEON_7B, GPT3_7B_LORA, NGPT_1B)}


def tiny(cfg: ModelConfig) -> ModelConfig:
    """Same structure (GQA ratio, QK-norm, LoRA, nGPT), interpreter-sized dims."""
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    group = cfg.n_heads // cfg.n_kv_heads
    kv_heads = 1 if group > 1 else 2
    return replace(cfg, name=cfg.name + "-tiny", hidden=64 * kv_heads * group, n_heads=kv_heads * group,
                   n_kv_heads=kv_heads, head_dim=64, ffn=96, lora_rank=min(cfg.lora_rank, 4))
