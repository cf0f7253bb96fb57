"""The ``funasr`` format: the folder layout FunASR's ``AutoModel(model=OUT)`` reads (also FunASR's own folders).

* ``config.yaml``: ``model: Emotion2vec`` (the marker this format is detected by) and
  ``model_conf``, the released architecture record (``checkpoint/released_config.py``);
* ``model.pt``: ``{"model": state_dict}`` (the student with decoder, no teacher);
* a classifier (the emotion2vec+ layout): ``model_conf.vocab_size`` = C, no decoder, a
  ``CharTokenizer`` and ``tokens.txt`` (class names, class 0 first; FunASR names the scores with it),
  the head in ``model.pt``.
"""

import os

import torch

from ..checkpoint.model_record import ExportFormatError, InferenceSettings, ModelRecord
from ..checkpoint.released_config import encoder_to_released_config, released_to_encoder_fields
from ..checkpoint.safe_load import load_checkpoint
from ..data.label_files import read_label_file, write_label_file
from ..modules.config import StudentConfig
from .marker import FolderMarker

NAME = "funasr"
HELP = "config.yaml + model.pt for FunASR"
CONFIG = "config.yaml"
WEIGHTS = "model.pt"
TOKENS = "tokens.txt"
MARKER = FolderMarker(CONFIG, "YAML", "model", "Emotion2vec", "FunASR")


def write(record: ModelRecord, out: str) -> str:
    """Write ``record`` (encoder or classifier) to the folder ``out``; returns ``out``."""
    import yaml

    labels = record.labels
    if labels is not None:
        bad = [n for n in labels if n.startswith("unuse") or not n.strip() or n != n.rstrip() or "\n" in n]
        if bad:
            raise ExportFormatError(f"{record.origin}: class names {bad} cannot go to FunASR's tokens.txt (FunASR hides "
                                    f"classes whose name starts with 'unuse' and strips trailing blanks; names must be "
                                    f"non-empty single lines)")
    os.makedirs(out, exist_ok=True)
    model_conf = encoder_to_released_config(record.encoder, {**record.training, "normalize": record.settings.normalize})
    conf = {MARKER.key: MARKER.value, "model_conf": model_conf}
    if labels is not None:
        model_conf["vocab_size"] = len(labels)
        model_conf["modalities"]["audio"]["decoder"] = None  # fine-tuned without decoder: FunASR then builds none
        # FunASR's tokenizer only names the classes here, but insists that its unk_symbol is one of
        # them: the last class, as in emotion2vec+ (whose last class is "<unk>")
        conf.update(tokenizer="CharTokenizer", tokenizer_conf={"unk_symbol": labels[-1], "split_with_space": True})
    with open(os.path.join(out, CONFIG), "w", encoding="utf-8") as f:
        yaml.safe_dump(conf, f, sort_keys=False)
    torch.save({"model": record.state}, os.path.join(out, WEIGHTS))
    if labels is not None:
        write_label_file(labels, os.path.join(out, TOKENS))
    return out


def read(path: str, trust: bool = False) -> ModelRecord:
    """A FunASR folder; a classifier when it has ``tokens.txt`` and a head. ``trust``: unpickle
    ``model.pt`` without the weights-only restriction (checkpoint/safe_load.py)."""
    conf = MARKER.read(path)
    if "model_conf" not in conf:
        raise ExportFormatError(f"{os.path.join(path, CONFIG)}: required key 'model_conf' missing")
    weights = os.path.join(path, WEIGHTS)
    state = load_checkpoint(weights, trust)
    if not isinstance(state, dict):
        raise ExportFormatError(f"{weights}: expected a dict of weights, got {type(state).__name__}")
    state = state.get("model", state)
    encoder = StudentConfig(**released_to_encoder_fields(conf["model_conf"]))
    settings = InferenceSettings(normalize=bool(conf["model_conf"].get("normalize", True)))
    tokens = os.path.join(path, TOKENS)
    if os.path.isfile(tokens) and "proj.weight" in state:
        return ModelRecord(state, encoder, settings, f"{weights} + {tokens}", read_label_file(tokens))
    return ModelRecord(state, encoder, settings, weights)
