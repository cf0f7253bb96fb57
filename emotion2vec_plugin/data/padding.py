"""Padding waveforms into a batch with an exact padding mask (no fairseq needed: used by e2v-predict too)."""

from typing import Optional, Sequence, Tuple

import torch


def crop_and_pad(sources: Sequence[torch.Tensor], max_size: Optional[int],
                 generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Crop each waveform [S_i] to at most ``max_size`` samples (random offset from ``generator``)
    and zero-pad to the longest: source [B, S_max] and padding_mask [B, S_max] (True = padded)."""
    cropped = []
    for wav in sources:
        if max_size is not None and len(wav) > max_size:
            start = int(torch.randint(0, len(wav) - max_size + 1, (1,), generator=generator))
            wav = wav[start:start + max_size]
        cropped.append(wav)
    lengths = torch.tensor([len(w) for w in cropped])
    out = cropped[0].new_zeros(len(cropped), int(lengths.max()))
    for i, w in enumerate(cropped):
        out[i, : len(w)] = w
    padding_mask = torch.arange(out.size(1)).unsqueeze(0) >= lengths.unsqueeze(1)
    return out, padding_mask
