"""The Triton SwiGLU op against PyTorch's silu(gate) * up, run by Triton's CPU interpreter.

TRITON_INTERPRET must be set before Triton is first imported, so the kernels run in a child
process that saves its outputs; the assertions are made here.
"""

import textwrap

import pytest
import torch

from codestage.model import model_config
from codestage.train.llama import FastLlama, silu_mul

pytest.importorskip("triton")

H = 1100  # two kernel blocks of 1024, the second partial

CHILD = textwrap.dedent("""
    import sys, torch
    from codestage.train.llama import FastLlama
    from codestage.train.swiglu import silu_mul
    inputs = torch.load(sys.argv[1], weights_only=False)
    out = {}
    for name, (gate_up, grad) in inputs["ops"].items():
        x = gate_up.clone().requires_grad_()
        y = silu_mul(x)
        y.backward(grad)
        out[name] = (y.detach(), x.grad)
    # the op under a transposed (non-contiguous) input, and one with halves of unequal size
    t = inputs["ops"]["torch.float32"][0][0].t().contiguous().t()
    out["strided"] = silu_mul(t)
    try:
        silu_mul(torch.zeros(2, 7))
    except ValueError as exc:
        out["refusal"] = str(exc)
    # a whole model: loss and gradients with the kernel in its MLPs
    config, weights, ids = inputs["model"]
    model = FastLlama(config)
    model.load_state_dict(weights)
    out["swapped"] = model.use_triton_kernels()
    for name, recompute in (("model", False), ("model, blocks recomputed in backward", True)):
        model.zero_grad(set_to_none=True)
        model.checkpoint_blocks = recompute  # train.activation_checkpointing: the op runs again in backward
        loss = model(ids, ids)
        loss.backward()
        out[name] = (loss.detach(), {k: p.grad for k, p in model.named_parameters()})
    torch.save(out, sys.argv[2])
""")


def _model(seed: int = 0) -> FastLlama:
    torch.manual_seed(seed)
    return FastLlama(model_config("micro", 97, eos_token_id=0, pad_token_id=1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, triton_interpreted):
    g = torch.Generator().manual_seed(0)
    ops = {}
    for dtype in (torch.float32, torch.bfloat16):
        gate_up = (torch.randn(3, 5, 2 * H, generator=g) * 4).to(dtype)
        ops[str(dtype)] = (gate_up, torch.randn(3, 5, H, generator=g).to(dtype))
    model = _model()
    ids = torch.randint(0, 97, (2, 16), generator=g)
    inputs = {"ops": ops, "model": (model.config, model.state_dict(), ids)}
    return ops, triton_interpreted(CHILD, inputs, tmp_path_factory.mktemp("swiglu")), model, ids


@pytest.mark.slow  # Triton's CPU interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_gives_the_output_and_gradient_of_the_pytorch_form(runs, dtype):
    inputs, out = runs[0], runs[1]
    gate_up, grad = inputs[str(dtype)]
    x = gate_up.float().requires_grad_()
    want = silu_mul(x)
    want.backward(grad.float())
    y, dx = out[str(dtype)]
    assert y.shape == (3, 5, H) and dx.shape == gate_up.shape
    assert y.dtype == dtype and dx.dtype == dtype
    if dtype == torch.float32:
        assert torch.allclose(y, want.detach(), rtol=1e-5, atol=1e-5)
        assert torch.allclose(dx, x.grad, rtol=1e-5, atol=1e-5)
    else:  # fp32 inside, one rounding to bf16: within one unit in the last place (exp rounds differently)
        for got, ref in ((y, want.detach()), (dx, x.grad)):
            rel = ((got.float() - ref).abs() / (ref.abs() + 1e-6)).max().item()
            assert rel <= 2.0**-7, rel


@pytest.mark.slow  # Triton's CPU interpreter
def test_op_takes_strided_input_and_refuses_unequal_halves(runs):
    inputs, out = runs[0], runs[1]
    t = inputs["torch.float32"][0][0]
    assert torch.allclose(out["strided"], silu_mul(t), rtol=1e-5, atol=1e-6)
    assert "equal size" in out["refusal"]


@pytest.mark.slow  # Triton's CPU interpreter
@pytest.mark.parametrize("run", ["model", "model, blocks recomputed in backward"])
def test_model_with_the_kernel_trains_as_the_pytorch_model(runs, run):
    out, model, ids = runs[1], runs[2], runs[3]
    assert out["swapped"]
    model.zero_grad(set_to_none=True)
    loss = model(ids, ids)
    loss.backward()
    got_loss, got_grads = out[run]
    assert got_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    for name, p in model.named_parameters():
        assert torch.allclose(got_grads[name], p.grad, rtol=1e-4, atol=1e-6), name


def test_op_has_a_shape_only_form_for_torch_compile():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from codestage.train.swiglu import silu_mul as fused, silu_mul_backward

    with FakeTensorMode():
        x = torch.empty(4, 9, 2 * H, dtype=torch.bfloat16)
        y = fused(x)
        dx = silu_mul_backward(y, x)
    assert y.shape == (4, 9, H) and y.dtype == torch.bfloat16
    assert dx.shape == x.shape and dx.dtype == torch.bfloat16
