"""models/tp.py on the CPU lane: two processes over gloo decode a random model split by heads
and by the MLP's hidden dimension; their logits match the whole model's and their greedy
tokens are equal, alone and batched over a shared prompt (shared-prefix attention); each
rank holds half the layer weights; bad splits are refused."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.config import ModelConfig
from models.model import Transformer, random_source
from models.ops import get_ops
from models.tp import shard_model

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CFG = ModelConfig("tp-tiny", hidden=128, n_heads=4, n_kv_heads=2, head_dim=32, ffn=96)
PROMPT = [3, 17, 42, 5, 9, 64, 1, 30]


def _model():
    return Transformer(random_source(CFG, vocab_size=97, context_length=64, n_layers=2, dtype=torch.float32),
                       torch.float32)


SUFFIXES = [[7, 8], [11, 2], [50, 60]]


def _decode(model):
    ops = get_ops("torch")
    logits = model(torch.tensor([PROMPT]), model.new_cache(1, len(PROMPT)), 0, ops)
    return logits, model.generate(PROMPT, 12, ops), model.generate_shared(PROMPT, SUFFIXES, 6, ops)


def _rank(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = shard_model(_model())
        logits, tokens, shared = _decode(model)
        again = None
        try:
            shard_model(model)
        except ValueError as e:
            again = str(e)
        bad = None
        try:
            shard_model(_model().__class__(random_source(
                ModelConfig("odd", hidden=96, n_heads=3, n_kv_heads=3, head_dim=32, ffn=96), 97, 64, 1,
                dtype=torch.float32), torch.float32))
        except ValueError as e:
            bad = str(e)
        torch.save({"logits": logits, "tokens": tokens, "shared": shared, "w_qkv": tuple(model.layers[0].w_qkv.shape),
                    "w2": tuple(model.layers[0].w2.shape), "bad": bad, "again": again}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_decode_what_the_whole_model_does(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    want_logits, want_tokens, want_shared = _decode(_model())
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["tokens"] == want_tokens and got["shared"] == want_shared  # also over a shared prompt's cache
        assert torch.allclose(got["logits"], want_logits, atol=1e-4, rtol=1e-4)
        assert got["w_qkv"] == (128, (2 + 2 * 1) * 32) and got["w2"] == (48, 128)  # half the heads, half the MLP
        assert got["bad"] == "odd's 3 attention heads do not split evenly over 2 processes"
        assert got["again"] == "the model is already sharded"


def test_sharding_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        shard_model(_model())


def test_the_command_refuses_to_run_outside_torchrun():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    r = subprocess.run([sys.executable, "-m", "models.tp", "--random", "llama3-8b"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "start it with torchrun" in r.stderr


def test_torchrun_runs_two_cpu_processes():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "models.tp", "--random", "llama3-mini", "--layers", "2", "--vocab", "64",
                        "--prompt-tokens", "4", "--new-tokens", "3", "--device", "cpu"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tensor parallel 2 (gloo)" in r.stdout and "tokens: [" in r.stdout


def test_torchrun_refuses_more_gpu_processes_than_gpus():
    gpus = torch.cuda.device_count()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                        str(gpus + 1), "-m", "models.tp", "--random", "llama3-mini", "--device", "cuda"], cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and f"needs GPU {gpus}, and it has {gpus}" in r.stderr
