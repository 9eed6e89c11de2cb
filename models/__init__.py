"""Decoder models built from kernels/ through one switch (models/ops.py: get_ops("triton")
or get_ops("torch")). layer.py holds one decoder layer of each seed model (LLaMA-3-8B,
Chameleon-7B, GPT-3-7B-LoRA, nGPT-1B, config.py) as a decode step over a KV cache; a
whole model is these layers stacked."""
from .config import CHAMELEON_7B, GPT3_7B_LORA, LLAMA3_8B, NGPT_1B, SEED_MODELS, ModelConfig, tiny
from .layer import DecoderLayer, KVCache
from .ops import get_ops

__all__ = ["ModelConfig", "SEED_MODELS", "LLAMA3_8B", "CHAMELEON_7B", "GPT3_7B_LORA", "NGPT_1B", "tiny",
           "DecoderLayer", "KVCache", "get_ops"]
