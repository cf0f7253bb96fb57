"""The ``emotion2vec`` format: ``OUT/emotion2vec.pt``, a fairseq checkpoint in the released layout.

``cfg.model._name = data2vec_multi`` with the released architecture record
(``checkpoint/released_config.py``), the student's weights with its decoder and without teacher,
fairseq's bookkeeping of the source checkpoint: what the official emotion2vec feature-extraction
scripts load. The format is a checkpoint file, so it declares itself by ``cfg.model._name``
(read in ``checkpoint/fairseq_checkpoint.py``, like released emotion2vec checkpoints), not by a
folder marker. A fine-tuned classifier has no place in this pretraining layout.
"""

import os

import torch

from ..checkpoint.fairseq_checkpoint import read_encoder_checkpoint
from ..checkpoint.model_record import ExportFormatError, ModelRecord
from ..checkpoint.released_config import encoder_to_released_config

NAME = "emotion2vec"
HELP = "released fairseq layout"
FILE = "emotion2vec.pt"
MARKER = None  # a checkpoint file: cfg.model._name = data2vec_multi


def write(record: ModelRecord, out: str) -> str:
    """Write the encoder ``record`` as ``out/emotion2vec.pt``; returns that path."""
    if record.is_classifier:
        raise ExportFormatError(f"{record.origin} is a fine-tuned classifier; --format {NAME} is the released "
                                f"pretraining layout, which has no classifier head: use --format plugin or --format "
                                f"funasr")
    os.makedirs(out, exist_ok=True)
    normalize = record.settings.normalize
    cfg = dict(record.cfg)
    cfg["model"] = {"_name": "data2vec_multi", **encoder_to_released_config(record.encoder,
                                                                           {**record.training, "normalize": normalize})}
    cfg["task"] = {"_name": "audio_pretraining", "data": "", "normalize": normalize,
                   "sample_rate": 16000, "max_sample_size": 320000, "min_sample_size": 32000}
    cfg["criterion"] = {"_name": "model",
                        "log_keys": ["ema_decay", "target_var", "pred_var", "model_norm", "ema_norm", "masked_pct"]}
    history = record.optimizer_history or [{"num_updates": record.meta["num_updates"], "lr_scheduler_state": {}}]
    ckpt = {"cfg": cfg, "model": record.state, "optimizer_history": history, "extra_state": record.extra_state,
            "last_optimizer_state": None}
    path = os.path.join(out, FILE)
    torch.save(ckpt, path)
    return path


read = read_encoder_checkpoint  # released emotion2vec checkpoints and ours: see checkpoint/fairseq_checkpoint.py
