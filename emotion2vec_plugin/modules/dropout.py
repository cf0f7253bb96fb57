"""Dropout as ``F.dropout`` computes it: ``x * noise``, noise = Bernoulli(1 - p) / (1 - p).

Every dropout of the network goes through here. On CPU the noise comes from the C kernel of
``kernels/cpu_dropout.py`` (same draws from the same generator, several times faster to make);
everywhere else, and whenever that kernel is unavailable, this is ``F.dropout``.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels.cpu_dropout import bernoulli_noise, fast_path


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, same values and same generator state; any shape.

    The mask is drawn from torch's default CPU generator (what fairseq reseeds every update), so
    resumed and distributed runs behave as with ``F.dropout``.
    """
    if not training or p == 0.0 or not 0.0 < p < 1.0 or not fast_path(x):
        return F.dropout(x, p, training)
    return x * bernoulli_noise(x.shape, p, x.dtype)


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout` (parameter-free: state dicts are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
