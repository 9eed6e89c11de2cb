"""A whole model's forward on token ids already on the GPU never waits on the host: the
perf harness cannot time a call that does (it found the prefill host-bound when forward
read the ids back for a range check), and a decode step with one cannot be captured."""
import pytest
import torch

from harness.lanes import has_gpu
from models import LLAMA3_8B, get_ops, tiny
from models.model import Transformer, random_source
from tests.helpers.host_sync import no_host_sync

pytestmark = [pytest.mark.e2e, pytest.mark.gpu,
              pytest.mark.skipif(not has_gpu(), reason="needs a CUDA GPU: the check is torch's CUDA sync debug mode")]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_prefill_and_decode_on_gpu_ids_do_not_sync(backend):
    src = random_source(tiny(LLAMA3_8B), 97, 512, n_layers=2, device="cuda", dtype=torch.bfloat16)
    model, ops = Transformer(src, torch.bfloat16, "cuda"), get_ops(backend)
    cache = model.new_cache(2, 80)
    prompt = torch.randint(0, 97, (2, 64), device="cuda")

    def calls():
        logits = model(prompt, cache, 0, ops, last_only=True)
        step = model(logits[:, -1].argmax(-1, keepdim=True), cache, 64, ops, last_only=True)
        return logits, step, model.prefill_logits(prompt, ops)

    calls()  # the first call's one-time work (kernels compiled, RoPE tables made and copied), as the harness warms up
    with no_host_sync():
        logits, step, whole = calls()
    assert step.shape == (2, 1, 97) and torch.equal(whole, logits)
