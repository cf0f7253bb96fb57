"""``model.init_from``: a model's starting weights from another checkpoint, for both models.

The pretraining model (``models/emotion2vec_model.py``) and the classifier
(``models/emotion2vec_classifier.py``) both call :func:`init_state` with an :class:`InitSource`:

* a checkpoint file (:func:`read_init_file`): ours, a released emotion2vec or data2vec 2.0 audio
  checkpoint, a FunASR ``model.pt`` or a bare state dict;
* for the classifier also an ``e2v-export`` folder (``formats/init_source.py`` reads it).

Weights go through the explicit key map of ``convert.py``; parts the target has no place for are
dropped (the teacher and the decoder for a classifier; a source's classifier head always), and a
classifier's own head starts fresh.

The classifier also takes its encoder shape from the source, as fairseq's wav2vec 2.0 fine-tuning
reads it from ``w2v_path``: :func:`resolve_encoder_shape` fills the unset (None) shape fields of
its config from the source's own config and refuses an explicit value that disagrees with it.
"""

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from ..modules.config import EncoderConfig, parse_conv_layers
from .convert import CheckpointMismatchError, map_state_dict, state_dict_of
from .fairseq_checkpoint import model_config, stated_architecture
from .model_record import HEAD_KEYS
from .safe_load import load_checkpoint

logger = logging.getLogger(__name__)

# the encoder fields that fix parameter shapes (and norm_eps, which fixes the computation): read
# from model.init_from by the classifier; dropouts and layer drop stay fine-tuning settings
SHAPE_FIELDS = ("conv_feature_layers", "embed_dim", "num_heads", "mlp_ratio", "prenet_depth", "depth",
                "conv_pos_depth", "conv_pos_width", "conv_pos_groups", "num_utterance_tokens", "norm_eps")


@dataclass
class InitSource:
    """Weights to start from, the architecture fields their source states ({} for a bare weights
    file) and where they came from (for messages)."""

    state: Dict[str, torch.Tensor]
    architecture: Dict[str, Any]
    origin: str


def read_init_file(path: str, trust: bool = False) -> InitSource:
    """A checkpoint file (see the module docstring). ``trust``: unpickle without the weights-only
    restriction (safe_load.py)."""
    content = load_checkpoint(path, trust=trust)
    return InitSource(state_dict_of(content, path), stated_architecture(model_config(content)) or {}, path)


def _get(cfg: Any, name: str) -> Any:
    return cfg.get(name) if isinstance(cfg, dict) else getattr(cfg, name, None)


def _set(cfg: Any, name: str, value: Any) -> None:
    if isinstance(cfg, dict):
        cfg[name] = value
    else:
        setattr(cfg, name, value)


def _same(name: str, a: Any, b: Any) -> bool:
    if name == "conv_feature_layers":
        return parse_conv_layers(str(a)) == parse_conv_layers(str(b))
    return float(a) == float(b)


def resolve_encoder_shape(model_cfg: Any, source: Optional[InitSource]) -> None:
    """Fill the :data:`SHAPE_FIELDS` of ``model_cfg`` (a config object or dict) that are None from
    ``source``'s architecture, else from :class:`EncoderConfig`'s defaults (the base model).

    An explicit value that disagrees with the source raises CheckpointMismatchError naming the
    field, both values, the source and the fix. Allowed differences are those the key map
    bridges: utterance tokens the source lacks (they start fresh), and a flat data2vec 2.0 stack
    (prenet_depth 0) split into prenet and main blocks of the same total depth.
    """
    stated = source.architecture if source is not None else {}
    given = {name: _get(model_cfg, name) for name in SHAPE_FIELDS}
    defaults = EncoderConfig()
    for name, value in given.items():
        if value is None:
            _set(model_cfg, name, stated.get(name, getattr(defaults, name)))
    split = (stated.get("prenet_depth") == 0 and "depth" in stated
             and _get(model_cfg, "prenet_depth") + _get(model_cfg, "depth") == stated["depth"])
    wrong = []
    for name, value in given.items():
        if value is None or name not in stated or _same(name, value, stated[name]):
            continue
        if (name == "num_utterance_tokens" and stated[name] == 0) or (name in ("prenet_depth", "depth") and split):
            continue
        wrong.append(f"model.{name}={value!r} (init_from has {stated[name]!r})")
    if wrong:
        raise CheckpointMismatchError(
            f"{source.origin}: the encoder shape comes from model.init_from, but the config overrides it: "
            f"{'; '.join(wrong)}. Drop those model.* overrides (the fine-tuning recipes set none), or point "
            f"model.init_from at a checkpoint or e2v-export folder of the shape you want")


def init_state(model: nn.Module, source: InitSource, hint: str = "") -> Dict[str, torch.Tensor]:
    """A full state dict for ``model.load_state_dict(..., strict=True)``: ``source``'s weights
    mapped onto ``model`` (see the module docstring), the model's own values where the source has
    none (logged). Without a teacher in the source, the teacher entries are left out (the
    pretraining model then copies the loaded student into its teacher).

    Raises CheckpointMismatchError naming the source and the keys for an unknown layout, a
    missing weight or a different shape (``hint`` is appended to the shape message).
    """
    own = model.state_dict()
    parts = {"_ema": any(k.startswith("_ema.") for k in own), ".decoder.": any(".decoder." in k for k in own)}
    state = {k: v for k, v in source.state.items()
             if (parts["_ema"] or not k.startswith("_ema")) and (parts[".decoder."] or ".decoder." not in k)}
    targets = [k for k in own if k not in HEAD_KEYS]  # a classifier's head starts fresh
    mapped, fresh = map_state_dict(state, targets, len(model.audio.context_encoder.blocks), origin=source.origin)
    shape_errors = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in mapped.items() if v.shape != own[k].shape]
    if shape_errors:
        raise CheckpointMismatchError(f"{source.origin}: shape mismatch: " + "; ".join(shape_errors[:5]) + hint)
    student_fresh = [k for k in fresh if not k.startswith("_ema")]
    logger.info("model.init_from %s: %d tensors loaded%s", source.origin, len(mapped),
                f"; initialised fresh (absent from the checkpoint): {student_fresh}" if student_fresh else "")
    if not any(k.startswith("_ema.") for k in mapped):
        return {k: v for k, v in {**own, **mapped}.items() if not k.startswith("_ema")}
    return {**own, **mapped}
