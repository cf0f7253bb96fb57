"""Export formats: one module per format, each with one writer (encoders and classifiers) and one reader.

Every format module has ``NAME``, ``HELP`` (for ``e2v-export --format``), ``MARKER`` (the
:class:`~.marker.FolderMarker` its folders declare themselves with, or None for a checkpoint
file), ``write(record, out) -> path`` and ``read(path, trust) -> ModelRecord``
(:class:`~emotion2vec_plugin.checkpoint.model_record.ModelRecord`). :data:`FORMATS` lists them;
``e2v-export``, the loaders (``formats/load.py``) and the classifier's ``model.init_from`` find
formats here only. A new format is one new module plus one entry in :data:`FORMATS`. ``onnx`` writes
only (``write`` takes its own keywords ``layers``, ``quantize``, ``opset``); its folders are run
by ``inference/onnx_runtime.py``, and its ``read`` says so.
"""

import os
from types import ModuleType

from ..checkpoint.model_record import ExportFormatError
from . import emotion2vec, funasr, onnx, plugin

FORMATS = {m.NAME: m for m in (plugin, emotion2vec, funasr, onnx)}


def detect_folder(path: str) -> ModuleType:
    """The format module whose marker the folder ``path`` carries (ExportFormatError otherwise)."""
    markers = [fmt.MARKER for fmt in FORMATS.values() if fmt.MARKER is not None]
    for fmt in FORMATS.values():
        if fmt.MARKER is not None and fmt.MARKER.matches(path):
            return fmt
    wanted = " or ".join(f"{m.file} ({m.label})" for m in markers)
    present = [m for m in markers if m.present(path)]
    if not present:
        raise ExportFormatError(f"{path}: a folder without {wanted}; expected an e2v-export folder or a checkpoint file")
    found = "; ".join(f"{os.path.join(path, m.file)} has {m.key}: {m.read(path).get(m.key)!r}, not {m.value!r}"
                      for m in present)
    raise ExportFormatError(f"{path}: not an export folder of a known format ({found}); expected an e2v-export folder "
                            f"or a checkpoint file")
