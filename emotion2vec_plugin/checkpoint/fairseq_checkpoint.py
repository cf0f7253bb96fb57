"""Reading fairseq checkpoints into a :class:`~.model_record.ModelRecord`, without fairseq.

Three kinds, told apart by ``cfg.model._name``:

* ``emotion2vec``: our pretraining checkpoints (``checkpoint_last.pt``; teacher under ``_ema.*``);
* ``data2vec_multi`` (or a ``modalities`` section): released emotion2vec checkpoints and the
  ``emotion2vec`` export format (student with decoder, data2vec 2.0's config names);
* ``emotion2vec_classifier``: our fine-tuning checkpoints (encoder + head; class names in
  ``task_state["labels"]``).

Files are read by :func:`~.safe_load.load_checkpoint` (``weights_only=True`` plus fairseq's
config classes; ``trust=True`` unpickles anything after a warning).
"""

import os
from dataclasses import fields
from typing import Any, Dict, Optional, Tuple

from ..modules.config import StudentConfig
from .model_record import ExportFormatError, InferenceSettings, ModelRecord, check_head, encoder_or_head
from .released_config import plain, released_to_encoder_fields
from .safe_load import load_checkpoint

# model settings of a pretraining checkpoint that the released config records (with max_update)
TRAINING_KEYS = ("average_top_k_layers", "clone_batch", "ema_decay", "ema_end_decay", "ema_anneal_end_step",
                 "min_target_var", "min_pred_var", "utterance_mode", "mask_prob", "mask_prob_adjust", "mask_length")
OUR_MODELS = ("emotion2vec", "emotion2vec_classifier")


def stated_architecture(model_cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The StudentConfig fields a checkpoint's ``cfg.model`` states (released names translated);
    None when it is not the config of an emotion2vec / data2vec 2.0 audio model."""
    if model_cfg.get("_name") == "data2vec_multi" or "modalities" in model_cfg:
        return released_to_encoder_fields(model_cfg)
    if model_cfg.get("_name") in OUR_MODELS:
        return {f.name: model_cfg[f.name] for f in fields(StudentConfig) if model_cfg.get(f.name) is not None}
    return None


def model_config(ckpt: Any) -> Dict[str, Any]:
    """``ckpt["cfg"]["model"]`` as a plain dict ({} when absent)."""
    cfg = plain(ckpt.get("cfg")) if isinstance(ckpt, dict) else None
    return dict(plain(cfg.get("model")) or {}) if isinstance(cfg, dict) else {}


def read_fairseq_checkpoint(path: str, trust: bool = False, ckpt: Optional[Dict[str, Any]] = None
                            ) -> Tuple[Dict[str, Any], Dict[str, Any], StudentConfig]:
    """(checkpoint dict, plain cfg dict, architecture) of one of our pretraining checkpoints or a
    released emotion2vec checkpoint; ``ckpt``: the file's content when already loaded."""
    if ckpt is None:
        ckpt = load_checkpoint(path, trust)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        got = f"a dict with keys {sorted(map(str, ckpt))[:6]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ExportFormatError(f"{path}: not a fairseq checkpoint (expected a dict with a 'model' state dict and a "
                                f"'cfg', got {got})")
    cfg = plain(ckpt.get("cfg")) or {}
    model_cfg = model_config(ckpt)
    stated = stated_architecture(model_cfg)
    if stated is None or model_cfg.get("_name") == "emotion2vec_classifier":
        raise ExportFormatError(f"{path}: a checkpoint of another model (cfg.model._name={model_cfg.get('_name')!r}); "
                                f"expected an emotion2vec training checkpoint or a released emotion2vec / data2vec 2.0 "
                                f"(data2vec_multi) checkpoint")
    return ckpt, cfg, StudentConfig(**stated)


def _settings(cfg: Dict[str, Any]) -> InferenceSettings:
    model_cfg, task_cfg = plain(cfg.get("model")) or {}, plain(cfg.get("task")) or {}
    return InferenceSettings(normalize=bool(task_cfg.get("normalize", model_cfg.get("normalize", True))),
                             sample_rate=int(task_cfg.get("sample_rate", 16000)))


def _meta(path: str, ckpt: Dict[str, Any]) -> Dict[str, Any]:
    history = ckpt.get("optimizer_history") or [{}]
    return {"source": os.path.abspath(path), "num_updates": int(history[-1].get("num_updates", 0))}


def read_encoder_checkpoint(path: str, trust: bool = False, ckpt: Optional[Dict[str, Any]] = None) -> ModelRecord:
    """A pretraining checkpoint (ours or released): student weights (teacher removed, decoder kept),
    architecture, inference settings, the training settings the released config records, the
    whole cfg and fairseq's bookkeeping."""
    ckpt, cfg, enc = read_fairseq_checkpoint(path, trust, ckpt)
    model_cfg = model_config(ckpt)
    training = {k: model_cfg[k] for k in TRAINING_KEYS if k in model_cfg}
    training["max_update"] = (plain(cfg.get("optimization")) or {}).get("max_update", 100000)
    state = {k: v for k, v in ckpt["model"].items() if not k.startswith("_ema")}
    return ModelRecord(state, enc, _settings(cfg), path, None, training, _meta(path, ckpt), cfg,
                       ckpt.get("optimizer_history") or [], ckpt.get("extra_state") or {})


def is_classifier_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and model_config(ckpt).get("_name") == "emotion2vec_classifier"


def read_classifier_checkpoint(path: str, trust: bool = False, ckpt: Optional[Dict[str, Any]] = None) -> ModelRecord:
    """One of our ``emotion2vec_classifier`` fine-tuning checkpoints: encoder + head weights (no
    teacher, no decoder), architecture from its saved cfg, class names from ``task_state``."""
    if ckpt is None:
        ckpt = load_checkpoint(path, trust)
    if not is_classifier_checkpoint(ckpt) or "model" not in ckpt:
        raise ExportFormatError(f"{path}: not an emotion2vec_classifier checkpoint (cfg.model._name)")
    cfg = plain(ckpt.get("cfg")) or {}
    labels = list((ckpt.get("task_state") or {}).get("labels") or [])
    check_head(ckpt["model"], labels, path)
    state = {k: v for k, v in ckpt["model"].items() if encoder_or_head(k)}
    enc = StudentConfig(**stated_architecture(model_config(ckpt)))
    return ModelRecord(state, enc, _settings(cfg), path, labels, {}, _meta(path, ckpt), cfg)
