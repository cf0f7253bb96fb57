"""Load a trained emotion2vec for inference, without fairseq: any export folder or checkpoint file.

Accepted sources:

* an export folder of any format in :data:`~emotion2vec_plugin.formats.FORMATS` (detected by its
  declared marker), including FunASR's own emotion2vec / emotion2vec+ folders;
* a checkpoint file: ours (pretraining ``checkpoint_last.pt`` or fine-tuning), an ``emotion2vec``
  export or a released emotion2vec checkpoint (``cfg.model._name = data2vec_multi``).

Weights are checked strictly: a missing, unexpected or mis-shaped weight is an error naming the
file and the key. Checkpoint files are read by
:func:`emotion2vec_plugin.checkpoint.safe_load.load_checkpoint` (``weights_only=True``, fairseq's
config classes allowed; ``trust=True`` to unpickle anything).
"""

import os
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..checkpoint.fairseq_checkpoint import (is_classifier_checkpoint, read_classifier_checkpoint,
                                             read_encoder_checkpoint)
from ..checkpoint.model_record import HEAD_KEYS, ExportFormatError, InferenceSettings, ModelRecord, check_head
from ..checkpoint.safe_load import load_checkpoint
from ..modules.classifier import Emotion2vecClassifierNet
from ..modules.config import EncoderConfig
from ..modules.encoder import Emotion2vecEncoder
from . import detect_folder


def read_model(path: str, trust: bool = False, classifier_checkpoints: bool = True) -> ModelRecord:
    """The record of any accepted source (see the module docstring). ``classifier_checkpoints=False``
    refuses a fine-tuning checkpoint file (as a source of encoder features it needs exporting first)."""
    if os.path.isdir(path):
        return detect_folder(path).read(path, trust)
    if not os.path.isfile(path):
        raise ExportFormatError(f"{path} does not exist; expected an e2v-export folder or a checkpoint file")
    ckpt = load_checkpoint(path, trust)
    if classifier_checkpoints and is_classifier_checkpoint(ckpt):
        return read_classifier_checkpoint(path, trust, ckpt)
    return read_encoder_checkpoint(path, trust, ckpt)


def build_encoder(cfg: EncoderConfig, state: Dict[str, torch.Tensor], origin: str) -> Emotion2vecEncoder:
    """Encoder without decoder, strictly loaded from ``state`` (decoder, teacher and head entries dropped)."""
    model = Emotion2vecEncoder(cfg, with_decoder=False)
    state = {k: v for k, v in state.items() if ".decoder." not in k and not k.startswith("_ema") and k not in HEAD_KEYS}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ExportFormatError(
            f"{origin}: weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ExportFormatError(f"{origin}: {k} has shape {tuple(v.shape)}, config expects {tuple(own[k].shape)}")
    model.load_state_dict(state)
    return model.eval()


def build_classifier(cfg: EncoderConfig, state: Dict[str, torch.Tensor], labels: List[str],
                     origin: str) -> Emotion2vecClassifierNet:
    """Classifier (eval mode) strictly loaded from ``state``; the encoder part is checked like
    :func:`build_encoder` (missing / unexpected / mis-shaped keys named)."""
    check_head(state, labels, origin)
    encoder = build_encoder(cfg, state, origin)  # strict check of every encoder key
    model = Emotion2vecClassifierNet(cfg, len(labels))
    model.load_state_dict({**encoder.state_dict(), **{k: state[k] for k in HEAD_KEYS}}, strict=True)
    return model.eval()


def load_pretrained(path: str, device: str = "cpu", trust: bool = False) -> Tuple[Emotion2vecEncoder, InferenceSettings]:
    """The encoder (eval mode, no decoder) of an export folder or a pretraining checkpoint, for
    feature extraction; a classifier export gives its encoder. ``trust``: unpickle checkpoint
    files without the weights-only restriction."""
    record = read_model(path, trust, classifier_checkpoints=False)
    return build_encoder(record.encoder, record.state, record.origin).to(device), record.settings


def load_classifier(path: str, device: str = "cpu",
                    trust: bool = False) -> Tuple[nn.Module, Optional[List[str]], InferenceSettings]:
    """(model, class names, settings). With a head: an :class:`Emotion2vecClassifierNet` and its
    labels; a plain encoder export: an :class:`Emotion2vecEncoder` and ``None`` (features only)."""
    record = read_model(path, trust)
    if record.is_classifier:
        model = build_classifier(record.encoder, record.state, record.labels, record.origin)
        return model.to(device), record.labels, record.settings
    return build_encoder(record.encoder, record.state, record.origin).to(device), None, record.settings
