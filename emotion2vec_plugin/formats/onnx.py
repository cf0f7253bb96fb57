"""The ``onnx`` format: ``OUT/model.onnx`` + ``OUT/config.json``, run by onnxruntime without torch.

The graph is :class:`~emotion2vec_plugin.modules.export_graph.ExportGraph` traced by torch's
TorchScript exporter (``dynamo=False``) with batch and time as dynamic axes; its interface,
folder layout and ``config.json`` keys are in ``onnx_interface.py`` (torch-free, shared with the
runner ``inference/onnx_runtime.py``). ``config.json`` is the ``plugin`` format's (encoder
record, inference settings, class names for a classifier, provenance) with ``format:
emotion2vec_onnx`` and the export's own settings (``layers``, ``opset``, ``quantize``).

``quantize="int8"``: onnxruntime's dynamic quantization of the MatMul/Gemm weights (int8 weights,
activations quantized per call), 3.2x smaller for the base model (355.5 -> 111.5 MiB; the convs stay fp32).

An ONNX folder cannot be read back into torch weights: :func:`read` says so (e2v-extract and
e2v-predict run it through onnxruntime instead).
"""

import json
import logging
import os
import tempfile
import warnings
from typing import Optional, Sequence

from .. import onnx_interface as spec
from ..checkpoint.model_record import ExportFormatError, ModelRecord
from .marker import FolderMarker
from .plugin import plugin_config

logger = logging.getLogger(__name__)

NAME = spec.FORMAT_NAME
HELP = "model.onnx + config.json for onnxruntime (no torch needed to run it)"
MARKER = FolderMarker(spec.CONFIG, "JSON", spec.MARKER_KEY, spec.MARKER_VALUE, "ONNX export")
QUANTIZE = ("int8",)


def export_graph(record: ModelRecord, path: str, layers: Optional[Sequence[int]], opset: int) -> None:
    """Trace ``record`` into the ONNX file ``path``; ``layers``: 0-based blocks averaged into ``frames``
    (default: the last)."""
    import torch

    from .load import build_classifier, build_encoder
    from ..modules.export_graph import ExportGraph

    if record.is_classifier:
        model = build_classifier(record.encoder, record.state, record.labels, record.origin)
        head = model.proj
    else:
        model, head = build_encoder(record.encoder, record.state, record.origin), None
    layers = list(layers) if layers else [model.num_layers - 1]
    graph = ExportGraph(model, layers, record.settings.normalize, head).eval()
    # two items of different lengths, so that the traced graph holds padding for real
    source = torch.randn(2, 16000)
    padding_mask = torch.zeros(2, 16000, dtype=torch.bool)
    padding_mask[1, 11000:] = True
    names = spec.output_names(record.is_classifier)
    dynamic = {"source": {0: "batch", 1: "samples"}, "padding_mask": {0: "batch", 1: "samples"},
               "frames": {0: "batch", 1: "frames"}, "frame_padding_mask": {0: "batch", 1: "frames"},
               "embedding": {0: "batch"}, "logits": {0: "batch"}, "scores": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # the exporter's note that it leaves a strided Slice of constants unfolded: harmless, and it
        # is printed three times per export
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(graph, (source, padding_mask), path, input_names=list(spec.INPUTS), output_names=names,
                          dynamic_axes={k: v for k, v in dynamic.items() if k in names or k in spec.INPUTS},
                          opset_version=opset, do_constant_folding=True, dynamo=False)


def quantize_int8(src: str, dst: str) -> None:
    """Dynamic int8 quantization of the MatMul/Gemm weights of ``src`` into ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)


def write(record: ModelRecord, out: str, layers: Optional[Sequence[int]] = None, quantize: Optional[str] = None,
          opset: int = spec.DEFAULT_OPSET) -> str:
    """Write ``record`` (encoder or classifier) to the folder ``out``; returns ``out``.

    Args:
        layers: 0-based blocks averaged into the ``frames`` output (default: the last block).
        quantize: None (fp32) or ``"int8"``.
        opset: ONNX opset, at least ``onnx_interface.MIN_OPSET``.
    """
    if opset < spec.MIN_OPSET:
        raise ExportFormatError(f"--opset {opset}: the graph needs opset {spec.MIN_OPSET} or later "
                                f"(LayerNormalization); use --opset {spec.DEFAULT_OPSET}")
    if quantize not in (None, *QUANTIZE):
        raise ExportFormatError(f"--quantize {quantize}: expected one of {list(QUANTIZE)}")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, spec.MODEL)
    if quantize is None:
        export_graph(record, path, layers, opset)
    else:
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            fp32 = os.path.join(tmp, "fp32.onnx")
            export_graph(record, fp32, layers, opset)
            quantize_int8(fp32, path)
    num_layers = record.encoder.prenet_depth + record.encoder.depth
    conf = plugin_config(record)
    conf.update({MARKER.key: MARKER.value, "interface": spec.describe_interface(record.is_classifier),
                 "layers": [i + 1 for i in (sorted(set(layers)) if layers else [num_layers - 1])],
                 "opset": opset, "quantize": quantize})
    with open(os.path.join(out, spec.CONFIG), "w", encoding="utf-8") as f:
        json.dump(conf, f, indent=2)
    logger.info("wrote %s (%.1f MiB)", path, os.path.getsize(path) / 2**20)
    return out


def read(path: str, trust: bool = False) -> ModelRecord:
    """An ONNX folder holds a graph, not torch weights: an error that says what to do instead."""
    raise ExportFormatError(f"{path} is an ONNX export ({spec.MODEL}): its graph cannot be read back into torch "
                            f"weights; run it with e2v-extract / e2v-predict (onnxruntime), or export from the "
                            f"checkpoint or plugin folder it was made from")
