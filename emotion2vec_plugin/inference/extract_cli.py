"""``e2v-extract``: batched, padding-exact feature extraction from a manifest.

Utterances are sorted by length and batched (at most ``--batch-size`` utterances and
``--max-batch-seconds`` of padded audio per batch); padding masks make every utterance's
features equal its one-by-one features (tested). Output, in manifest order:

* ``--format npy``: ``OUT/npy/<relpath>.npy`` per utterance ([T, D] for frames, [D] for
  utterances) and ``OUT/index.tsv`` (``utt_id<TAB>npy path relative to OUT``);
* ``--format stacked``: additionally ``OUT/<prefix>.npy`` [sum T, D] and ``OUT/<prefix>.lengths``
  (frames per utterance; 1 per utterance for ``--granularity utterance``), the emotion2vec
  probe format.

Per-utterance files are written atomically and skipped when present, so an interrupted run
resumes where it stopped. ``MODEL = fbank`` writes 80-dim log-mel filterbanks (Kaldi-style,
25 ms windows every 10 ms, ``torchaudio.compliance.kaldi.fbank``) in the same layout: the
baseline the paper's tables compare against. An ``onnx`` export folder (``e2v-export --format
onnx``) runs on onnxruntime's CPU provider (``inference/onnx_runtime.py``) with the same batches
and files; its blocks were chosen at export (``e2v-export --layers``), so ``--layers`` may only
repeat them. ``--threads`` sets onnxruntime's (or torch's) intra-op threads.
"""

import argparse
import logging
import os
from typing import List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..cli import run_main
from ..data.feature_store import save_stacked
from ..data.manifest import ManifestError, first_missing_files, read_manifest, read_mono
from ..formats.load import load_pretrained
from ..modules.layer_spec import select_layers
from .batching import plan_batches
from .featurizer import extract_batch, fbank_features
from .onnx_runtime import OnnxExportError, OnnxRunner, is_onnx_folder, refuse_torch_settings

logger = logging.getLogger(__name__)


def npy_relpath(name: str) -> str:
    return os.path.join("npy", os.path.splitext(name)[0] + ".npy")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Extract emotion2vec features for every utterance of a manifest.")
    p.add_argument("model", help="e2v-export folder (plugin, funasr or onnx format), a checkpoint (ours or released), "
                                 "or 'fbank' for the log-mel filterbank baseline")
    p.add_argument("manifest", help="fairseq manifest (.tsv) listing 16 kHz mono audio")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--granularity", choices=["frame", "utterance"], default="frame")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="blocks to average, 1-based or negative (default: -1, the last; the paper averages "
                        "-4 -3 -2 -1 for sentiment)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="max utterances per batch (default: 1 on CPU, where batching made extraction memory-bound "
                        "and slower, see recipes/RESULTS.md; 16 on GPU)")
    p.add_argument("--max-batch-seconds", type=float, default=160.0, help="max padded audio per batch")
    p.add_argument("--format", choices=["npy", "stacked"], default="stacked")
    p.add_argument("--prefix", default=None, help="stacked file prefix (default: the manifest name, e.g. train)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of onnxruntime (onnx MODEL) or torch (default: the library's own)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle a checkpoint MODEL without restriction (runs any code it holds); by default only "
                        "tensors, containers and fairseq's omegaconf configs are loaded")
    return p


def main(args) -> dict:
    manifest = read_manifest(args.manifest)
    missing = first_missing_files(manifest)
    if missing:
        raise ManifestError(f"{args.manifest}: audio files are missing:\n  " + "\n  ".join(missing))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if args.model == "fbank":
        sample_rate, layers = 16000, []

        def featurize(wavs):
            return fbank_features(wavs, args.granularity)
    elif is_onnx_folder(args.model):
        refuse_torch_settings(args.model, args.device, args.dtype)
        runner = OnnxRunner(args.model, getattr(args, "threads", None))
        sample_rate, exported = runner.settings.sample_rate, runner.config["layers"]
        num_layers = runner.config["encoder"]["prenet_depth"] + runner.config["encoder"]["depth"]
        layers = [i - 1 for i in exported]
        if args.layers and sorted(set(select_layers(num_layers, args.layers))) != layers:
            wanted = " ".join(map(str, args.layers))
            raise OnnxExportError(f"{args.model}: its graph averages blocks {exported} (chosen at export); for "
                                  f"--layers {wanted} re-export with e2v-export ... --format onnx --layers {wanted}")

        def featurize(wavs):
            return runner.extract(wavs, args.granularity)
    else:
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        model, settings = load_pretrained(args.model, args.device, getattr(args, "trust_checkpoint", False))
        sample_rate, layers = settings.sample_rate, select_layers(model.num_layers, args.layers)

        def featurize(wavs):
            return extract_batch(model, wavs, layers, settings.normalize, args.granularity, dtype)
    os.makedirs(args.out, exist_ok=True)
    outputs = [os.path.join(args.out, npy_relpath(n)) for n in manifest.names]
    todo = [i for i, path in enumerate(outputs) if not os.path.isfile(path)]
    if len(todo) < len(manifest):
        logger.info("resuming: %d of %d utterances already extracted", len(manifest) - len(todo), len(manifest))
    batch_size = args.batch_size or (1 if torch.device(args.device).type == "cpu" else 16)
    batches = plan_batches(manifest.sizes, todo, batch_size, int(args.max_batch_seconds * sample_rate))
    with tqdm(total=len(todo), unit="utt", disable=args.quiet, desc="extract") as bar:
        for batch in batches:
            wavs = [read_mono(manifest.full_path(i), manifest.where(i), sample_rate) for i in batch]
            for i, wav in zip(batch, wavs):
                if len(wav) != manifest.sizes[i]:
                    raise ManifestError(f"{manifest.where(i)}: {manifest.full_path(i)} has {len(wav)} samples, "
                                        f"the manifest says {manifest.sizes[i]}; rebuild it with e2v-manifest")
            feats = featurize(wavs)
            for i, f in zip(batch, feats):
                os.makedirs(os.path.dirname(outputs[i]), exist_ok=True)
                tmp = outputs[i] + ".tmp.npy"
                np.save(tmp, f)
                os.replace(tmp, outputs[i])
            bar.update(len(batch))
    with open(os.path.join(args.out, "index.tsv"), "w", encoding="utf-8") as f:
        for name in manifest.names:
            f.write(f"{name}\t{npy_relpath(name)}\n")
    result = {"utterances": len(manifest), "extracted": len(todo), "layers": [i + 1 for i in layers]}
    if args.format == "stacked":
        prefix = args.prefix or os.path.splitext(os.path.basename(args.manifest))[0]
        result["stacked"] = write_stacked(outputs, os.path.join(args.out, prefix))
    return result


def write_stacked(paths: Sequence[str], prefix: str) -> str:
    """Concatenate per-utterance arrays into PREFIX.npy [sum T, D] and PREFIX.lengths."""
    save_stacked([np.load(p) for p in paths], prefix)
    return prefix


def cli_main(argv: Optional[List[str]] = None) -> None:
    # force: importing fairseq already configured the root logger at DEBUG
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args(argv)
    # ValueError: --layers out of range (select_layers)
    result = run_main("e2v-extract", main, args, (ValueError,))
    print(f"e2v-extract: {result}")


if __name__ == "__main__":
    cli_main()
