"""e2v-predict against FunASR's ``AutoModel.generate`` on the same classifier export, one run.

1. A base-size classifier (released encoder shape, random init seeded, 9 classes named as
   emotion2vec+'s, a head scaled so that the scores are far from uniform) is saved as a
   fine-tuning checkpoint and exported with ``e2v-export --format funasr``.
2. FunASR loads the folder offline with ``funasr.AutoModel(model=DIR)``: it reads config.yaml,
   builds ``proj`` from the tokenizer's token list (``tokens.txt``) and loads ``model.pt``.
3. ``--num`` synthetic utterances of 2-10 s are written as wav files. Both systems score every
   file: FunASR with ``generate(path, granularity="utterance", extract_embedding=False)`` (its
   one-by-one loop), ours with e2v-predict's :func:`predict_items` (CPU default: one file per
   batch) and again batched (``--batch-size``).
4. Timing is interleaved per file: in every round each file is scored by both systems back to
   back, the order alternating with file and round, so that other load on a shared machine hits
   both alike. For each call the wall time and the process CPU time (``time.process_time``: all
   threads of this process, so other processes' load inflates it much less than wall time) are
   recorded. Reported: per-round ratios FunASR / ours (wall and CPU), their medians, the median
   of the per-file wall ratios, audio-seconds per second of each system, the load average.
5. Correctness on the same run: labels equal, the largest score difference FunASR vs ours (one
   by one and batched), batched vs one by one.

``--breakdown`` adds where the CPU time of one file goes, per stage, for both systems (audio
reading, normalisation, CNN, Transformer, head), summed over the files.

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
import torch.nn.functional as F

from emotion2vec_plugin.data.synthetic import synth_utterance
from emotion2vec_plugin.formats import export_cli as export
from emotion2vec_plugin.formats.load import load_classifier
from emotion2vec_plugin.inference.predict_cli import AudioItem, predict_items
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


def breakdown(model, settings, fun, items):
    """CPU seconds per stage, summed over ``items``, of ours (predict_items on one file) and FunASR
    (generate on one file), on one thread: with several, OpenMP's worker threads spin for a while
    after each parallel region and that CPU time lands in whatever stage is timed next. Each stage
    is run and timed on its own, the least of 3 runs; "rest" is the whole call minus the stages (bookkeeping); FunASR's
    Transformer is its forward minus its CNN."""
    from funasr.utils.load_utils import load_audio_text_image_video

    from emotion2vec_plugin.data.manifest import read_mono
    from emotion2vec_plugin.data.padding import crop_and_pad
    from emotion2vec_plugin.modules.encoder import normalize_waveform

    def cpu(fn, reps=3):  # the least CPU time of a few runs: other load only ever adds to it
        best = float("inf")
        for _ in range(reps):
            c0 = time.process_time()
            out = fn()
            best = min(best, time.process_time() - c0)
        return out, best

    stages = {"ours": {}, "funasr": {}}

    def add(system, stage, seconds):
        stages[system][stage] = stages[system].get(stage, 0.0) + seconds

    fm = fun.model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.inference_mode():
        for it in items:
            _, t_all = cpu(lambda: predict_items(model, settings, [it], 1))
            wav, t_read = cpu(lambda: (sf.info(it.path), read_mono(it.path, it.where, 16000))[1])
            src, t_norm = cpu(lambda: normalize_waveform(*crop_and_pad([torch.from_numpy(wav)], None, None)))
            (x, _), t_cnn = cpu(lambda: model.local_features(src, None))
            h, t_ctx = cpu(lambda: model.contextualize(x, None))
            _, t_head = cpu(lambda: torch.softmax(model.classify(h[:, model.num_utterance_tokens:].mean(1)), -1))
            for k, v in [("read", t_read), ("normalise", t_norm), ("cnn+projection", t_cnn),
                         ("transformer", t_ctx), ("head", t_head)]:
                add("ours", k, v)
            add("ours", "rest", t_all - t_read - t_norm - t_cnn - t_ctx - t_head)

            _, t_all = cpu(lambda: fun.generate(it.path, granularity="utterance", extract_embedding=False))
            wav, t_read = cpu(lambda: load_audio_text_image_video(it.path, fs=16000, audio_fs=16000, data_type="sound"))
            src, t_norm = cpu(lambda: F.layer_norm(wav, wav.shape).view(1, -1))
            _, t_cnn = cpu(lambda: fm.modality_encoders["AUDIO"].local_features(src))
            feats, t_fwd = cpu(lambda: fm.extract_features(src, padding_mask=None)["x"])
            _, t_head = cpu(lambda: torch.softmax(fm.proj(feats.mean(dim=1)), -1))
            for k, v in [("read", t_read), ("normalise", t_norm), ("cnn+projection", t_cnn),
                         ("transformer", t_fwd - t_cnn), ("head", t_head)]:
                add("funasr", k, v)
            add("funasr", "rest", t_all - t_read - t_norm - t_fwd - t_head)
    torch.set_num_threads(threads)
    return {s: {k: round(v, 3) for k, v in d.items()} for s, d in stages.items()}


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num", type=int, default=40, help="utterances (2-10 s each)")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    p.add_argument("--batch-size", type=int, default=8, help="our batched run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="our batched run's dtype")
    p.add_argument("--no-funasr", action="store_true", help="ours only (e.g. on a GPU)")
    p.add_argument("--breakdown", action="store_true", help="also CPU seconds per stage of both systems")
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
    load_before = os.getloadavg()
    # wall[system][round], cpu[system][round]: sums over the files; file_ratios: per file and round
    wall = {"funasr": [0.0] * args.rounds, "ours": [0.0] * args.rounds}
    cpu = {"funasr": [0.0] * args.rounds, "ours": [0.0] * args.rounds}
    file_ratios, s_fun, s_ours = [], [None] * len(items), [None] * len(items)
    for r in range(args.rounds):
        for i, item in enumerate(items):
            calls = [("funasr", lambda it=item: funasr([it])), ("ours", lambda it=item: ours(1, files=[it]))]
            if (r + i) % 2:
                calls.reverse()
            this = {}
            for name, call in calls:
                c0 = time.process_time()
                (scores, w) = call()
                cpu[name][r] += time.process_time() - c0
                wall[name][r] += w
                this[name] = w
                (s_fun if name == "funasr" else s_ours)[i] = scores[0]
            file_ratios.append(this["funasr"] / this["ours"])
    load_after = os.getloadavg()
    s_fun, s_ours = np.stack(s_fun), np.stack(s_ours)
    s_batched, _ = ours(args.batch_size)
    wall_ratios = [f / o for f, o in zip(wall["funasr"], wall["ours"])]
    cpu_ratios = [f / o for f, o in zip(cpu["funasr"], cpu["ours"])]
    report.update({
        "labels_equal": True,
        "max_abs_score_diff_one_by_one": float(np.abs(s_fun - s_ours).max()),
        "max_abs_score_diff_batched": float(np.abs(s_fun - s_batched).max()),
        "max_abs_ours_batched_vs_one_by_one": float(np.abs(s_batched - s_ours).max()),
        "top1_agreement": float((s_fun.argmax(1) == s_ours.argmax(1)).mean()),
        "score_range": [round(float(s_fun.min()), 4), round(float(s_fun.max()), 4)],
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "funasr_audio_s_per_s": round(audio / statistics.median(wall["funasr"]), 2),
        "ours_audio_s_per_s": round(audio / statistics.median(wall["ours"]), 2),
        "funasr_cpu_s_per_audio_s": round(statistics.median(cpu["funasr"]) / audio, 3),
        "ours_cpu_s_per_audio_s": round(statistics.median(cpu["ours"]) / audio, 3),
        "speedup_wall_per_round": [round(x, 3) for x in wall_ratios],
        "speedup_wall_median": round(statistics.median(wall_ratios), 3),
        "speedup_wall_median_per_file": round(statistics.median(file_ratios), 3),
        "speedup_cpu_per_round": [round(x, 3) for x in cpu_ratios],
        "speedup_cpu_median": round(statistics.median(cpu_ratios), 3),
    })
    if args.breakdown:
        report["cpu_s_by_stage"] = breakdown(model, settings, fun, items)
    print(report)
    return report


if __name__ == "__main__":
    main(get_parser().parse_args())
