"""The ``plugin`` format: ``OUT/model.safetensors`` + ``OUT/config.json``, loaded without fairseq.

``model.safetensors``: the student without decoder (and without teacher); a classifier adds its
head ``proj.weight`` [C, D], ``proj.bias`` [C]. ``config.json`` (built by :func:`plugin_config`):

* ``format``: ``"emotion2vec_plugin"`` (the marker this format is detected by);
* ``encoder``: the architecture (StudentConfig fields);
* ``inference``: ``normalize``, ``sample_rate``;
* an encoder: ``training`` (the self-distillation settings of the checkpoint); a classifier:
  ``classifier`` (``labels``: class i = head row i, ``pooling``: ``"mean"``);
* provenance: ``source``, ``num_updates`` [, ``random_init``].

A classifier export also loads as a plain encoder (the head is ignored there).
"""

import json
import os
from dataclasses import asdict, fields
from typing import Any, Dict

from ..checkpoint.model_record import ExportFormatError, InferenceSettings, ModelRecord
from ..modules.config import StudentConfig
from .marker import FolderMarker

NAME = "plugin"
HELP = "safetensors + json, no fairseq needed"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
MARKER = FolderMarker(CONFIG, "JSON", "format", "emotion2vec_plugin", "plugin export")


def plugin_config(record: ModelRecord) -> Dict[str, Any]:
    """The ``config.json`` content of ``record`` (see the module docstring)."""
    meta: Dict[str, Any] = {
        MARKER.key: MARKER.value,
        "encoder": asdict(record.encoder),
        "inference": {"normalize": record.settings.normalize, "sample_rate": record.settings.sample_rate},
    }
    if record.is_classifier:
        meta["classifier"] = {"labels": record.labels, "pooling": "mean"}
    else:
        meta["training"] = dict(record.training)
    meta.update(record.meta)
    return meta


def write(record: ModelRecord, out: str) -> str:
    """Write ``record`` (encoder or classifier) to the folder ``out``; returns ``out``."""
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in record.state.items() if ".decoder." not in k}, os.path.join(out, WEIGHTS))
    with open(os.path.join(out, CONFIG), "w", encoding="utf-8") as f:
        json.dump(plugin_config(record), f, indent=2)
    return out


def read(path: str, trust: bool = False) -> ModelRecord:
    """A plugin folder (safetensors: nothing to unpickle, so ``trust`` does not apply)."""
    from safetensors.torch import load_file

    cfg_path = os.path.join(path, CONFIG)
    meta = MARKER.read(path)
    for key in ("encoder", "inference"):
        if key not in meta:
            raise ExportFormatError(f"{cfg_path}: required key {key!r} missing")
    unknown = set(meta["encoder"]) - {f.name for f in fields(StudentConfig)}
    if unknown:
        raise ExportFormatError(f"{cfg_path}: unknown encoder setting(s) {sorted(unknown)}")
    weights = os.path.join(path, WEIGHTS)
    if not os.path.isfile(weights):
        raise ExportFormatError(f"{path}: {WEIGHTS} missing")
    try:
        state = load_file(weights)
    except Exception as e:  # noqa: BLE001  safetensors raises its own SafetensorError (not an OSError/ValueError)
        raise ExportFormatError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e}); re-run "
                                f"e2v-export") from None
    labels = list(meta["classifier"].get("labels") or []) if "classifier" in meta else None
    return ModelRecord(state, StudentConfig(**meta["encoder"]), InferenceSettings(**meta["inference"]), weights,
                       labels, training=dict(meta.get("training") or {}))
