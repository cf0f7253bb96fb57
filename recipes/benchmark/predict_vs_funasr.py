"""e2v-predict against FunASR's ``AutoModel.generate`` on the same classifier export, one run.

1. A base-size classifier (released encoder shape, random init seeded, 9 classes named as
   emotion2vec+'s, a head scaled so that the scores are far from uniform) is saved as a
   fine-tuning checkpoint and exported with ``e2v-export --format funasr``.
2. FunASR loads the folder offline with ``funasr.AutoModel(model=DIR)``: it reads config.yaml,
   builds ``proj`` from the tokenizer's token list (``tokens.txt``) and loads ``model.pt``.
3. ``--num`` synthetic utterances of 2-10 s are written as wav files. Both systems score every
   file: FunASR with ``generate(path, granularity="utterance", extract_embedding=False)`` (its
   one-by-one loop), ours with e2v-predict's :func:`predict_items` (CPU default: one file per
   batch) and again batched (``--batch-size``). Rounds alternate the order of the two systems so
   that other load on the machine hits both alike; the ratio is taken per round.
4. Reported: labels equal, the largest score difference FunASR vs ours (one by one and batched),
   audio-seconds per second of each system and the ratio (median over rounds).

FunASR is not a project dependency; install it beside the venv::

    pip install --no-deps --target /tmp/fpkgs funasr kaldiio librosa lazy_loader
    pip install --target /tmp/fpkgs_extra requests
    PYTHONPATH=/tmp/fpkgs:/tmp/fpkgs_extra python recipes/benchmark/predict_vs_funasr.py --num 40

``--device cuda --dtype bf16`` measures our batched throughput on a GPU (FunASR skipped with
``--no-funasr``).
"""

import argparse
import logging
import os
import statistics
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

from emotion2vec_plugin.data.synthetic import synth_utterance
from emotion2vec_plugin.downstream import export
from emotion2vec_plugin.downstream.classifier_io import load_classifier
from emotion2vec_plugin.downstream.predict import AudioItem, predict_items
from emotion2vec_plugin.modules.classifier import Emotion2vecClassifierNet
from emotion2vec_plugin.modules.config import EncoderConfig

CLASSES = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]


def make_export(out: str) -> str:
    torch.manual_seed(0)
    enc = EncoderConfig()
    model = Emotion2vecClassifierNet(enc, len(CLASSES))
    with torch.no_grad():
        model.proj.weight.normal_(0, 0.07)  # logits with std ~2: scores spread over the classes, not one-hot
    fields = {**{k: getattr(enc, k) for k in EncoderConfig.__dataclass_fields__}, "_name": "emotion2vec_classifier"}
    ckpt = os.path.join(out, "checkpoint_best.pt")
    torch.save({"cfg": {"model": fields, "task": {"normalize": True, "sample_rate": 16000}},
                "model": model.state_dict(), "task_state": {"labels": CLASSES},
                "optimizer_history": [{"num_updates": 0}], "extra_state": {}}, ckpt)
    return export.main(argparse.Namespace(checkpoint=ckpt, out=os.path.join(out, "funasr"), format="funasr",
                                          random_init=None, trust_checkpoint=False))


def write_files(folder: str, num: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(num):
        path = os.path.join(folder, f"utt{i:04d}.wav")
        sf.write(path, synth_utterance(int(rng.uniform(2, 10) * 16000), rng), 16000)
        items.append(AudioItem(os.path.basename(path), path, path))
    return items


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num", type=int, default=40, help="utterances (2-10 s each)")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    p.add_argument("--batch-size", type=int, default=8, help="our batched run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="our batched run's dtype")
    p.add_argument("--no-funasr", action="store_true", help="ours only (e.g. on a GPU)")
    return p


def main(args):
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="e2v_predict_bench_")
    folder = make_export(work)
    items = write_files(work, args.num)
    model, labels, settings = load_classifier(folder, args.device)
    audio = sum(sf.info(it.path).frames for it in items) / 16000
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]

    def ours(batch_size, dt=torch.float32, files=items):
        out, skipped, _, elapsed = predict_items(model, settings, files, batch_size, dtype=dt)
        assert not skipped, skipped
        return np.stack([out[i] for i in range(len(files))]), elapsed

    report = {"files": len(items), "audio_seconds": round(audio, 1), "device": args.device, "threads": args.threads}
    if args.no_funasr:
        ours(args.batch_size, dtype, items[:2])  # warm-up
        times = [ours(args.batch_size, dtype)[1] for _ in range(args.rounds)]
        report[f"ours_batched_{args.dtype}_audio_s_per_s"] = round(audio / min(times), 1)
        print(report)
        return report

    from funasr import AutoModel

    # ncpu: FunASR sets torch's (process-wide) thread count, 4 by default
    fun = AutoModel(model=folder, device=args.device, disable_update=True, disable_pbar=True, disable_log=True,
                    ncpu=args.threads)

    def funasr(files=items):
        start = time.perf_counter()
        res = [fun.generate(it.path, granularity="utterance", extract_embedding=False)[0] for it in files]
        elapsed = time.perf_counter() - start
        assert all(r["labels"] == labels for r in res), (res[0]["labels"], labels)
        return np.array([r["scores"] for r in res]), elapsed

    ours(1, files=items[:2])
    funasr(items[:2])  # warm-up both
    ratios, t_ours, t_fun = [], [], []
    for r in range(args.rounds):
        if r % 2 == 0:
            (s_fun, tf), (s_ours, to) = funasr(), ours(1)
        else:
            (s_ours, to), (s_fun, tf) = ours(1), funasr()
        ratios.append(tf / to)
        t_ours.append(to)
        t_fun.append(tf)
    s_batched, _ = ours(args.batch_size)
    report.update({
        "labels_equal": True,
        "max_abs_score_diff_one_by_one": float(np.abs(s_fun - s_ours).max()),
        "max_abs_score_diff_batched": float(np.abs(s_fun - s_batched).max()),
        "max_abs_ours_batched_vs_one_by_one": float(np.abs(s_batched - s_ours).max()),
        "top1_agreement": float((s_fun.argmax(1) == s_ours.argmax(1)).mean()),
        "score_range": [round(float(s_fun.min()), 4), round(float(s_fun.max()), 4)],
        "funasr_audio_s_per_s": round(audio / statistics.median(t_fun), 2),
        "ours_audio_s_per_s": round(audio / statistics.median(t_ours), 2),
        "speedup_per_round": [round(x, 3) for x in ratios],
        "speedup_median": round(statistics.median(ratios), 3),
    })
    print(report)
    return report


if __name__ == "__main__":
    main(get_parser().parse_args())
