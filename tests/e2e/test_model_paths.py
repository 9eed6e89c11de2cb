"""The model's prefill paths agree on the GPU at SmolLM2-135M's dimensions (random weights:
no model file needed). On an H100 the triton backend's greedy continuation of a real
SmolLM2 prompt went wrong from its first token, whose logits come from the prefill with
last_only and a cache longer than the prompt, while the full logits of the same prompt
(cache of its length) were within the tolerance rule. Each path's last-position logits are
held here to the float32 torch model by that rule."""
import pytest
import torch

from harness.lanes import has_gpu
from models import get_ops
from models.config import ModelConfig
from models.model import Transformer, random_source
from tests.helpers.tolerance import within_rule

pytestmark = [pytest.mark.e2e, pytest.mark.gpu,
              pytest.mark.skipif(not has_gpu(), reason="needs a CUDA GPU: the compiled kernels' paths")]

SMOLLM2_DIMS = ModelConfig("smollm2-135m-dims", 576, 9, 3, 64, 1536, rope_theta=1e5)


@pytest.fixture(scope="module")
def models():
    src = random_source(SMOLLM2_DIMS, 49152, 8192, n_layers=30, device="cuda", dtype=torch.float32)
    return Transformer(src, torch.float32, "cuda"), Transformer(src, torch.bfloat16, "cuda")


@pytest.mark.parametrize("tokens", [1, 37, 300])
@pytest.mark.parametrize("extra_capacity", [0, 32])
@pytest.mark.parametrize("last_only", [False, True])
def test_last_position_logits_within_the_rule_on_every_path(models, tokens, extra_capacity, last_only):
    exact, half = models
    ids = torch.randint(0, 49152, (1, tokens), generator=torch.Generator().manual_seed(tokens)).cuda()

    def last(model, ops):
        with torch.no_grad():
            out = model(ids, model.new_cache(1, tokens + extra_capacity), 0, ops, last_only=last_only)
        return out[:, -1].double()
    ok, msg = within_rule(last(half, get_ops("triton")), last(exact, get_ops("torch")), last(half, get_ops("torch")),
                          torch.bfloat16)
    assert ok, msg


@pytest.mark.parametrize("rows", [1, 37])
def test_the_head_kernels_at_smollm2_dims(rows):
    """The two kernels that run at one row only under last_only: the final RMSNorm over
    576 features and the (576 x 49152) head."""
    from kernels.linear import linear
    from kernels.norm import rms_norm

    g = torch.Generator(device="cuda").manual_seed(rows)
    x = torch.randn(1, rows, 576, device="cuda", generator=g).to(torch.bfloat16)
    w = (torch.randn(576, 49152, device="cuda", generator=g) * 576 ** -0.5).to(torch.bfloat16)
    nw = (1 + 0.1 * torch.randn(576, device="cuda", generator=g)).to(torch.bfloat16)
    exact = torch.nn.functional.rms_norm(x.double(), (576,), nw.double(), 1e-5)
    ok, msg = within_rule(rms_norm(x, nw, 1e-5).double(), exact,
                          torch.nn.functional.rms_norm(x, (576,), nw, 1e-5).double(), torch.bfloat16)
    assert ok, msg
    ok, msg = within_rule(linear(x, w).double(), x.double() @ w.double(), (x @ w).double(), torch.bfloat16)
    assert ok, msg
