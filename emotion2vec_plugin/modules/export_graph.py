"""The encoder (and classifier) as one traceable forward, for ONNX export.

:class:`ExportGraph` computes, without any data-dependent Python branch (so that a trace holds
for every batch size and length), what ``inference/featurizer.py`` computes for a padded batch::

    source [B, S], padding_mask [B, S] (True = padded)
      -> zero the padding; normalise each waveform over its valid samples (if the model does)
      -> CNN as Conv1d + LayerNorm over channels + GELU per layer -> projection [B, T, D]
      -> frame padding mask from the valid sample counts [B, T]
      -> positional conv (padded frames zeroed before each conv), utterance tokens, ALiBi bias +
         key padding as one additive mask, prenet and main blocks
      -> frames: average of the chosen blocks [B, T, D]; embedding: their mean over valid frames
      -> classifier: head on the last block's mean -> logits, scores (softmax) [B, C]

The mask is always applied (an all-False mask adds zeros), where the eager path skips it when
nothing is padded: the same numbers up to fp32 rounding. Same parameters as the eager modules;
the CNN runs as ``F.conv1d`` here instead of the eager path's unfold + matmul, which traces into
a plain ONNX ``Conv``.
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoder import Emotion2vecEncoder, normalize_waveform
from .pooling import masked_mean
from .transformer import alibi_bias


class ExportGraph(nn.Module):
    """Traceable inference forward of ``encoder`` (eval mode), with an optional linear head.

    Args:
        encoder: the network (an ``Emotion2vecClassifierNet`` is an encoder too).
        layers: 0-based blocks (prenet first) averaged into ``frames``.
        normalize: per-waveform zero mean / unit variance over the valid samples.
        head: the classifier's ``proj`` (Linear D -> C) or None.
    """

    def __init__(self, encoder: Emotion2vecEncoder, layers: Sequence[int], normalize: bool,
                 head: Optional[nn.Linear] = None):
        super().__init__()
        if not layers or min(layers) < 0 or max(layers) >= encoder.num_layers:
            raise ValueError(f"layers {list(layers)}: expected 0-based block indices in 0..{encoder.num_layers - 1}")
        self.encoder = encoder.eval()
        self.layers = sorted(set(int(i) for i in layers))
        self.normalize = normalize
        self.head = head
        self.n_tok = encoder.num_utterance_tokens  # a Python int here, a constant in the trace
        # blocks to run: up to the last one chosen (the classifier needs the last block anyway)
        self.run_until = encoder.num_layers - 1 if head is not None else max(self.layers)

    def cnn(self, source: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """[B, S] -> CNN + projection features [B, T, D] and valid frame counts [B] (int64)."""
        audio = self.encoder.audio
        x = source.unsqueeze(1)  # [B, 1, S]
        lengths = valid.sum(dim=1)  # [B] valid samples
        for layer, (_, kernel, stride) in zip(audio.local_encoder.conv_layers, audio.local_encoder.layers_spec):
            conv, norm = layer[0], layer[2][1]
            x = F.conv1d(x, conv.weight, stride=conv.stride)  # [B, C, T_out]
            x = F.layer_norm(x.transpose(1, 2), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            x = F.gelu(x).transpose(1, 2)  # [B, C, T_out]
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        x = audio.project_features(x.transpose(1, 2))  # [B, T, D]
        return x, lengths.clamp_min(0)

    def blocks(self, x: torch.Tensor, frame_mask: torch.Tensor) -> List[torch.Tensor]:
        """Features [B, T, D] -> the outputs [B, T, D] of blocks 0..run_until (tokens removed)."""
        enc, audio = self.encoder, self.encoder.audio
        B, T = frame_mask.shape
        x = x + audio.relative_positional_encoder(x, frame_mask)
        n_tok = self.n_tok
        positions = torch.arange(T, device=x.device).unsqueeze(0)  # [1, T]
        bias = alibi_bias(positions, audio.alibi_slopes, audio.alibi_scale.clamp_min(0).view(-1), n_tok)
        key_pad = frame_mask
        if n_tok:
            x = torch.cat([audio.extra_tokens.expand(B, -1, -1), x], dim=1)  # [B, n_tok + T, D]
            key_pad = torch.cat([torch.zeros_like(frame_mask[:, :1]).expand(B, n_tok), frame_mask], dim=1)
        # [B, 1, 1, N] additive key padding; tokens are never padded, so no row is all -inf
        pad = torch.zeros(key_pad.shape, dtype=x.dtype, device=x.device).masked_fill(key_pad, float("-inf"))
        mask = bias + pad[:, None, None, :]  # [B, H, N, N]
        all_blocks = list(audio.context_encoder.blocks) + list(enc.blocks)
        x = audio.context_encoder.norm(x)  # prenet input norm (its dropout is off in eval)
        outputs = []
        for blk in all_blocks[: self.run_until + 1]:
            x, _ = blk(x, mask)
            outputs.append(x[:, n_tok:])
        return outputs

    def forward(self, source: torch.Tensor, padding_mask: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """source [B, S] float32, padding_mask [B, S] bool -> frames [B, T, D], frame_padding_mask
        [B, T], embedding [B, D] (+ logits, scores [B, C] with a head)."""
        valid = ~padding_mask
        source = source * valid.to(source.dtype)
        if self.normalize:
            source = normalize_waveform(source, padding_mask)
        x, frame_lengths = self.cnn(source, valid)
        frame_mask = torch.arange(x.size(1), device=x.device).unsqueeze(0) >= frame_lengths.unsqueeze(1)  # [B, T]
        outputs = self.blocks(x, frame_mask)
        chosen = [outputs[i] for i in self.layers]
        frames = chosen[0] if len(chosen) == 1 else torch.stack(chosen).mean(dim=0)  # [B, T, D]
        embedding = masked_mean(frames, frame_mask)  # [B, D]
        if self.head is None:
            return frames, frame_mask, embedding
        logits = self.head(masked_mean(outputs[-1], frame_mask))  # [B, C]
        return frames, frame_mask, embedding, logits, torch.softmax(logits, dim=-1)
