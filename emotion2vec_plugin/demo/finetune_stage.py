"""The demo's fine-tuning stage: the pretrained model fine-tuned on every speaker but one, against
the linear probe on the same held-out speaker.

    python -m emotion2vec_plugin.demo.finetune_stage WORK [--held-out SPK] [OVERRIDE ...]

Reads what stages 2-5 of ``recipes/demo.sh`` left in WORK and runs, in this process except the
training (each step is the named CLI's own ``main``; the commands are logged and saved):

1. the held-out speaker: ``--held-out``, else the last speaker of ``WORK/labels/demo.group`` in
   sorted order; ``e2v-split-labels WORK/labels/demo --dest WORK/finetune/labels --valid-groups SPK``
   (train = the other speakers, valid = the held-out one);
2. ``fairseq-hydra-train --config-dir recipes/finetune --config-name emotion2vec_finetune_demo
   task.data=WORK/finetune/labels model.init_from=WORK/pretrain/checkpoints/checkpoint_last.pt
   [OVERRIDE ...]`` in ``WORK/finetune/run`` (started afresh; no validation during training, so
   the held-out speaker never steers it: the model scored is ``checkpoint_last.pt``);
3. ``e2v-predict .../checkpoint_last.pt WORK/finetune/labels/valid.tsv --labels .../valid.emo
   --out WORK/finetune/heldout.json`` (WA / UA / macro-F1 / weighted-F1 and a confusion plot);
4. ``e2v-export .../checkpoint_last.pt --format onnx --out WORK/finetune/onnx`` (and ``--quantize int8``
   to ``WORK/finetune/onnx_int8``), then ``e2v-predict`` of each on the same speaker: the deployable
   graph run by onnxruntime, its scores against the torch path's and the int8 graph's UA change;
5. ``e2v-probe WORK/features/pretrained/demo WORK/labels/demo.emo --groups WORK/labels/demo.group
   --probe linear --out WORK/finetune/linear_probe.json``: leave-one-speaker-out on the mean-pooled
   features of the same pretrained model (stage 5); its fold for the held-out speaker is trained
   on the same speakers as the fine-tuning.

Writes ``WORK/finetune/result.json`` (the scores on the held-out speaker, ``onnx``: the ONNX
exports' metrics, sizes and largest score difference to torch, the MLP probe's fold from
stage 6 when there, the commands); :func:`format_section` is the report's section on it.
"""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

from ..errors import Emotion2vecError
from ..evaluation.metrics import METRICS

logger = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FinetuneStageError(Emotion2vecError, ValueError):
    """A missing input of an earlier demo stage; the message names the file and the stage."""


def held_out_speaker(group_path: str, requested: Optional[str]) -> str:
    """``requested`` if given (checked against the file), else the last group in sorted order."""
    from ..data.label_files import read_column_file

    groups = sorted(set(read_column_file(group_path, "groups")))
    if requested is None:
        return groups[-1]
    if requested not in groups:
        raise FinetuneStageError(f"--held-out {requested!r} is not a speaker of {group_path} ({groups})")
    return requested


def _require(path: str, stage: str) -> str:
    if not os.path.exists(path):
        raise FinetuneStageError(f"{path} is missing: run the demo's {stage} stage first (recipes/demo.sh --stage N)")
    return path


def _fold(probe_result: dict, group: str) -> Optional[Dict[str, float]]:
    """The held-out speaker's fold of an e2v-probe result (MLP: averaged over seeds by e2v-probe)."""
    for fold in probe_result.get("folds", []):
        if fold.get("group") == group:
            return {m: fold[m] for m in METRICS if m in fold} | {"n_test": fold.get("n_test")}
    return None


def onnx_predictions(finetuned: str, out: str, pred_args: List[str], torch_pred: dict,
                     commands: List[str]) -> Dict[str, dict]:
    """Export ``finetuned`` to ONNX (fp32 and int8) under ``out`` and run e2v-predict on each with
    ``pred_args`` (inputs, ``--labels``): {"fp32"/"int8": metrics, MiB, max |score - torch score|}."""
    from ..formats import export_cli
    from ..inference import predict_cli

    result = {}
    for name, quantize in (("fp32", None), ("int8", "int8")):
        folder = os.path.join(out, "onnx" if quantize is None else "onnx_int8")
        exp_args = [finetuned, "--format", "onnx", "--out", folder] + (["--quantize", quantize] if quantize else [])
        commands.append("e2v-export " + " ".join(exp_args))
        export_cli.main(export_cli.get_parser().parse_args(exp_args))
        args = [folder, *pred_args, "--out", os.path.join(out, f"heldout_onnx_{name}.json"), "--quiet",
                "--threads", "1"]
        commands.append("e2v-predict " + " ".join(args))
        pred = predict_cli.main(predict_cli.get_parser().parse_args(args))
        diff = max(abs(p["scores"][c] - q["scores"][c]) for p, q in zip(pred["predictions"], torch_pred["predictions"])
                   for c in p["scores"])
        result[name] = {k: pred["metrics"][k] for k in METRICS} | {
            "MiB": round(os.path.getsize(os.path.join(folder, "model.onnx")) / 2**20, 3),
            "max_abs_score_diff_vs_torch": diff, "labels_equal_torch": all(
                p["label"] == q["label"] for p, q in zip(pred["predictions"], torch_pred["predictions"]))}
    return result


def run(work: str, held_out: Optional[str], overrides: List[str]) -> dict:
    from ..inference import predict_cli
    from ..evaluation import probe_cli
    from manifests import split_labels

    labels = os.path.join(work, "labels")
    split = os.path.join(labels, "demo")
    group_path = _require(split + ".group", "manifest")
    ckpt = _require(os.path.join(work, "pretrain", "checkpoints", "checkpoint_last.pt"), "pretrain")
    feats = os.path.join(work, "features", "pretrained", "demo")
    _require(feats + ".npy", "extract")
    out = os.path.join(work, "finetune")
    spk = held_out_speaker(group_path, held_out)
    commands = []

    split_args = [split, "--dest", os.path.join(out, "labels"), "--valid-groups", spk]
    commands.append("e2v-split-labels " + " ".join(split_args))
    counts = split_labels.main(split_labels.get_parser().parse_args(split_args))

    run_dir = os.path.join(out, "run")
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: never resume a stale one
    os.makedirs(run_dir)
    train = [os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train"),
             "--config-dir", os.path.join(REPO, "recipes", "finetune"), "--config-name", "emotion2vec_finetune_demo",
             f"task.data={os.path.join(out, 'labels')}", f"model.init_from={ckpt}",
             f"common.user_dir={os.path.join(REPO, 'emotion2vec_plugin')}", *overrides]
    commands.append("(cd finetune/run && " + " ".join(["fairseq-hydra-train", *train[1:]]) + ")")
    logger.info("fine-tuning on %s, %s held out: %s", sorted(counts["train"]), spk, commands[-1])
    t0 = time.perf_counter()
    if subprocess.run(train, cwd=run_dir).returncode != 0:
        raise FinetuneStageError(f"fine-tuning failed: {commands[-1]}; its log: "
                                 f"{os.path.join(run_dir, 'hydra_train.log')}")
    train_seconds = time.perf_counter() - t0

    # one thread for the prediction and the probe: the small model's operations are too small for two
    # threads to pay, and on a busy 2-core machine two threads made e2v-predict 6x slower (1.45 s per
    # 3 s clip against 0.23 s with one)
    import torch

    torch.set_num_threads(1)
    finetuned = os.path.join(run_dir, "checkpoints", "checkpoint_last.pt")
    pred_args = [finetuned, os.path.join(out, "labels", "valid.tsv"),
                 "--labels", os.path.join(out, "labels", "valid.emo"),
                 "--out", os.path.join(out, "heldout.json"), "--quiet"]
    commands.append("e2v-predict " + " ".join(pred_args))
    pred = predict_cli.main(predict_cli.get_parser().parse_args(pred_args))
    onnx = onnx_predictions(finetuned, out, pred_args[1:4], pred, commands)

    probe_args = [feats, split + ".emo", "--groups", group_path, "--probe", "linear",
                  "--out", os.path.join(out, "linear_probe.json")]
    commands.append("e2v-probe " + " ".join(probe_args))
    linear = probe_cli.main(probe_cli.get_parser().parse_args(probe_args))

    mlp = None
    mlp_path = os.path.join(work, "probe", "pretrained.json")
    if os.path.isfile(mlp_path):
        with open(mlp_path, encoding="utf-8") as f:
            mlp = _fold(json.load(f), spk)
    m = pred["metrics"]
    result = {
        "held_out": spk,
        "train_utterances": sum(counts["train"].values()),
        "held_out_utterances": pred["predicted"],
        "finetuned": {k: m[k] for k in METRICS} | {"n_test": pred["predicted"]},
        "linear_probe": _fold(linear, spk),
        "linear_probe_all_speakers_UA": linear["summary"]["UA"]["mean"],
        "mlp_probe": mlp,
        "onnx": onnx,
        "train_seconds": round(train_seconds, 1),
        "overrides": overrides,
        "commands": commands,
    }
    with open(os.path.join(out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


def load_result(work: str) -> Optional[dict]:
    path = os.path.join(work, "finetune", "result.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def format_section(result: Optional[dict]) -> str:
    """The report's markdown section (empty without a result)."""
    if not result:
        return ""
    rows = [("fine-tuned (all layers but the CNN, linear head)", result["finetuned"]),
            ("linear probe on the pretrained model's mean-pooled features", result["linear_probe"])]
    if result.get("mlp_probe"):
        rows.append(("MLP probe on its frames (stage 6, mean over seeds)", result["mlp_probe"]))
    lines = [f"## Fine-tuning, speaker {result['held_out']} held out\n",
             f"Trained on the other speakers ({result['train_utterances']} utterances; fairseq-hydra-train "
             f"{result['train_seconds']} s), scored on the {result['held_out_utterances']} utterances of "
             f"{result['held_out']}; the probes' fold for {result['held_out']} is trained on the same speakers.\n",
             "| model | WA | UA |", "|---|---|---|"]
    onnx = result.get("onnx") or {}
    if onnx:
        rows[1:1] = [("the same fine-tuned model as ONNX, onnxruntime fp32", onnx["fp32"]),
                     ("the same, ONNX int8 (dynamic quantization of the MatMul weights)", onnx["int8"])]
    lines += [f"| {name} | {100 * r['WA']:.1f} | {100 * r['UA']:.1f} |" for name, r in rows if r]
    if onnx:
        fp32, int8 = onnx["fp32"], onnx["int8"]
        lines.append(f"\nONNX export (`finetune/onnx`, {fp32['MiB']:.2f} MiB; int8 {int8['MiB']:.2f} MiB): largest "
                     f"score difference to the torch model {fp32['max_abs_score_diff_vs_torch']:.1e} (int8 "
                     f"{int8['max_abs_score_diff_vs_torch']:.1e}); labels equal to torch: {fp32['labels_equal_torch']} "
                     f"(int8 {int8['labels_equal_torch']}); int8 UA change "
                     f"{100 * (int8['UA'] - fp32['UA']):+.2f} points.")
    ft, lin = result["finetuned"]["UA"], result["linear_probe"]["UA"]
    lines.append(f"\nFine-tuned minus linear probe: {100 * (ft - lin):+.1f} UA points on one speaker "
                 f"({result['held_out_utterances']} utterances).\n")
    return "\n".join(lines) + "\n"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="The demo's fine-tuning stage (recipes/demo.sh).")
    p.add_argument("work", help="the demo's work folder (stages 1-5 done)")
    p.add_argument("--held-out", default=None, help="speaker to hold out (default: the last in sorted order)")
    p.add_argument("overrides", nargs="*",
                   help="hydra overrides for the fine-tuning run (e.g. optimization.max_update=10)")
    return p


def cli_main(argv: Optional[List[str]] = None) -> None:
    from ..cli import run_main

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args(argv)
    result = run_main("demo finetune", lambda a: run(a.work, a.held_out, a.overrides), args)
    print(format_section(result))


if __name__ == "__main__":
    cli_main()
