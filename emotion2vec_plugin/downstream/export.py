"""``e2v-export``: turn a training checkpoint into something downstream work can load.

Formats:

* ``plugin``: ``OUT/model.safetensors`` (student only: no teacher, no decoder, no optimizer
  state) + ``OUT/config.json`` (encoder settings, inference settings, provenance). Loads with
  :func:`emotion2vec_plugin.downstream.pretrained.load_pretrained`, which needs no fairseq.
* ``emotion2vec``: ``OUT/emotion2vec.pt``, a fairseq checkpoint in the released layout
  (``cfg.model._name = data2vec_multi``, student weights with decoder, no teacher), for the
  official emotion2vec feature-extraction scripts.
* ``funasr``: ``OUT/config.yaml`` (``model: Emotion2vec``, ``model_conf``) + ``OUT/model.pt``
  (``{"model": state_dict}``), the folder layout FunASR's ``AutoModel(model=OUT)`` reads.

A fine-tuned classifier (``emotion2vec_classifier`` checkpoint) keeps its head and class names:
``plugin`` adds ``classifier.labels`` to config.json, ``funasr`` writes the emotion2vec+ layout
(``model_conf.vocab_size``, ``tokens.txt``); see ``downstream/classifier_io.py``.
"""

import argparse
import json
import logging
import os
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..checkpoint.safe_load import CheckpointReadError
from ..cli import run_main
from ..modules.config import EncoderConfig
from ..modules.encoder import Emotion2vecEncoder
from .pretrained import (PLUGIN_CONFIG, PLUGIN_WEIGHTS, ExportFormatError, _plain, encoder_to_released_config,
                         read_fairseq_checkpoint)

logger = logging.getLogger(__name__)

FORMATS = ("plugin", "emotion2vec", "funasr")
TRAINING_KEYS = ("average_top_k_layers", "clone_batch", "ema_decay", "ema_end_decay", "ema_anneal_end_step",
                 "min_target_var", "min_pred_var", "utterance_mode", "mask_prob", "mask_prob_adjust", "mask_length")


def read_training_checkpoint(path: str, trust: bool = False
                             ) -> Tuple[Dict[str, torch.Tensor], EncoderConfig, Dict[str, Any], Dict[str, Any]]:
    """Student weights (teacher removed), encoder config, training settings and the full cfg dict.

    ``trust``: unpickle without the weights-only restriction (checkpoint/safe_load.py).
    """
    ckpt, cfg, enc = read_fairseq_checkpoint(path, trust)
    model_cfg = dict(_plain(cfg.get("model")) or {})
    training = {k: model_cfg[k] for k in TRAINING_KEYS if k in model_cfg}
    task_cfg = _plain(cfg.get("task")) or {}
    training["normalize"] = bool(task_cfg.get("normalize", True))
    training["max_update"] = (_plain(cfg.get("optimization")) or {}).get("max_update", 100000)
    state = {k: v for k, v in ckpt["model"].items() if not k.startswith("_ema")}
    meta = {"source": os.path.abspath(path), "num_updates": _num_updates(ckpt)}
    # fairseq's checkpoint loader upgrades old checkpoints using this bookkeeping
    bookkeeping = {"optimizer_history": ckpt.get("optimizer_history") or [], "extra_state": ckpt.get("extra_state") or {}}
    return state, enc, training, {"cfg": cfg, "meta": meta, **bookkeeping}


def _num_updates(ckpt: Dict[str, Any]) -> int:
    history = ckpt.get("optimizer_history") or [{}]
    return int(history[-1].get("num_updates", 0))


def export_plugin(state, enc: EncoderConfig, training, extra, out: str) -> str:
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    student = {k: v.contiguous() for k, v in state.items() if ".decoder." not in k}
    save_file(student, os.path.join(out, PLUGIN_WEIGHTS))
    meta = {
        "format": "emotion2vec_plugin",
        "encoder": asdict(enc),
        "inference": {"normalize": training.get("normalize", True), "sample_rate": 16000},
        "training": {k: v for k, v in training.items() if k != "normalize"},
        **extra["meta"],
    }
    with open(os.path.join(out, PLUGIN_CONFIG), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    return out


def export_emotion2vec(state, enc: EncoderConfig, training, extra, out: str) -> str:
    os.makedirs(out, exist_ok=True)
    cfg = dict(extra["cfg"])
    cfg["model"] = {"_name": "data2vec_multi", **encoder_to_released_config(enc, training)}
    cfg["task"] = {"_name": "audio_pretraining", "data": "", "normalize": training.get("normalize", True),
                   "sample_rate": 16000, "max_sample_size": 320000, "min_sample_size": 32000}
    cfg["criterion"] = {"_name": "model", "log_keys": ["ema_decay", "target_var", "pred_var", "model_norm", "ema_norm", "masked_pct"]}
    history = extra["optimizer_history"] or [{"num_updates": extra["meta"]["num_updates"], "lr_scheduler_state": {}}]
    ckpt = {"cfg": cfg, "model": state, "optimizer_history": history, "extra_state": extra["extra_state"],
            "last_optimizer_state": None}
    path = os.path.join(out, "emotion2vec.pt")
    torch.save(ckpt, path)
    return path


def export_funasr(state, enc: EncoderConfig, training, extra, out: str) -> str:
    import yaml

    os.makedirs(out, exist_ok=True)
    conf = {"model": "Emotion2vec", "model_conf": encoder_to_released_config(enc, training)}
    with open(os.path.join(out, "config.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(conf, f, sort_keys=False)
    torch.save({"model": state}, os.path.join(out, "model.pt"))
    return out


EXPORTERS = {"plugin": export_plugin, "emotion2vec": export_emotion2vec, "funasr": export_funasr}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export an emotion2vec training checkpoint for downstream use.")
    p.add_argument("checkpoint", help="fairseq checkpoint written by fairseq-hydra-train (e.g. checkpoints/checkpoint_last.pt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--random-init", type=int, default=None, metavar="SEED",
                   help="export the checkpoint's architecture with fresh random weights (seeded) instead of its "
                        "trained weights: the 'random weights' control of a probe comparison")
    p.add_argument("--format", choices=FORMATS, default="plugin",
                   help="plugin: safetensors + json, no fairseq needed; emotion2vec: released fairseq layout; "
                        "funasr: config.yaml + model.pt for FunASR")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle the checkpoint without restriction (runs any code it holds); by default only "
                        "tensors, containers and fairseq's omegaconf configs are loaded")
    return p


def main(args) -> str:
    from .classifier_io import maybe_export_classifier  # a fine-tuned classifier keeps its head and labels

    classifier = maybe_export_classifier(args)
    if classifier is not None:
        return classifier
    state, enc, training, extra = read_training_checkpoint(args.checkpoint, getattr(args, "trust_checkpoint", False))
    if getattr(args, "random_init", None) is not None:
        torch.manual_seed(args.random_init)
        state = Emotion2vecEncoder(enc).state_dict()
        extra["meta"].update(random_init=args.random_init, num_updates=0)
    return EXPORTERS[args.format](state, enc, training, extra, args.out)


def cli_main(argv: Optional[List[str]] = None) -> None:
    # force: importing fairseq already configured the root logger at DEBUG
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args(argv)
    where = run_main("e2v-export", main, args, (ExportFormatError, CheckpointReadError))
    print(f"exported {args.checkpoint} as {args.format} to {where}")


if __name__ == "__main__":
    cli_main()
