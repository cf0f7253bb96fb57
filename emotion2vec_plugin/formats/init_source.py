"""The classifier's ``model.init_from``: a checkpoint file or an export folder, and the encoder shape it fixes.

The pretraining model reads checkpoint files only (``checkpoint/init_from.py``); the classifier
also starts from an ``e2v-export`` folder of any format, read here through the format registry
and checked strictly (as for inference), and takes its encoder shape from the source
(:func:`encoder_shape_from_init`), as fairseq's wav2vec 2.0 fine-tuning reads it from ``w2v_path``.
"""

import os
from dataclasses import asdict
from typing import Any

from ..checkpoint.convert import CheckpointMismatchError
from ..checkpoint.init_from import SHAPE_FIELDS, InitSource, read_init_file, resolve_encoder_shape
from .load import build_encoder, read_model


def read_init_source(path: str, trust: bool = False) -> InitSource:
    """Weights and architecture of ``path``: a checkpoint file or an export folder (strictly
    checked; a classifier export gives its encoder). ``trust``: see checkpoint/safe_load.py."""
    if os.path.isdir(path):
        record = read_model(path, trust)
        encoder = build_encoder(record.encoder, record.state, record.origin)
        return InitSource(encoder.state_dict(), asdict(record.encoder), path)
    if os.path.isfile(path):
        return read_init_file(path, trust)
    raise CheckpointMismatchError(f"model.init_from={path!r} does not exist (expected a checkpoint file or an "
                                  f"e2v-export folder)")


def encoder_shape_from_init(model_cfg: Any) -> None:
    """Fill the unset encoder shape fields of a classifier config (``model.*``) from
    ``model.init_from`` (see :func:`~emotion2vec_plugin.checkpoint.init_from.resolve_encoder_shape`);
    the EncoderConfig defaults without init_from. Reads the source only when a field is unset."""
    if all(getattr(model_cfg, name, None) is not None for name in SHAPE_FIELDS):
        return
    path = getattr(model_cfg, "init_from", None)
    source = read_init_source(path, bool(getattr(model_cfg, "trust_checkpoint", False))) if path else None
    resolve_encoder_shape(model_cfg, source)
