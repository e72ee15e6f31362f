"""The Triton loss/gradient kernel against the PyTorch definition, run by Triton's CPU interpreter.

TRITON_INTERPRET must be set before Triton is first imported, so the kernel runs in a child
process that saves its outputs; the assertions are made here.
"""

import textwrap

import pytest
import torch

from codestage.train.fused_ce import _loss_and_grad

pytestmark = pytest.mark.slow  # the kernel runs under Triton's CPU interpreter

pytest.importorskip("triton")

VOCAB, COLS = 5000, 5120  # 120 padding columns, as `_padded` leaves them

CHILD = textwrap.dedent("""
    import sys, torch
    from codestage.train.ce_kernel import loss_and_grad_
    inputs = torch.load(sys.argv[1])
    out = {}
    for name, (logits, targets) in inputs.items():
        work = logits.clone()
        loss, grad = loss_and_grad_(work, targets, %d, block=1024)  # 5 blocks, the last one partial
        out[name] = (loss, grad.clone(), grad.data_ptr() == work.data_ptr())
    try:
        loss_and_grad_(torch.zeros(8, 4).t(), torch.zeros(4, dtype=torch.long), 8)
    except ValueError as exc:
        out["refusal"] = str(exc)
    torch.save(out, sys.argv[2])
""" % VOCAB)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, triton_interpreted):
    g = torch.Generator().manual_seed(0)
    inputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(37, COLS, generator=g) * 4).to(dtype)
        targets = torch.randint(0, VOCAB, (37,), generator=g)
        targets[3], targets[5], targets[6] = -100, VOCAB - 1, 0
        inputs[str(dtype)] = (logits, targets)
    return inputs, triton_interpreted(CHILD, inputs, tmp_path_factory.mktemp("ce_kernel"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_gives_the_loss_and_gradient_of_the_definition_in_place(runs, dtype):
    inputs, out = runs
    logits, targets = inputs[str(dtype)]
    want_loss, want_grad = _loss_and_grad(logits.clone(), targets, VOCAB)
    loss, grad, in_place = out[str(dtype)]

    assert in_place  # written over the logits, no second buffer
    assert grad.dtype == dtype
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-6)
    # fp32: the running max/sum rounds differently; bf16: one unit in the last place either way
    tol = 5e-6 if dtype == torch.float32 else 2.0**-8
    assert (grad.float() - want_grad.float()).abs().max().item() <= tol
    assert grad[:, VOCAB:].abs().max().item() == 0.0 and grad[3].abs().max().item() == 0.0
    assert grad[5, VOCAB - 1].item() < 0 and grad[6, 0].item() < 0  # the target's column: softmax - 1


def test_kernel_refuses_logits_whose_rows_are_not_contiguous(runs):
    assert "contiguous" in runs[1]["refusal"]
