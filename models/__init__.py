"""Decoder models built from kernels/ through one switch (models/ops.py: get_ops("triton")
or get_ops("torch")). layer.py holds one decoder layer of each seed model (LLaMA-3-8B,
Chameleon-7B, GPT-3-7B-LoRA, nGPT-1B, config.py) as a step over a KV cache; model.py
stacks them into a whole model read from a GGUF file (gguf_weights.py), which the command
lines models.generate and models.eval run."""
from .config import CHAMELEON_7B, GPT3_7B_LORA, LLAMA3_8B, NGPT_1B, SEED_MODELS, ModelConfig, tiny
from .layer import DecoderLayer, KVCache, SharedPrefixCache
from .ops import get_ops

__all__ = ["ModelConfig", "SEED_MODELS", "LLAMA3_8B", "CHAMELEON_7B", "GPT3_7B_LORA", "NGPT_1B", "tiny",
           "DecoderLayer", "KVCache", "SharedPrefixCache", "get_ops"]
