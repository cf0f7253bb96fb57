"""Teacher targets Y_T (DESIGN §2): top-K FFN outputs, instance-normalised over time, averaged."""

from typing import List, Optional

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
