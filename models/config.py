"""Decoder configurations of the seed models (ANCHORS.md, Mirage) and tiny look-alikes
for the CPU lane, which keep every structural feature at a size the interpreter can run."""
from __future__ import annotations

from dataclasses import dataclass, replace


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
    group = cfg.n_heads // cfg.n_kv_heads
    kv_heads = 1 if group > 1 else 2
    return replace(cfg, name=cfg.name + "-tiny", hidden=64 * kv_heads * group, n_heads=kv_heads * group,
                   n_kv_heads=kv_heads, head_dim=64, ffn=96, lora_rank=min(cfg.lora_rank, 4))
