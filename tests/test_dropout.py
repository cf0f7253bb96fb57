"""The C-kernel dropout equals ``F.dropout``: same values, same gradients, same generator state after.

The kernel reads torch's MT19937 state and must draw exactly what ATen's CPU ``bernoulli_`` draws; a
wrong word order or threshold would keep a different set of elements (caught here by equality), and a
wrong state write-back would shift every later random number (caught by the draws that follow).
"""

import shutil

import pytest
import torch
import torch.nn.functional as F

from emotion2vec_plugin.kernels import cpu_dropout
from emotion2vec_plugin.modules import dropout as fast


def test_kernel_is_built_when_a_compiler_exists():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: dropout falls back to F.dropout")
    assert cpu_dropout.kernel() is not None
    assert cpu_dropout.fast_path(torch.zeros(cpu_dropout.MIN_ELEMENTS))
    assert not cpu_dropout.fast_path(torch.zeros(cpu_dropout.MIN_ELEMENTS - 1))


@pytest.mark.parametrize("shape, p, dtype, skip", [
    ((16, 12, 23, 23), 0.1, torch.float32, 0),   # attention probabilities; starts on a state-block edge
    ((3, 211, 64), 0.37, torch.float32, 7),      # odd word offset: draws straddle two state blocks
    ((5, 999), 0.9, torch.bfloat16, 2),          # noise made in bf16 as torch does
])
def test_equals_torch_dropout(shape, p, dtype, skip):
    x = torch.randn(shape).to(dtype).requires_grad_(True)
    grad_out = torch.randn(shape).to(dtype)
    results = []
    for use_kernel in (True, False):
        torch.manual_seed(11)
        torch.rand(skip)  # start somewhere inside the generator's state block
        if use_kernel:
            y = fast.dropout(x, p, training=True)
        else:
            with cpu_dropout.torch_dropout():
                y = fast.dropout(x, p, training=True)
        (g,) = torch.autograd.grad(y, x, grad_out)
        results.append((y.detach(), g, torch.rand(5)))
    (y_k, g_k, after_k), (y_t, g_t, after_t) = results
    assert torch.equal(y_k, y_t) and torch.equal(g_k, g_t)
    assert torch.equal(after_k, after_t)  # the generator ends in the same state
    kept = (y_k != 0).float().mean().item()
    n = y_k.numel()
    assert abs(kept - (1 - p)) < 5 * ((p * (1 - p) / n) ** 0.5)  # a real Bernoulli(1 - p) mask


def test_eval_and_zero_rate_are_identity():
    x = torch.randn(4, 5)
    assert fast.dropout(x, 0.3, training=False) is x
    assert fast.dropout(x, 0.0, training=True) is x
    module = fast.Dropout(0.3).eval()
    assert module(x) is x
    torch.manual_seed(2)
    ref = F.dropout(x, 1.0, training=True)
    assert torch.equal(fast.dropout(x, 1.0, training=True), ref)  # p = 1 goes to F.dropout: all zeros
