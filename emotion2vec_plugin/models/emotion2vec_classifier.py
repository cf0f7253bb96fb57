"""fairseq model ``emotion2vec_classifier``: a pretrained emotion2vec fine-tuned into an utterance classifier.

Contract with the criterion (``criterions/emotion2vec_classification.py``): ``forward(source,
padding_mask, id)`` returns ``{"logits": [B, C]}``, one row per utterance of the batch, classes in
the task's label order. The network is :class:`~emotion2vec_plugin.modules.classifier.Emotion2vecClassifierNet`
(no teacher, no decoder); this wrapper adds what fine-tuning needs on top, following fairseq's
wav2vec 2.0 fine-tuning:

* ``init_from``: encoder weights from one of our pretraining checkpoints, a released emotion2vec
  or data2vec 2.0 audio checkpoint, or an ``e2v-export`` folder (explicit key map; the head
  starts fresh);
* ``freeze_finetune_updates``: only the head trains for the first N updates;
* ``feature_grad_mult``: 0 freezes the CNN, values in (0, 1) slow it down;
* ``layer_decay``: layer-wise learning-rate decay through fairseq's composite optimizer
  (``optimizer=composite``, ``dynamic_groups: true``): each parameter carries
  ``optim_overrides = {"optimizer": {"lr_scale": decay ** (L + 1 - layer)}}``;
* SpecAugment-style time and channel masks in training, seeded by (seed, update, utterance ids).
"""

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import II

from ..checkpoint.init_from import init_state, resolve_encoder_shape
from ..formats.init_source import read_init_source
from ..modules.classifier import Emotion2vecClassifierNet
from ..modules.config import EncoderConfig, encoder_config_from, parse_conv_layers
from ..modules.clip_rules import frames_for_samples
from ..modules.finetune_masking import channel_masks, time_masks
from .emotion2vec_model import mask_seed, tag_no_decay_parameters

logger = logging.getLogger(__name__)


def shape_from_init(name: str) -> Any:
    """An encoder shape field of :class:`EncoderConfig` (its help) with default None: filled from
    ``model.init_from`` when the model is built (checkpoint/init_from.py), so that a recipe gives only
    fine-tuning settings and an explicit value can be told from a default."""
    base_help = EncoderConfig.__dataclass_fields__[name].metadata["help"]
    return field(default=None, metadata={
        "help": f"{base_help}; default: from model.init_from (the base model's value when init_from is null)"})


@dataclass
class Emotion2vecClassifierConfig(FairseqDataclass, EncoderConfig):
    """The encoder's settings (no decoder: fine-tuning has none) and the fine-tuning settings. The
    encoder's shape defaults to that of ``model.init_from``; dropouts and LayerDrop are fine-tuning
    settings with their own defaults."""

    conv_feature_layers: Optional[str] = shape_from_init("conv_feature_layers")
    embed_dim: Optional[int] = shape_from_init("embed_dim")
    num_heads: Optional[int] = shape_from_init("num_heads")
    mlp_ratio: Optional[float] = shape_from_init("mlp_ratio")
    prenet_depth: Optional[int] = shape_from_init("prenet_depth")
    depth: Optional[int] = shape_from_init("depth")
    conv_pos_depth: Optional[int] = shape_from_init("conv_pos_depth")
    conv_pos_width: Optional[int] = shape_from_init("conv_pos_width")
    conv_pos_groups: Optional[int] = shape_from_init("conv_pos_groups")
    num_utterance_tokens: Optional[int] = shape_from_init("num_utterance_tokens")
    norm_eps: Optional[float] = shape_from_init("norm_eps")
    init_from: Optional[str] = field(
        default=None,
        metadata={"help": "pretrained encoder: one of our checkpoints (checkpoint_last.pt of emotion2vec "
                          "pretraining), a released emotion2vec or data2vec 2.0 audio checkpoint, or an e2v-export "
                          "folder; the encoder shape (model.* fields left unset) is read from it. null = random "
                          "init"},
    )
    trust_checkpoint: bool = field(
        default=False,
        metadata={"help": "read model.init_from with a full unpickle (runs any code the file holds); by default only "
                          "tensors, containers and fairseq's configs are loaded (checkpoint/safe_load.py)"},
    )
    head_dropout: float = field(default=0.1, metadata={"help": "dropout on the pooled vector before the linear head"})
    freeze_finetune_updates: int = field(
        default=0, metadata={"help": "updates during which only the head trains (encoder frozen, wav2vec 2.0 style)"})
    feature_grad_mult: float = field(
        default=0.0, metadata={"help": "gradient scale of the CNN feature extractor, in [0, 1]; 0 = frozen CNN"})
    layer_decay: float = field(
        default=1.0,
        metadata={"help": "layer-wise lr decay in (0, 1]: block l gets lr * decay^(L+1-l), the head lr; < 1 needs "
                          "optimizer=composite with dynamic_groups: true (recipes/finetune/schedule/*)"},
    )
    mask_prob: float = field(
        default=0.0, metadata={"help": "fraction of each utterance's frames zeroed in spans during training (SpecAugment)"})
    mask_length: int = field(default=5, metadata={"help": "time-mask span length in frames (20 ms each)"})
    mask_channel_prob: float = field(default=0.0, metadata={"help": "fraction of feature channels zeroed in training"})
    mask_channel_length: int = field(default=64, metadata={"help": "channel-mask span length"})
    seed: int = II("common.seed")
    optimizer_name: Optional[str] = II("optimizer._name")


def validate_classifier_config(cfg: Emotion2vecClassifierConfig) -> None:
    """Cross-field checks of the fine-tuning settings (ValueError showing the values)."""
    if not 0.0 < cfg.layer_decay <= 1.0:
        raise ValueError(f"model.layer_decay={cfg.layer_decay} must be in (0, 1]")
    optimizer = getattr(cfg, "optimizer_name", None)
    if isinstance(optimizer, str) and optimizer.startswith("${"):  # a plain dataclass: not resolved
        optimizer = None
    if cfg.layer_decay < 1.0 and optimizer not in (None, "composite"):
        raise ValueError(f"model.layer_decay={cfg.layer_decay} needs optimizer=composite with dynamic_groups: true "
                         f"(fairseq applies per-parameter lr scales only there); got optimizer={optimizer}")
    for name in ("mask_prob", "mask_channel_prob", "head_dropout"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ValueError(f"model.{name}={getattr(cfg, name)} must be in [0, 1)")
    if cfg.mask_length < 1 or cfg.mask_channel_length < 1:
        raise ValueError(f"model.mask_length={cfg.mask_length} and model.mask_channel_length="
                         f"{cfg.mask_channel_length} must be >= 1")
    if cfg.freeze_finetune_updates < 0:
        raise ValueError(f"model.freeze_finetune_updates={cfg.freeze_finetune_updates} must be >= 0")


@register_model("emotion2vec_classifier", dataclass=Emotion2vecClassifierConfig)
class Emotion2vecClassifierModel(Emotion2vecClassifierNet, BaseFairseqModel):
    """emotion2vec encoder + mean pooling + linear head, trained by fairseq."""

    def __init__(self, cfg: Emotion2vecClassifierConfig, num_classes: int):
        validate_classifier_config(cfg)
        # model.init_from is read once: it fixes the encoder shape (unset model.* fields) and the weights
        source = read_init_source(cfg.init_from, cfg.trust_checkpoint) if cfg.init_from else None
        resolve_encoder_shape(cfg, source)
        super().__init__(encoder_config_from(cfg), num_classes, cfg.head_dropout, cfg.feature_grad_mult)
        self.cfg = cfg
        self.num_updates = 0
        self.conv_layers = parse_conv_layers(cfg.conv_feature_layers)
        if source is not None:
            self.load_state_dict(init_state(self, source, "; set the model.* architecture fields to the checkpoint's"),
                                 strict=True)
        tag_no_decay_parameters(self)
        if cfg.layer_decay < 1.0:
            params = dict(self.named_parameters())
            for name, scale in self.layer_lr_scales(cfg.layer_decay):
                # one dict per parameter: the composite optimizer writes the group name into it
                params[name].optim_overrides = {"optimizer": {"lr_scale": scale}}

    @classmethod
    def build_model(cls, cfg: Emotion2vecClassifierConfig, task=None) -> "Emotion2vecClassifierModel":
        labels = getattr(task, "labels", None)
        if not labels:
            raise ValueError("emotion2vec_classifier needs the emotion2vec_classification task (its label set "
                             "gives the number of classes)")
        return cls(cfg, len(labels))

    def set_num_updates(self, num_updates: int) -> None:
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    def load_state_dict(self, state_dict, strict: bool = True, model_cfg=None, args=None):
        head = state_dict.get("proj.weight")
        if head is not None and head.shape[0] != self.num_classes:
            raise ValueError(
                f"the checkpoint's head has {head.shape[0]} classes but the task's label set has {self.num_classes}; "
                f"the training labels (task.data/<train>.emo or task.labels) changed since the checkpoint was "
                f"written: restore them or start in a new checkpoint.save_dir")
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    def forward(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                id: Optional[torch.Tensor] = None, **unused) -> Dict[str, Any]:
        """source [B, S] normalised waveform, padding_mask [B, S] (True = padded), id [B] utterance
        ids (seed the training masks) -> ``{"logits": [B, C]}``."""
        time_mask = channel_mask = None
        if self.training:
            time_mask, channel_mask = self.training_masks(source, padding_mask, id)
        frozen = self.training and self.num_updates < self.cfg.freeze_finetune_updates
        with torch.no_grad() if frozen else contextlib.nullcontext():
            embedding = self.utterance_embedding(source, padding_mask, time_mask, channel_mask)
        return {"logits": self.classify(embedding)}

    def training_masks(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor],
                       ids: Optional[torch.Tensor]):
        """Time masks [B, T] over each utterance's valid frames and channel masks [B, D] (or None),
        a pure function of (seed, update, utterance ids): reproducible under resume."""
        cfg = self.cfg
        if cfg.mask_prob <= 0 and cfg.mask_channel_prob <= 0:
            return None, None
        B, S = source.shape
        T = frames_for_samples(self.conv_layers, S)
        if padding_mask is not None:
            lengths = self.audio.local_encoder.output_lengths((~padding_mask).sum(dim=1)).tolist()
        else:
            lengths = [T] * B
        gen = torch.Generator().manual_seed(mask_seed(cfg.seed, self.num_updates, ids))
        return (time_masks(lengths, T, cfg.mask_prob, cfg.mask_length, gen),
                channel_masks(B, cfg.embed_dim, cfg.mask_channel_prob, cfg.mask_channel_length, gen))
