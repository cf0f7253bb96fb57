"""emotion2vec as an utterance classifier, in plain torch (what emotion2vec+ is).

The encoder keeps the released parameter names (no decoder, no teacher) and the head is FunASR's
``proj = Linear(embed_dim, num_classes)`` applied to the mean of the last block's frames
(docs/design.md §9), so the state dict of this module *is* the FunASR ``model.pt`` of a classifier::

    waveform [B, S] -> CNN + projection [B, T, D] -> (fine-tuning masks) -> positional conv,
    utterance tokens, blocks [B, N_u + T, D] -> drop tokens -> masked mean [B, D]
    -> dropout -> proj [B, C]

Padding is exact end to end (``extract_features`` and :func:`masked_mean`), so logits of a
padded batch equal logits of its utterances one by one.
"""

import re
from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from .config import EncoderConfig
from .encoder import Emotion2vecEncoder
from .finetune_masking import apply_masks
from .pooling import masked_mean

PRENET_BLOCK = re.compile(r"^modality_encoders\.AUDIO\.context_encoder\.blocks\.(\d+)\.")
MAIN_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward, gradient times ``scale`` backward (fairseq's GradMultiply, wav2vec 2.0's
    ``feature_grad_mult``)."""
    return x * scale + x.detach() * (1.0 - scale)


class Emotion2vecClassifierNet(Emotion2vecEncoder):
    """Encoder + padding-aware mean + dropout + linear head.

    Args:
        cfg: encoder architecture.
        num_classes: C, the head's outputs.
        head_dropout: dropout on the pooled vector before ``proj`` (wav2vec 2.0's final_dropout).
        feature_grad_mult: gradient scale for the CNN (0 = frozen CNN: its parameters stop
            requiring gradients, so no activations are kept for it; 1 = trained normally).
    """

    def __init__(self, cfg: EncoderConfig, num_classes: int, head_dropout: float = 0.0,
                 feature_grad_mult: float = 1.0):
        super().__init__(cfg, with_decoder=False)
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be >= 1")
        if not 0.0 <= feature_grad_mult <= 1.0:
            raise ValueError(f"feature_grad_mult={feature_grad_mult} must be in [0, 1]")
        self.head_dropout = nn.Dropout(head_dropout)
        self.proj = nn.Linear(cfg.embed_dim, num_classes)
        self.feature_grad_mult = feature_grad_mult
        if feature_grad_mult == 0.0:
            self.audio.local_encoder.requires_grad_(False)
        elif feature_grad_mult < 1.0:
            # scales the gradient at the CNN output, before the projection: only the CNN is slowed
            self.audio.local_encoder.register_forward_hook(self._scale_cnn_gradient)

    def _scale_cnn_gradient(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        return _scale_gradient(output, self.feature_grad_mult) if self.training else output

    @property
    def num_classes(self) -> int:
        return self.proj.out_features

    def utterance_embedding(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                            time_mask: Optional[torch.Tensor] = None,
                            channel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Waveform [B, S] (+ padding mask [B, S], True = padded; optional fine-tuning masks
        time_mask [B, T] and channel_mask [B, D]) -> mean of the last block's valid frames [B, D]."""
        x, frame_mask = self.local_features(source, padding_mask)  # [B, T, D], [B, T] or None
        x = apply_masks(x, time_mask, channel_mask)
        x = self.contextualize(x, frame_mask)
        return masked_mean(x[:, self.num_utterance_tokens:], frame_mask)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Pooled vectors [B, D] -> logits [B, C]."""
        return self.proj(self.head_dropout(embedding))

    def forward(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Inference: waveform [B, S] (normalised per utterance if the model was trained so) -> logits [B, C]."""
        return self.classify(self.utterance_embedding(source, padding_mask))

    def layer_of(self, name: str) -> int:
        """Depth index of a parameter for layer-wise learning-rate decay: 0 = everything before
        the first block (CNN, projection, positional conv, utterance tokens, ALiBi scale, the
        prenet LayerNorm), 1..L = the L blocks (prenet first), L + 1 = the head."""
        if name.startswith("proj."):
            return self.num_layers + 1
        m = PRENET_BLOCK.match(name)
        if m:
            return 1 + int(m.group(1))
        m = MAIN_BLOCK.match(name)
        if m:
            return 1 + len(self.audio.context_encoder.blocks) + int(m.group(1))
        return 0

    def layer_lr_scales(self, decay: float) -> List[Tuple[str, float]]:
        """(parameter name, lr scale ``decay ** (L + 1 - layer)``) for every parameter: the head
        keeps the base learning rate, each block below it gets ``decay`` times the one above
        (BEiT / data2vec 2.0 fine-tuning's ``layer_decay``)."""
        top = self.num_layers + 1
        return [(name, decay ** (top - self.layer_of(name))) for name, _ in self.named_parameters()]
