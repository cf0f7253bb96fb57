"""Run an ONNX export (``e2v-export --format onnx``) with onnxruntime's CPU provider, without torch.

:class:`OnnxRunner` loads ``DIR/model.onnx`` and ``DIR/config.json``, checks the graph's inputs
and outputs against the interface of ``onnx_interface.py`` and pads batches of 1-D waveforms
exactly as the torch path does (``inference/featurizer.py``): a padded item gets its one-by-one
outputs. It imports numpy and onnxruntime only, never torch (so a service needs neither torch nor
this package's training code), and the ``onnx`` package only to explain a file onnxruntime
refused: a truncated file, missing external data, an opset onnxruntime cannot run. Every such
failure is an :class:`OnnxExportError` naming the file and what to do.

Loading an ONNX file runs no code: it is a protobuf message of operators and tensors.
"""

import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import onnx_interface as spec
from ..errors import Emotion2vecError
from ..modules.config import parse_conv_layers

logger = logging.getLogger(__name__)

REEXPORT = "re-export it with e2v-export CHECKPOINT --format onnx --out DIR"


class OnnxExportError(Emotion2vecError, ValueError):
    """An ONNX folder or graph that cannot be run; the message names the file and the fix."""


@dataclass(frozen=True)
class OnnxSettings:
    """What the caller needs besides the graph (the torch path's ``InferenceSettings``)."""

    normalize: bool = True
    sample_rate: int = 16000


def is_onnx_folder(path: str) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` declares the ONNX export format."""
    cfg = os.path.join(path, spec.CONFIG)
    if not (os.path.isdir(path) and os.path.isfile(cfg)):
        return False
    try:
        with open(cfg, encoding="utf-8") as f:
            conf = json.load(f)
    except (ValueError, UnicodeDecodeError):
        return False  # the format registry's reader names the syntax error
    return isinstance(conf, dict) and conf.get(spec.MARKER_KEY) == spec.MARKER_VALUE


def refuse_torch_settings(model: str, device: str, dtype: str) -> None:
    """An ONNX export runs on onnxruntime's CPU provider in its graph's dtypes: refuse the torch-only
    ``--device`` / ``--dtype`` of ``e2v-extract`` and ``e2v-predict``."""
    if device != "cpu" or dtype != "fp32":
        raise OnnxExportError(f"{model} is an ONNX export, run by onnxruntime on the CPU in its graph's dtypes: "
                              f"drop --device {device} / --dtype {dtype} (or use the plugin export for torch on a GPU)")


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def diagnose_load_failure(path: str, error: BaseException) -> str:
    """Why onnxruntime could not load ``path``, as one line naming the file and the fix."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as e:  # protobuf's error, or onnx's own on bad bytes
        return (f"{path}: not a complete ONNX file ({os.path.getsize(path)} bytes; {_first_line(e)}): the file is "
                f"truncated or corrupt; copy it again or {REEXPORT}")
    folder = os.path.dirname(os.path.abspath(path))
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        where = os.path.join(folder, info.get("location", ""))
        need = int(info.get("offset", 0)) + int(info.get("length", 0))
        if not os.path.isfile(where):
            return (f"{path}: its weights are stored as external data in {where}, which is missing; copy "
                    f"{os.path.basename(where)} beside {os.path.basename(path)}, or {REEXPORT}")
        if os.path.getsize(where) < need:
            return (f"{path}: external data file {where} has {os.path.getsize(where)} bytes, tensor {tensor.name} "
                    f"needs {need}: it is truncated; copy it again or {REEXPORT}")
    import onnxruntime as ort

    opsets = {op.domain or "ai.onnx": op.version for op in model.opset_import}
    known = onnx.defs.onnx_opset_version()
    if opsets.get("ai.onnx", 0) > known or "opset" in str(error).lower():
        return (f"{path}: opset {opsets.get('ai.onnx')} ({opsets}) cannot be run by onnxruntime {ort.__version__} "
                f"({_first_line(error)}); re-export with e2v-export ... --format onnx --opset {spec.DEFAULT_OPSET}, "
                f"or install an onnxruntime that runs this opset")
    return f"{path}: onnxruntime {ort.__version__} cannot load it ({_first_line(error)}); {REEXPORT}"


def check_interface(path: str, session, classifier: bool) -> None:
    """The graph's inputs and outputs must be the interface's names, element types and ranks."""
    want_in = spec.INPUTS
    want_out = {**spec.ENCODER_OUTPUTS, **(spec.CLASSIFIER_OUTPUTS if classifier else {})}
    got_in = {a.name: (a.type, len(a.shape)) for a in session.get_inputs()}
    got_out = {a.name: (a.type, len(a.shape)) for a in session.get_outputs()}
    problems = []
    if got_in != want_in:
        problems.append(f"inputs {got_in}")
    if any(got_out.get(name) != t for name, t in want_out.items()):
        problems.append(f"outputs {got_out}")
    if problems:
        kind = "a classifier (config.json has class names)" if classifier else "an encoder"
        raise OnnxExportError(f"{path}: the graph's {' and '.join(problems)} do not match the emotion2vec ONNX "
                              f"interface of {kind} ({spec.describe_interface(classifier)}); {REEXPORT}")


class OnnxRunner:
    """An ONNX export folder on onnxruntime's CPU provider.

    Args:
        folder: the ``e2v-export --format onnx`` folder.
        threads: onnxruntime's intra-op threads (None: onnxruntime's default, one per core).

    Attributes:
        labels: class names (class i = score column i) or None for an encoder.
        settings: :class:`OnnxSettings`; ``conv_layers``: the CNN spec (which clips it accepts).
    """

    def __init__(self, folder: str, threads: Optional[int] = None):
        import onnxruntime as ort

        cfg_path = os.path.join(folder, spec.CONFIG)
        if not is_onnx_folder(folder):
            raise OnnxExportError(f"{folder}: not an ONNX export folder ({cfg_path} with \"format\": "
                                  f"\"{spec.MARKER_VALUE}\" expected); {REEXPORT}")
        with open(cfg_path, encoding="utf-8") as f:
            self.config = json.load(f)
        for key in ("encoder", "inference"):
            if key not in self.config:
                raise OnnxExportError(f"{cfg_path}: required key {key!r} missing; {REEXPORT}")
        self.path = os.path.join(folder, spec.MODEL)
        if not os.path.isfile(self.path):
            raise OnnxExportError(f"{folder}: {spec.MODEL} missing; {REEXPORT}")
        classifier = self.config.get("classifier")
        self.labels: Optional[List[str]] = list(classifier["labels"]) if classifier else None
        inference = self.config["inference"]
        self.settings = OnnxSettings(bool(inference.get("normalize", True)), int(inference.get("sample_rate", 16000)))
        self.conv_layers = parse_conv_layers(self.config["encoder"]["conv_feature_layers"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile classes
            raise OnnxExportError(diagnose_load_failure(self.path, e)) from None
        check_interface(self.path, self.session, self.labels is not None)
        if self.labels is not None:
            classes = self.session.get_outputs()[len(spec.ENCODER_OUTPUTS)].shape[1]
            if isinstance(classes, int) and classes != len(self.labels):
                raise OnnxExportError(f"{self.path}: the graph scores {classes} classes but {cfg_path} names "
                                      f"{len(self.labels)} ({self.labels[:10]}); the two files do not belong "
                                      f"together: {REEXPORT}")

    def run(self, wavs: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
        """1-D waveforms -> every graph output for the zero-padded batch (see ``onnx_interface.py``)."""
        lengths = [len(w) for w in wavs]
        source = np.zeros((len(wavs), max(lengths)), dtype=np.float32)  # [B, S]
        padding_mask = np.ones(source.shape, dtype=bool)  # [B, S] True = padded
        for i, w in enumerate(wavs):
            source[i, : len(w)] = w
            padding_mask[i, : len(w)] = False
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, {"source": source, "padding_mask": padding_mask})))

    def predict(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities [B, C] (classifier) or utterance embeddings [B, D] (encoder), as
        ``featurizer.predict_batch``."""
        out = self.run(wavs)
        return out["scores"] if self.labels is not None else out["embedding"]

    def extract(self, wavs: Sequence[np.ndarray], granularity: str = "frame") -> List[np.ndarray]:
        """Features [T_i, D] (frame) or [D] (utterance) per waveform, as ``featurizer.extract_batch``
        with the export's ``layers``."""
        out = self.run(wavs)
        if granularity == "utterance":
            return list(out["embedding"])
        counts = (~out["frame_padding_mask"]).sum(axis=1)
        return [out["frames"][i, :n] for i, n in enumerate(counts)]
