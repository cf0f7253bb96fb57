"""``e2v-predict MODEL INPUT...``: emotion labels and class scores for audio files with a fine-tuned classifier.

MODEL is an ``e2v-export`` folder of a fine-tuned classifier (``plugin``, ``funasr`` or ``onnx``
format, also FunASR's emotion2vec+ folders) or a fine-tuning checkpoint. INPUT is any mix of audio files,
folders (searched recursively for .wav/.flac/.ogg) and fairseq manifests (``.tsv``, e.g. from
``e2v-labels``). For every file: the top label and the softmax score of every class, computed
like FunASR's ``generate(..., granularity="utterance")`` (per-utterance normalisation, mean of
the last block over the valid frames, linear head, softmax; tested equal).

Utterances are sorted by length and batched with exact padding masks (batched scores equal
one-by-one scores). A file that cannot be used (unreadable, wrong rate or channels, NaN
samples, too short for the CNN) is named with the reason and skipped; it never stops the run.

``--labels FILE`` (one label per input file, in input order, e.g. the ``.emo`` next to a
manifest) adds WA, UA, macro-F1, weighted-F1 and a confusion-matrix plot. A plain encoder
export (no head) gives mean-pooled utterance embeddings instead of labels (``--out FILE.json``);
``--labels`` then asks for a classifier.

An ``onnx`` folder runs on onnxruntime's CPU provider (``inference/onnx_runtime.py``) with the same
batching, outputs and files, and this process then never imports torch (its import alone takes
about 1.5 s); ``--threads`` sets onnxruntime's (or torch's) intra-op threads.
"""

import argparse
import json
import logging
import os
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..cli import run_main
from ..data.manifest import AudioReadError, read_manifest, read_mono
from ..errors import Emotion2vecError
from ..modules.clip_rules import clip_problem
from ..modules.config import parse_conv_layers
from .batching import plan_batches
from .onnx_runtime import OnnxRunner, is_onnx_folder, refuse_torch_settings

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


class PredictInputError(Emotion2vecError, ValueError):
    """Unusable arguments or label file; the message names the file (and line) and the fix."""


class AudioItem(NamedTuple):
    """One input file: its key in the output, its path and where it was listed (for messages)."""

    key: str
    path: str
    where: str


def collect_inputs(inputs: Sequence[str]) -> List[AudioItem]:
    """Audio files, folders (recursive, sorted) and manifests -> items in input order."""
    items: List[AudioItem] = []
    for inp in inputs:
        if os.path.isdir(inp):
            found = sorted(os.path.join(d, f) for d, _, files in os.walk(inp, followlinks=True)
                           for f in files if f.lower().endswith(AUDIO_EXTENSIONS))
            if not found:
                logger.warning("%s: no %s files in this folder", inp, "/".join(AUDIO_EXTENSIONS))
            items += [AudioItem(os.path.relpath(p, inp), p, p) for p in found]
        elif inp.endswith(".tsv"):
            manifest = read_manifest(inp)
            items += [AudioItem(manifest.names[i], manifest.full_path(i), manifest.where(i)) for i in range(len(manifest))]
        else:
            items.append(AudioItem(inp, inp, inp))
    return items


def audio_length(item: AudioItem) -> Optional[int]:
    """Samples in the file from its header (for batching), None if the header cannot be read."""
    import soundfile as sf

    try:
        return int(sf.info(item.path).frames)
    except Exception:  # noqa: BLE001  any unreadable header: read_mono names the reason later
        return None


def predict_items(model, settings, items: Sequence[AudioItem], batch_size: int,
                  max_batch_seconds: float = 160.0, dtype=None, quiet: bool = True
                  ) -> Tuple[Dict[int, np.ndarray], Dict[int, str], float, float]:
    """Run ``model`` (a torch module, or an :class:`OnnxRunner` whose ``settings`` are passed) over
    ``items`` in length-sorted batches: (outputs by item index, skip reasons by item index, audio
    seconds predicted, wall seconds). ``dtype``: torch autocast dtype (None: fp32; torch only)."""
    start = time.perf_counter()  # header reads count too
    if isinstance(model, OnnxRunner):
        conv_layers, predict = model.conv_layers, model.predict
    else:
        from .featurizer import predict_batch

        conv_layers = parse_conv_layers(model.encoder_cfg.conv_feature_layers)

        def predict(wavs):
            return predict_batch(model, wavs, settings.normalize, *([dtype] if dtype is not None else []))
    skipped: Dict[int, str] = {}
    sizes = []
    for i, item in enumerate(items):
        n = audio_length(item)
        sizes.append(n or 0)
        if n is None:  # read it anyway: read_mono gives the precise reason
            try:
                read_mono(item.path, item.where, settings.sample_rate)
            except AudioReadError as e:
                skipped[i] = str(e)
    todo = [i for i in range(len(items)) if i not in skipped]
    batches = plan_batches(sizes, todo, batch_size, int(max_batch_seconds * settings.sample_rate))
    outputs: Dict[int, np.ndarray] = {}
    seconds = 0.0
    with tqdm(total=len(todo), unit="file", disable=quiet, desc="predict") as bar:
        for batch in batches:
            good, wavs = [], []
            for i in batch:
                try:
                    wav = read_mono(items[i].path, items[i].where, settings.sample_rate)
                    reason = clip_problem(wav, conv_layers)
                except AudioReadError as e:
                    reason = str(e)
                if reason is not None:
                    skipped[i] = reason if reason.startswith(items[i].where) else f"{items[i].where}: {reason}"
                    continue
                good.append(i)
                wavs.append(wav)
                seconds += len(wav) / settings.sample_rate
            if good:
                for i, row in zip(good, predict(wavs)):
                    outputs[i] = row
            bar.update(len(batch))
    return outputs, skipped, seconds, time.perf_counter() - start


def read_expected_labels(path: str, count: int, classes: Sequence[str]) -> List[str]:
    from ..data.label_files import read_column_file

    labels = read_column_file(path, "labels")
    if len(labels) != count:
        raise PredictInputError(f"{path} has {len(labels)} labels for {count} input files; give one label per file, "
                                f"in input order (the .emo written next to the manifest)")
    for i, lab in enumerate(labels):
        if lab not in classes:
            raise PredictInputError(f"{path}:{i + 1}: label {lab!r} is not a class of the model {list(classes)}")
    return labels


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict speech emotion labels with a fine-tuned emotion2vec classifier.")
    p.add_argument("model", help="e2v-export folder of a classifier (plugin, funasr or onnx), a FunASR emotion2vec+ "
                                 "folder, or a fine-tuning checkpoint (checkpoints/checkpoint_best.pt)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders and/or manifests (.tsv)")
    p.add_argument("--out", default=None, help="FILE.tsv (key, label, one score column per class) or FILE.json; "
                                               "default: TSV on stdout")
    p.add_argument("--labels", default=None, help="true labels, one per input file in input order (e.g. SPLIT.emo): "
                                                  "adds WA / UA / macro-F1 / weighted-F1 and a confusion plot")
    p.add_argument("--plot", default=None, help="confusion-matrix PNG with --labels (default: OUT stem + "
                                                ".confusion.png, or confusion.png)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="max files per batch (default: 1 on CPU, where batching is memory-bound, 16 on GPU)")
    p.add_argument("--max-batch-seconds", type=float, default=160.0, help="max padded audio per batch")
    p.add_argument("--device", default="cpu", help="torch device (an onnx MODEL runs on the CPU)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="torch autocast dtype (an onnx MODEL runs in the dtypes of its graph)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of onnxruntime (onnx MODEL) or torch (default: the library's own)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle a checkpoint MODEL without restriction (runs any code it holds)")
    return p


def load_model(args):
    """(model, class names, settings, dtype or None): an :class:`OnnxRunner` for an onnx folder (torch
    never imported), else the torch model of ``formats/load.py`` on ``--device``."""
    threads = getattr(args, "threads", None)
    if is_onnx_folder(args.model):
        refuse_torch_settings(args.model, getattr(args, "device", "cpu"), getattr(args, "dtype", "fp32"))
        runner = OnnxRunner(args.model, threads)
        return runner, runner.labels, runner.settings, None
    import torch

    from ..formats.load import load_classifier

    if threads:
        torch.set_num_threads(threads)
    model, classes, settings = load_classifier(args.model, args.device, getattr(args, "trust_checkpoint", False))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    return model, classes, settings, dtype


def main(args) -> Dict[str, object]:
    model, classes, settings, dtype = load_model(args)
    if classes is None and args.labels:
        raise PredictInputError(f"{args.model} is an encoder export without a classifier head, so it has no labels to "
                                f"score against {args.labels}: fine-tune one (recipes/finetune) and export it, or use "
                                f"e2v-extract + e2v-probe for features")
    if classes is None and args.out and not args.out.endswith(".json"):
        raise PredictInputError(f"{args.model} has no classifier head: it gives utterance embeddings, which need "
                                f"--out FILE.json (or use e2v-extract)")
    items = collect_inputs(args.inputs)
    if not items:
        raise PredictInputError(f"no audio files in {args.inputs}")
    expected = read_expected_labels(args.labels, len(items), classes) if args.labels else None
    batch_size = args.batch_size or (1 if args.device.split(":")[0] == "cpu" else 16)
    outputs, skipped, seconds, elapsed = predict_items(model, settings, items, batch_size, args.max_batch_seconds,
                                                       dtype, args.quiet)
    for i in sorted(skipped):
        logger.warning("skipped %s", skipped[i])
    result: Dict[str, object] = {
        "files": len(items), "predicted": len(outputs), "skipped": [skipped[i] for i in sorted(skipped)],
        "audio_seconds": round(seconds, 3), "seconds": round(elapsed, 3),
        "audio_seconds_per_second": round(seconds / elapsed, 2) if elapsed > 0 else None,
        "classes": classes,
    }
    order = sorted(outputs)
    if classes is not None:
        result["predictions"] = [{"key": items[i].key, "label": classes[int(np.argmax(outputs[i]))],
                                  "scores": {c: float(s) for c, s in zip(classes, outputs[i])}} for i in order]
    else:
        result["embeddings"] = [{"key": items[i].key, "embedding": outputs[i].tolist()} for i in order]
    if expected is not None and order:
        result["metrics"] = score(expected, result["predictions"], order, classes, args)
    write_output(result, args.out)
    return result


def score(expected: List[str], predictions: List[dict], order: List[int], classes: List[str], args) -> Dict[str, object]:
    """WA / UA / macro-F1 / weighted-F1 (in [0, 1]) and the confusion matrix on the predicted files; plot it."""
    from ..evaluation.metrics import compute_metrics
    from ..evaluation.plots import plot_confusion

    index = {c: k for k, c in enumerate(classes)}
    y_true = [index[expected[i]] for i in order]
    y_pred = [index[p["label"]] for p in predictions]
    metrics = compute_metrics(y_true, y_pred, classes)
    plot = args.plot or (os.path.splitext(args.out)[0] + ".confusion.png" if args.out else "confusion.png")
    plot_confusion(metrics["confusion"], plot, title=f"e2v-predict, {len(order)} files")
    metrics["plot"] = plot
    return metrics


def write_output(result: Dict[str, object], out: Optional[str]) -> None:
    if out is not None and out.endswith(".json"):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        return
    classes = result["classes"]
    lines = ["key\tlabel\t" + "\t".join(f"score_{c}" for c in classes)]
    for p in result["predictions"]:
        lines.append(f"{p['key']}\t{p['label']}\t" + "\t".join(f"{p['scores'][c]:.6g}" for c in classes))
    text = "\n".join(lines) + "\n"
    if out is None:
        print(text, end="")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)


def cli_main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args(argv)
    result = run_main("e2v-predict", main, args)
    summary = {k: result[k] for k in ("files", "predicted", "audio_seconds_per_second")}
    summary["skipped"] = len(result["skipped"])
    if "metrics" in result:
        from ..evaluation.metrics import METRICS

        summary.update({k: round(100 * result["metrics"][k], 2) for k in METRICS})
        summary["plot"] = result["metrics"]["plot"]
    logger.info("e2v-predict: %s", summary)


if __name__ == "__main__":
    cli_main()
