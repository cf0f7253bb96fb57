"""The ONNX export's contract, without torch or onnx: folder layout, marker and graph interface.

Shared by the writer (``formats/onnx.py``, which needs torch to trace the graph), the graph
module (``modules/export_graph.py``) and the runner (``inference/onnx_runtime.py``, which must
import neither torch nor onnx, so that a service needs only numpy and onnxruntime).

Folder ``DIR`` written by ``e2v-export --format onnx``:

* ``model.onnx``: the graph (weights inside, or beside it as external data for > 2 GB models);
* ``config.json``: ``{"format": "emotion2vec_onnx", "interface": ..., "inference": {"normalize",
  "sample_rate"}, "encoder": <StudentConfig fields>, "layers": [1-based blocks averaged into
  frames], "opset": N, "quantize": null | "int8"}`` and, for a classifier,
  ``"classifier": {"labels": [...], "pooling": "mean"}`` (the ``plugin`` format's form).

Graph interface (B = batch, T = samples at 16 kHz, T' = frames, D = width, C = classes)::

    inputs   source             float32 [B, T]   raw waveform, zero or anything in padding
             padding_mask       bool    [B, T]   True = padded sample
    outputs  frames             float32 [B, T', D]  chosen block(s), utterance tokens removed
             frame_padding_mask bool    [B, T']     True = padded frame
             embedding          float32 [B, D]      mean of ``frames`` over the valid frames
             logits             float32 [B, C]      classifier only (head on the last block's mean)
             scores             float32 [B, C]      classifier only, softmax of ``logits``
"""

from typing import Dict, List, Tuple

FORMAT_NAME = "onnx"
CONFIG = "config.json"
MODEL = "model.onnx"
MARKER_KEY = "format"
MARKER_VALUE = "emotion2vec_onnx"
DEFAULT_OPSET = 17
MIN_OPSET = 17

# name -> (ONNX element type name as onnxruntime reports it, rank)
INPUTS: Dict[str, Tuple[str, int]] = {
    "source": ("tensor(float)", 2),
    "padding_mask": ("tensor(bool)", 2),
}
ENCODER_OUTPUTS: Dict[str, Tuple[str, int]] = {
    "frames": ("tensor(float)", 3),
    "frame_padding_mask": ("tensor(bool)", 2),
    "embedding": ("tensor(float)", 2),
}
CLASSIFIER_OUTPUTS: Dict[str, Tuple[str, int]] = {
    "logits": ("tensor(float)", 2),
    "scores": ("tensor(float)", 2),
}


def output_names(classifier: bool) -> List[str]:
    """Output names in graph order."""
    return list(ENCODER_OUTPUTS) + (list(CLASSIFIER_OUTPUTS) if classifier else [])


def describe_interface(classifier: bool) -> str:
    """``source float32[B,T], padding_mask bool[B,T] -> frames ..., ...`` for messages."""
    def fmt(spec: Dict[str, Tuple[str, int]]) -> str:
        return ", ".join(f"{n} {t[7:-1].replace('float', 'float32')} rank {r}" for n, (t, r) in spec.items())

    outs = {**ENCODER_OUTPUTS, **(CLASSIFIER_OUTPUTS if classifier else {})}
    return f"inputs {fmt(INPUTS)}; outputs {fmt(outs)}"
