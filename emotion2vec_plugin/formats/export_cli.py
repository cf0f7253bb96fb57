"""``e2v-export``: turn a training checkpoint into something downstream work can load.

The formats are the modules of ``formats/`` (:data:`~emotion2vec_plugin.formats.FORMATS`):
``plugin`` (safetensors + json, no fairseq needed), ``emotion2vec`` (the released fairseq
layout, for the official emotion2vec scripts) and ``funasr`` (the folder FunASR's
``AutoModel(model=OUT)`` reads) and ``onnx`` (``model.onnx`` + ``config.json`` for onnxruntime,
with ``--layers``, ``--quantize int8`` and ``--opset``). A pretraining checkpoint exports its
student (no teacher, no optimizer state); a fine-tuned classifier (``emotion2vec_classifier``
checkpoint) keeps its head and class names (``plugin``, ``funasr`` and ``onnx``). The source may
also be an export folder (``plugin`` or ``funasr``), e.g. to make an ONNX graph of it.
"""

import argparse
import logging
import os
from typing import List, Optional

from ..checkpoint.fairseq_checkpoint import (is_classifier_checkpoint, read_classifier_checkpoint,
                                             read_encoder_checkpoint)
from ..checkpoint.model_record import ExportFormatError, ModelRecord, with_random_weights
from ..checkpoint.safe_load import load_checkpoint
from ..cli import run_main
from ..modules.layer_spec import select_layers
from ..onnx_interface import DEFAULT_OPSET
from . import FORMATS
from . import onnx as onnx_format
from .load import read_model

logger = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export an emotion2vec training checkpoint for downstream use.")
    p.add_argument("checkpoint", help="fairseq checkpoint written by fairseq-hydra-train (e.g. "
                                      "checkpoints/checkpoint_last.pt), or an export folder (plugin or funasr)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--random-init", type=int, default=None, metavar="SEED",
                   help="export the checkpoint's architecture with fresh random weights (seeded) instead of its "
                        "trained weights: the 'random weights' control of a probe comparison")
    p.add_argument("--format", choices=list(FORMATS), default="plugin",
                   help="; ".join(f"{name}: {fmt.HELP}" for name, fmt in FORMATS.items()))
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle the checkpoint without restriction (runs any code it holds); by default only "
                        "tensors, containers and fairseq's omegaconf configs are loaded")
    onnx = p.add_argument_group("--format onnx")
    onnx.add_argument("--layers", type=int, nargs="+", default=None,
                      help="blocks averaged into the graph's 'frames' output, 1-based or negative, as e2v-extract "
                           "(default: -1, the last)")
    onnx.add_argument("--quantize", choices=list(onnx_format.QUANTIZE), default=None,
                      help="int8: dynamic int8 quantization of the MatMul/Gemm weights (base model 3.2x smaller)")
    onnx.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {DEFAULT_OPSET})")
    return p


def read_checkpoint(path: str, trust: bool = False, random_init: Optional[int] = None) -> ModelRecord:
    """The record to export: a classifier checkpoint with its head and labels, else the student of
    a pretraining (or released) checkpoint; ``random_init``: that student's architecture with
    fresh weights drawn with this seed."""
    if os.path.isdir(path):
        if random_init is not None:
            raise ExportFormatError("--random-init takes a training checkpoint file, not an export folder")
        return read_model(path, trust)
    ckpt = load_checkpoint(path, trust)
    if is_classifier_checkpoint(ckpt):
        if random_init is not None:
            raise ExportFormatError("--random-init exports an encoder architecture; it does not apply to a classifier")
        return read_classifier_checkpoint(path, trust, ckpt)
    record = read_encoder_checkpoint(path, trust, ckpt)
    if random_init is not None:
        with_random_weights(record, random_init)
    return record


def main(args) -> str:
    record = read_checkpoint(args.checkpoint, getattr(args, "trust_checkpoint", False),
                             getattr(args, "random_init", None))
    onnx_args = {k: getattr(args, k, None) for k in ("layers", "quantize")}
    if args.format != onnx_format.NAME:
        given = [f"--{k}" for k, v in onnx_args.items() if v is not None]
        if given:
            raise ExportFormatError(f"{' and '.join(given)} apply to --format onnx only")
        return FORMATS[args.format].write(record, args.out)
    num_layers = record.encoder.prenet_depth + record.encoder.depth
    layers = select_layers(num_layers, onnx_args["layers"]) if onnx_args["layers"] else None
    return onnx_format.write(record, args.out, layers, onnx_args["quantize"],
                             getattr(args, "opset", None) or DEFAULT_OPSET)


def cli_main(argv: Optional[List[str]] = None) -> None:
    # force: importing fairseq already configured the root logger at DEBUG
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args(argv)
    where = run_main("e2v-export", main, args)
    print(f"exported {args.checkpoint} as {args.format} to {where}")


if __name__ == "__main__":
    cli_main()
