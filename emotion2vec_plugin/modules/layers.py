"""Small building blocks shared by the CNN, positional encoder and decoder.

Index positions inside the ``nn.Sequential`` containers are part of the released state-dict
layout (DESIGN §5), e.g. ``conv_layers.3.2.1.weight`` is the LayerNorm of CNN layer 3, so the
containers below keep parameter-free modules at the same positions as data2vec 2.0.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class TransposeLast(nn.Module):
    """[B, C, T] <-> [B, T, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (the CNN's norms, DESIGN §2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(
            x.float(),
            self.normalized_shape,
            self.weight.float() if self.weight is not None else None,
            self.bias.float() if self.bias is not None else None,
            self.eps,
        )
        return out.type_as(x)


class ChannelLayerNorm(nn.Module):
    """LayerNorm without affine weights over the channel axis of a [B, C, T] tensor."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim = dim
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.transpose(1, 2), (self.dim,), eps=self.eps).transpose(1, 2)


def conv_norm_gelu(in_dim: int, out_dim: int, kernel: int, groups: int, eps: float) -> nn.Sequential:
    """Conv1d(same padding, odd kernel) -> LayerNorm(no affine) -> GELU on [B, C, T].

    Used by the positional encoder and the decoder; the conv sits at index 0 so its keys are
    ``<i>.0.weight`` / ``<i>.0.bias`` as in the released checkpoints.
    """
    if kernel % 2 != 1:
        raise ValueError(f"kernel={kernel} must be odd for 'same' padding")
    return nn.Sequential(
        nn.Conv1d(in_dim, out_dim, kernel_size=kernel, padding=kernel // 2, groups=groups),
        ChannelLayerNorm(out_dim, eps),
        nn.GELU(),
    )
