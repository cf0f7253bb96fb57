"""Weights in and out of the emotion2vec classifier.

* :func:`init_encoder_weights`: the encoder part of a classifier from a pretraining checkpoint
  (ours), a released emotion2vec or data2vec 2.0 audio checkpoint, or an ``e2v-export`` folder,
  through the explicit key map of ``checkpoint/convert.py`` (decoder, teacher and any
  classifier head of the source are dropped; the head starts fresh).
* :func:`read_classifier_checkpoint`: what ``e2v-export`` needs from a fine-tuning checkpoint.
* :func:`load_classifier`: a classifier or a plain encoder for ``e2v-predict``, from a
  ``plugin`` / ``funasr`` export folder or a fine-tuning checkpoint, without fairseq.

A classifier export is a normal export plus the head (``proj.weight`` [C, D], ``proj.bias``
[C]) and the class names: ``config.json["classifier"]["labels"]`` (plugin) or ``tokens.txt``
(FunASR, one class per line, class 0 first).
"""

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..checkpoint.convert import CheckpointMismatchError, map_state_dict, read_state_dict
from ..checkpoint.safe_load import load_checkpoint
from ..modules.classifier import Emotion2vecClassifierNet
from ..modules.config import EncoderConfig, encoder_config_from
from .pretrained import (PLUGIN_CONFIG, PLUGIN_WEIGHTS, ExportFormatError, InferenceSettings, _plain,
                         build_encoder, load_pretrained, released_to_encoder_fields)

logger = logging.getLogger(__name__)

HEAD_KEYS = ("proj.weight", "proj.bias")
TOKENS = "tokens.txt"


def _encoder_only(key: str) -> bool:
    return not (key.startswith("_ema") or ".decoder." in key or key in HEAD_KEYS)


def init_encoder_weights(path: str, model: Emotion2vecClassifierNet, trust: bool = False) -> List[str]:
    """Load the encoder weights of ``path`` into ``model`` (the head keeps its initialisation).
    ``trust``: unpickle without the weights-only restriction (checkpoint/safe_load.py).

    Returns the encoder keys left at their fresh initialisation (utterance tokens absent from a
    data2vec 2.0 checkpoint). Raises CheckpointMismatchError naming ``path`` and the keys for an
    unknown layout or a different architecture.
    """
    if os.path.isdir(path):
        encoder, _ = load_pretrained(path, trust=trust)  # plugin or FunASR export folder (strict)
        source = encoder.state_dict()
    elif os.path.isfile(path):
        source = read_state_dict(path, trust)
    else:
        raise CheckpointMismatchError(f"model.init_from={path!r} does not exist (expected a checkpoint file or an "
                                      f"e2v-export folder)")
    source = {k: v for k, v in source.items() if _encoder_only(k)}
    own = {k: v for k, v in model.state_dict().items() if k not in HEAD_KEYS}
    mapped, fresh = map_state_dict(source, list(own), len(model.audio.context_encoder.blocks), origin=path)
    shape_errors = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in mapped.items() if v.shape != own[k].shape]
    if shape_errors:
        raise CheckpointMismatchError(f"{path}: shape mismatch: " + "; ".join(shape_errors[:5])
                                      + "; set the model.* architecture fields to the checkpoint's")
    model.load_state_dict({**model.state_dict(), **mapped}, strict=True)
    logger.info("encoder initialised from %s (%d tensors)%s", path, len(mapped),
                f"; fresh: {fresh}" if fresh else "")
    return fresh


@dataclass
class ClassifierCheckpoint:
    """A fine-tuning checkpoint read for export: student weights with head, encoder config, class
    names, the inference settings and the plain cfg dict."""

    state: Dict[str, torch.Tensor]
    encoder: EncoderConfig
    labels: List[str]
    settings: InferenceSettings
    cfg: Dict[str, Any]
    num_updates: int


def is_classifier_checkpoint(ckpt: Dict[str, Any]) -> bool:
    model_cfg = _plain((_plain(ckpt.get("cfg")) or {}).get("model")) or {}
    return model_cfg.get("_name") == "emotion2vec_classifier"


def read_classifier_checkpoint(path: str, ckpt: Optional[Dict[str, Any]] = None,
                               trust: bool = False) -> ClassifierCheckpoint:
    """Read one of our ``emotion2vec_classifier`` fairseq checkpoints (labels from ``task_state``)."""
    if ckpt is None:
        ckpt = load_checkpoint(path, trust)
    if not isinstance(ckpt, dict) or "model" not in ckpt or not is_classifier_checkpoint(ckpt):
        raise ExportFormatError(f"{path}: not an emotion2vec_classifier checkpoint (cfg.model._name)")
    cfg = _plain(ckpt.get("cfg")) or {}
    model_cfg, task_cfg = dict(_plain(cfg.get("model")) or {}), dict(_plain(cfg.get("task")) or {})
    labels = list((ckpt.get("task_state") or {}).get("labels") or [])
    state = dict(ckpt["model"])
    check_head(state, labels, path)
    settings = InferenceSettings(normalize=bool(task_cfg.get("normalize", True)),
                                 sample_rate=int(task_cfg.get("sample_rate", 16000)))
    history = ckpt.get("optimizer_history") or [{}]
    return ClassifierCheckpoint(state, encoder_config_from(model_cfg), labels, settings, cfg,
                                int(history[-1].get("num_updates", 0)))


def check_head(state: Dict[str, torch.Tensor], labels: List[str], origin: str) -> None:
    """The head must have one output per class name (ExportFormatError naming both counts)."""
    for key in HEAD_KEYS:
        if key not in state:
            raise ExportFormatError(f"{origin}: classifier weights lack {key}")
    rows = state["proj.weight"].shape[0]
    if rows != len(labels) or state["proj.bias"].shape[0] != rows:
        raise ExportFormatError(f"{origin}: the head has {rows} outputs but the label list has {len(labels)} classes "
                                f"({labels[:10]}); the export and its label file do not belong together")


def build_classifier(cfg: EncoderConfig, state: Dict[str, torch.Tensor], labels: List[str],
                     origin: str) -> Emotion2vecClassifierNet:
    """Classifier (eval mode) strictly loaded from ``state``; the encoder part is checked like
    :func:`build_encoder` (missing / unexpected / mis-shaped keys named)."""
    check_head(state, labels, origin)
    encoder = build_encoder(cfg, state, origin)  # strict check of every encoder key
    model = Emotion2vecClassifierNet(cfg, len(labels))
    model.load_state_dict({**encoder.state_dict(), **{k: state[k] for k in HEAD_KEYS}}, strict=True)
    return model.eval()


def read_tokens(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        names = [line.rstrip("\r\n") for line in f]
    while names and not names[-1]:
        names.pop()
    return names


def load_classifier(path: str, device: str = "cpu",
                    trust: bool = False) -> Tuple[nn.Module, Optional[List[str]], InferenceSettings]:
    """(model, class names, settings). With a head: an :class:`Emotion2vecClassifierNet` and its
    labels; a plain encoder export: an :class:`Emotion2vecEncoder` and ``None`` (features only)."""
    if os.path.isdir(path):
        plugin_cfg = os.path.join(path, PLUGIN_CONFIG)
        if os.path.isfile(plugin_cfg):
            with open(plugin_cfg, encoding="utf-8") as f:
                meta = json.load(f)
            if "classifier" in meta:
                from safetensors.torch import load_file

                labels = list(meta["classifier"].get("labels") or [])
                model = build_classifier(EncoderConfig(**meta["encoder"]), load_file(os.path.join(path, PLUGIN_WEIGHTS)),
                                         labels, os.path.join(path, PLUGIN_WEIGHTS))
                return model.to(device), labels, InferenceSettings(**meta["inference"])
        elif os.path.isfile(os.path.join(path, "config.yaml")) and os.path.isfile(os.path.join(path, TOKENS)):
            import yaml

            with open(os.path.join(path, "config.yaml"), encoding="utf-8") as f:
                conf = yaml.safe_load(f)
            weights = os.path.join(path, "model.pt")
            state = load_checkpoint(weights, trust)
            state = state.get("model", state) if isinstance(state, dict) else {}
            if "proj.weight" in state:
                labels = read_tokens(os.path.join(path, TOKENS))
                cfg = EncoderConfig(**released_to_encoder_fields(conf["model_conf"]))
                model = build_classifier(cfg, state, labels, f"{weights} + {os.path.join(path, TOKENS)}")
                settings = InferenceSettings(normalize=bool(conf["model_conf"].get("normalize", True)))
                return model.to(device), labels, settings
    elif os.path.isfile(path):
        ckpt = load_checkpoint(path, trust)
        if isinstance(ckpt, dict) and is_classifier_checkpoint(ckpt):
            c = read_classifier_checkpoint(path, ckpt)
            state = {k: v for k, v in c.state.items() if _encoder_only(k) or k in HEAD_KEYS}
            return build_classifier(c.encoder, state, c.labels, path).to(device), c.labels, c.settings
    encoder, settings = load_pretrained(path, device, trust=trust)
    return encoder, None, settings


# ------------------------------------------------------------------------------------ export



def export_classifier_plugin(c: ClassifierCheckpoint, source: str, out: str) -> str:
    """``OUT/model.safetensors`` (encoder + head) and ``OUT/config.json`` with ``classifier.labels``;
    also loadable as a plain encoder by ``load_pretrained`` (the head is ignored there)."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in c.state.items()}, os.path.join(out, PLUGIN_WEIGHTS))
    meta = {"format": "emotion2vec_plugin", "encoder": asdict(c.encoder),
            "inference": {"normalize": c.settings.normalize, "sample_rate": c.settings.sample_rate},
            "classifier": {"labels": c.labels, "pooling": "mean"},
            "source": os.path.abspath(source), "num_updates": c.num_updates}
    with open(os.path.join(out, PLUGIN_CONFIG), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    return out


def export_classifier_funasr(c: ClassifierCheckpoint, source: str, out: str) -> str:
    """The emotion2vec+ layout FunASR's ``AutoModel(model=OUT)`` reads: ``config.yaml`` (model_conf
    with ``vocab_size`` = C, a CharTokenizer), ``model.pt`` (``{"model": state}`` with ``proj``) and
    ``tokens.txt`` (class names, class 0 first; FunASR names the scores with it)."""
    import yaml

    from .pretrained import encoder_to_released_config

    bad = [n for n in c.labels if n.startswith("unuse") or not n.strip() or n != n.rstrip() or "\n" in n]
    if bad:
        raise ExportFormatError(f"{source}: class names {bad} cannot go to FunASR's tokens.txt (FunASR hides classes "
                                f"whose name starts with 'unuse' and strips trailing blanks; names must be non-empty "
                                f"single lines)")
    os.makedirs(out, exist_ok=True)
    model_conf = encoder_to_released_config(c.encoder, {"normalize": c.settings.normalize})
    model_conf["vocab_size"] = len(c.labels)
    model_conf["modalities"]["audio"]["decoder"] = None  # fine-tuned without decoder: FunASR then builds none
    # FunASR's tokenizer only names the classes here, but insists that its unk_symbol is one of
    # them: the last class, as in emotion2vec+ (whose last class is "<unk>")
    conf = {"model": "Emotion2vec", "model_conf": model_conf, "tokenizer": "CharTokenizer",
            "tokenizer_conf": {"unk_symbol": c.labels[-1], "split_with_space": True}}
    with open(os.path.join(out, "config.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(conf, f, sort_keys=False)
    torch.save({"model": c.state}, os.path.join(out, "model.pt"))
    with open(os.path.join(out, TOKENS), "w", encoding="utf-8") as f:
        f.write("".join(f"{n}\n" for n in c.labels))
    return out


def export_classifier(path: str, fmt: str, out: str, trust: bool = False,
                      ckpt: Optional[Dict[str, Any]] = None) -> str:
    """``e2v-export`` of an ``emotion2vec_classifier`` checkpoint as ``plugin`` or ``funasr``."""
    c = read_classifier_checkpoint(path, ckpt, trust)
    c.state = {k: v for k, v in c.state.items() if _encoder_only(k) or k in HEAD_KEYS}
    if fmt == "plugin":
        return export_classifier_plugin(c, path, out)
    if fmt == "funasr":
        return export_classifier_funasr(c, path, out)
    raise ExportFormatError(f"{path} is a fine-tuned classifier; --format {fmt} is the released pretraining layout, "
                            f"which has no classifier head: use --format plugin or --format funasr")


def maybe_export_classifier(args) -> Optional[str]:
    """e2v-export's hook: export ``args.checkpoint`` if it is a classifier checkpoint, else None."""
    path, trust = args.checkpoint, getattr(args, "trust_checkpoint", False)
    if not os.path.isfile(path):
        return None
    ckpt = load_checkpoint(path, trust)
    if not (isinstance(ckpt, dict) and is_classifier_checkpoint(ckpt)):
        return None
    if getattr(args, "random_init", None) is not None:
        raise ExportFormatError("--random-init exports an encoder architecture; it does not apply to a classifier")
    return export_classifier(path, args.format, args.out, trust, ckpt)
