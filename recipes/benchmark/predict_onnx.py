"""e2v-predict on the ONNX export (fp32, int8) against our torch path and FunASR: whole processes, interleaved.

1. ``prepare WORK``: the base-size classifier of ``predict_vs_funasr.py`` (released encoder shape,
   random weights seeded, 9 emotion2vec+ classes) as a fine-tuning checkpoint, exported four ways:
   ``WORK/funasr`` (FunASR's ``AutoModel`` reads it), ``WORK/plugin`` (our torch path),
   ``WORK/onnx`` and ``WORK/onnx_int8`` (``e2v-export --format onnx [--quantize int8]``); ``--num``
   synthetic clips of 2-10 s in ``WORK/wav``. Prints sizes, the largest score difference ONNX vs
   torch, and the embedding cosine and top-1 agreement of int8 against fp32.
2. ``time WORK``: ``--rounds`` rounds; in each, every system runs as its own process on all the
   clips, in an order that rotates with the round, so that other load on a shared machine hits
   all alike. Each process is timed whole (interpreter start, imports, model load, audio reading,
   inference, output), with ``--threads`` threads:

   * torch: ``e2v-predict WORK/plugin WORK/wav --threads N --quiet --out ...``
   * onnx / int8: ``e2v-predict WORK/onnx[_int8] WORK/wav --threads N --quiet --out ...``
   * funasr: ``python predict_onnx.py funasr WORK`` (``AutoModel(model=WORK/funasr, ncpu=N)`` and
     ``generate(path, granularity="utterance")`` per clip, its usual loop)

   Reported per system: median wall seconds and median CPU seconds of the process (user + system,
   from ``getrusage(RUSAGE_CHILDREN)``; other processes' load inflates it much less than wall
   time), and the speed-ups (medians of the per-round ratios), wall and CPU.
3. ``equal WORK``: the base-size graph against the torch path, relative to the output's largest
   value, on clips of 400 samples (one CNN frame), 3 s and 60 s (frames, embedding, scores), and a
   padded batch of 400 samples, 3 s and 10 s against each item alone.
4. ``funasr-onnx WORK``: tries FunASR's own ONNX export, ``AutoModel(model=WORK/funasr).export(type="onnx")``.

FunASR is not a project dependency; install it beside the venv (see predict_vs_funasr.py)::

    pip install --no-deps --target /tmp/fpkgs funasr kaldiio librosa lazy_loader
    pip install --target /tmp/fpkgs_extra requests
    python recipes/benchmark/predict_onnx.py prepare /tmp/e2v_onnx --num 16
    PYTHONPATH=/tmp/fpkgs:/tmp/fpkgs_extra python recipes/benchmark/predict_onnx.py time /tmp/e2v_onnx --rounds 5
"""

import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEMS = ("torch", "onnx", "int8", "funasr")


def prepare(args) -> dict:
    import numpy as np

    sys.path.insert(0, HERE)
    from predict_vs_funasr import make_export, write_files  # noqa: E402  (the same classifier and clips)

    from emotion2vec_plugin.formats import export_cli
    from emotion2vec_plugin.formats.load import load_classifier
    from emotion2vec_plugin.inference.featurizer import predict_batch
    from emotion2vec_plugin.inference.onnx_runtime import OnnxRunner
    import soundfile as sf

    os.makedirs(os.path.join(args.work, "wav"), exist_ok=True)
    make_export(args.work)  # WORK/checkpoint_best.pt and WORK/funasr
    ckpt = os.path.join(args.work, "checkpoint_best.pt")
    base = dict(checkpoint=ckpt, random_init=None, trust_checkpoint=False, layers=None, opset=17)
    export_cli.main(argparse.Namespace(**base, out=os.path.join(args.work, "plugin"), format="plugin", quantize=None))
    seconds = {}
    for name, q in (("onnx", None), ("onnx_int8", "int8")):
        t0 = time.perf_counter()
        export_cli.main(argparse.Namespace(**base, out=os.path.join(args.work, name), format="onnx", quantize=q))
        seconds[name] = round(time.perf_counter() - t0, 1)
    items = write_files(os.path.join(args.work, "wav"), args.num)
    wavs = [sf.read(it.path, dtype="float32")[0] for it in items]
    model, _, settings = load_classifier(os.path.join(args.work, "plugin"))
    fp32, int8 = OnnxRunner(os.path.join(args.work, "onnx"), 2), OnnxRunner(os.path.join(args.work, "onnx_int8"), 2)
    score_diff, rel, cos, agree = 0.0, 0.0, [], []
    for w in wavs:
        ref = predict_batch(model, [w], settings.normalize)[0]
        a, b = fp32.run([w]), int8.run([w])
        score_diff = max(score_diff, float(np.abs(a["scores"][0] - ref).max()))
        rel = max(rel, float(np.abs(a["scores"][0] - ref).max() / np.abs(ref).max()))
        e, f = a["embedding"][0], b["embedding"][0]
        cos.append(float(e @ f / np.linalg.norm(e) / np.linalg.norm(f)))
        agree.append(int(a["scores"][0].argmax() == b["scores"][0].argmax()))
    mib = {k: round(sum(os.path.getsize(p) for p in glob.glob(os.path.join(args.work, k, "*"))) / 2**20, 1)
           for k in ("plugin", "funasr", "onnx", "onnx_int8")}
    report = {"files": len(items), "audio_seconds": round(sum(len(w) for w in wavs) / 16000, 1), "MiB": mib,
              "export_seconds": seconds, "max_abs_score_diff_onnx_vs_torch": score_diff,
              "max_rel_score_diff_onnx_vs_torch": rel, "int8_embedding_cosine_min": round(min(cos), 6),
              "int8_top1_agreement": sum(agree) / len(agree)}
    print(json.dumps(report))
    return report


def equal(args) -> dict:
    import numpy as np

    from emotion2vec_plugin.formats.load import load_classifier
    from emotion2vec_plugin.inference.featurizer import extract_batch, predict_batch
    from emotion2vec_plugin.inference.onnx_runtime import OnnxRunner

    def rel(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    model, _, settings = load_classifier(os.path.join(args.work, "plugin"))
    runner = OnnxRunner(os.path.join(args.work, "onnx"), args.threads)
    rng = np.random.default_rng(0)
    wavs = {n: (rng.standard_normal(n) * 0.1).astype(np.float32) for n in (400, 48000, 160000, 960000)}
    report = {}
    for n in (400, 48000, 960000):
        got, w = runner.run([wavs[n]]), wavs[n]
        last = [model.num_layers - 1]
        report[f"{n / 16000:g}s"] = {
            "frames": rel(got["frames"][0], extract_batch(model, [w], last, settings.normalize)[0]),
            "embedding": rel(got["embedding"][0], extract_batch(model, [w], last, settings.normalize, "utterance")[0]),
            "scores": rel(got["scores"][0], predict_batch(model, [w], settings.normalize)[0])}
    batch_in = [wavs[400], wavs[48000], wavs[160000]]
    batch = runner.run(batch_in)
    worst = 0.0
    for i, w in enumerate(batch_in):
        one = runner.run([w])
        t = one["frames"].shape[1]
        worst = max(worst, rel(batch["frames"][i, :t], one["frames"][0]),
                    *(rel(batch[k][i], one[k][0]) for k in ("embedding", "scores")))
    report["padded_batch_vs_single"] = worst
    print(json.dumps(report))
    return report


def funasr_run(args) -> None:
    """FunASR's usual loop over the clips (one process of the ``time`` stage)."""
    from funasr import AutoModel

    model = AutoModel(model=os.path.join(args.work, "funasr"), device="cpu", disable_update=True, disable_pbar=True,
                      disable_log=True, ncpu=args.threads)
    out = [model.generate(p, granularity="utterance", extract_embedding=False)[0]["scores"]
           for p in sorted(glob.glob(os.path.join(args.work, "wav", "*.wav")))]
    with open(os.path.join(args.work, "out_funasr.json"), "w") as f:
        json.dump(out, f)


def command(system: str, args) -> list:
    bin_dir = os.path.dirname(sys.executable)
    if system == "funasr":
        return [sys.executable, os.path.abspath(__file__), "funasr", args.work, "--threads", str(args.threads)]
    folder = {"torch": "plugin", "onnx": "onnx", "int8": "onnx_int8"}[system]
    return [os.path.join(bin_dir, "e2v-predict"), os.path.join(args.work, folder), os.path.join(args.work, "wav"),
            "--threads", str(args.threads), "--quiet", "--out", os.path.join(args.work, f"out_{system}.tsv")]


def time_all(args) -> dict:
    systems = [s for s in SYSTEMS if s in args.systems]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    seconds = {s: [] for s in systems}
    cpu = {s: [] for s in systems}
    load = os.getloadavg()[0]
    for r in range(args.rounds):
        order = systems[r % len(systems):] + systems[: r % len(systems)]
        for s in order:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(command(s, args), env=env, capture_output=True, text=True)
            seconds[s].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[s].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            if proc.returncode != 0:
                raise SystemExit(f"{s} failed: {proc.stderr[-2000:]}")
    ratios = {}
    for kind, per in (("wall", seconds), ("cpu", cpu)):
        for a, b in (("torch", "onnx"), ("torch", "int8"), ("funasr", "onnx"), ("funasr", "int8"), ("funasr", "torch")):
            if a in per and b in per:
                ratios[f"{kind} {a}/{b}"] = round(statistics.median([x / y for x, y in zip(per[a], per[b])]), 2)
    report = {"threads": args.threads, "rounds": args.rounds,
              "median_wall_seconds": {s: round(statistics.median(v), 2) for s, v in seconds.items()},
              "median_cpu_seconds": {s: round(statistics.median(v), 2) for s, v in cpu.items()}, "speedup": ratios,
              "wall_per_round": {s: [round(x, 2) for x in v] for s, v in seconds.items()},
              "load_average_1min_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(report))
    return report


def funasr_onnx(args) -> None:
    """Try FunASR's own ONNX export of the same classifier and report what happened."""
    from funasr import AutoModel

    model = AutoModel(model=os.path.join(args.work, "funasr"), device="cpu", disable_update=True, disable_log=True)
    try:
        res = model.export(type="onnx", quantize=False)
        print(json.dumps({"funasr_onnx_export": str(res)}))
    except Exception as e:  # noqa: BLE001  report whatever FunASR raises
        print(json.dumps({"funasr_onnx_export_failed": f"{type(e).__name__}: {e}"[:1000]}))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=["prepare", "time", "equal", "funasr", "funasr-onnx"])
    p.add_argument("work", help="work folder")
    p.add_argument("--num", type=int, default=16, help="clips of 2-10 s (prepare)")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds (time)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS, help="systems to time")
    return p


def main(args):
    stages = {"prepare": prepare, "time": time_all, "equal": equal, "funasr": funasr_run, "funasr-onnx": funasr_onnx}
    return stages[args.stage](args)


if __name__ == "__main__":
    main(get_parser().parse_args())
