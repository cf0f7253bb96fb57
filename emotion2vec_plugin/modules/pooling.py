"""Pooling frame features into one vector per utterance, exactly over the valid frames."""

from typing import Optional

import torch


def masked_mean(x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over time of the valid frames (what emotion2vec+ / FunASR does for one utterance).

    Args:
        x: [B, T, D] frame features.
        padding_mask: [B, T] True = padded frame, or None (every frame valid).

    Returns:
        [B, D]; row b equals ``x[b, :T_b].mean(0)`` with T_b its number of valid frames, so a
        padded batch gives the same vectors as the utterances one by one.
    """
    if padding_mask is None:
        return x.mean(dim=1)
    keep = (~padding_mask).to(x.dtype).unsqueeze(-1)  # [B, T, 1]
    count = keep.sum(dim=1).clamp_min(1.0)  # [B, 1]; an all-padded row gives zeros, not NaN
    return (x * keep).sum(dim=1) / count
