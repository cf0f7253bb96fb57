"""Teacher targets (docs/design.md §2, §8): frame targets Y_T and the utterance target Ȳ_T.

Y_T averages the top-K FFN outputs of the teacher, each instance-normalised over time per
channel (data2vec 2.0, ``instance_norm_target_layer=true`` as released). Its time mean, the
released utterance target, is therefore zero up to rounding (measured: 1.2e-7 of a target row's
norm, in data2vec 2.0 and here alike): the utterance loss then only shrinks the utterance
tokens towards zero and teaches nothing about the utterance. :func:`utterance_target` keeps
that behaviour (``instance_norm``) for released-compatible training and offers targets that
carry information.
"""

from typing import List, Optional

UTTERANCE_TARGETS = ("instance_norm", "layer_norm", "raw")

import torch
import torch.nn.functional as F


def instance_norm_over_time(x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None, eps: float = 1e-5) -> torch.Tensor:
    """Normalise every channel of every utterance to zero mean, unit variance over time.

    [B, T, D] -> [B, T, D] in fp32; equals ``F.instance_norm(x.transpose(1, 2))`` without padding;
    with a padding mask [B, T] (True = padded) the statistics use valid frames only.
    """
    x = x.float()
    if padding_mask is None or not padding_mask.any():
        return F.instance_norm(x.transpose(1, 2), eps=eps).transpose(1, 2)
    valid = (~padding_mask).unsqueeze(-1).float()  # [B, T, 1]
    n = valid.sum(dim=1, keepdim=True).clamp_min(1)
    mean = (x * valid).sum(dim=1, keepdim=True) / n
    var = (((x - mean) * valid) ** 2).sum(dim=1, keepdim=True) / n  # biased, like instance_norm
    return (x - mean) / torch.sqrt(var + eps) * valid


def average_top_k(layer_outputs: List[torch.Tensor], k: int, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Y_T = mean over the last ``k`` layers of instance_norm(layer output). Each [B, T, D] -> [B, T, D] fp32."""
    if not 1 <= k <= len(layer_outputs):
        raise ValueError(f"average_top_k_layers={k} but the teacher produced {len(layer_outputs)} layers")
    top = layer_outputs[-k:]
    y = instance_norm_over_time(top[0], padding_mask)
    for layer in top[1:]:
        y = y + instance_norm_over_time(layer, padding_mask)
    return y / k


def utterance_target(kind: str, layer_outputs: List[torch.Tensor], k: int, frame_targets: torch.Tensor) -> torch.Tensor:
    """Ȳ_T [B, D] (fp32), the time mean of a per-frame teacher target.

    Args:
        kind: ``instance_norm``: the time mean of ``frame_targets`` (released emotion2vec /
            data2vec 2.0 ``cls_loss``; zero up to rounding, see the module docstring);
            ``layer_norm``: the mean over the top ``k`` layers of the time mean of each layer's
            FFN output layer-normalised per frame over channels (no affine): every frame vector
            has zero mean and unit variance over D, so a row's norm is at most sqrt(D), reached
            when all frames point the same way, i.e. it measures what the utterance's frames share;
            ``raw``: the time mean of the top-``k`` average of the FFN outputs before any
            normalisation (their own scale, which drifts with training).
        layer_outputs: FFN outputs [B, T, D] of every teacher block, utterance tokens removed.
        k: number of top layers (average_top_k_layers).
        frame_targets: Y_T [B, T, D] (for ``instance_norm``).
    """
    if kind == "instance_norm":
        return frame_targets.float().mean(dim=1)
    if kind not in UTTERANCE_TARGETS:
        raise ValueError(f"utterance_target={kind!r}; expected one of {UTTERANCE_TARGETS}")
    top = layer_outputs[-k:]
    if kind == "layer_norm":
        per_layer = [F.layer_norm(t.float(), t.shape[-1:]).mean(dim=1) for t in top]
    else:
        per_layer = [t.float().mean(dim=1) for t in top]
    return torch.stack(per_layer).mean(dim=0)
