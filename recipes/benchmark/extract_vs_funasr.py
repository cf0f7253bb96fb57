"""e2v-extract's batched extraction against FunASR's Emotion2vec inference, same weights, one run.

1. Base-size weights (random init, seeded) are saved as a training checkpoint and exported with
   ``e2v-export --format funasr``; FunASR's ``Emotion2vec`` class is built from that
   ``config.yaml`` and strictly loads that ``model.pt`` (so the export format is checked too).
2. ``--num`` utterances of 2-10 s (synthetic, 16 kHz) go through FunASR's ``inference`` (its
   one-by-one loop) and through our ``extract_batch`` (length-sorted batches with padding masks;
   one utterance per batch by default, e2v-extract's CPU default), interleaved batch by batch.
3. Reported: audio-seconds per second for both and the ratio, the largest feature difference
   ours vs FunASR, FunASR's own batched-with-padding output vs its one-by-one output, ours batched
   vs ours one-by-one, and our achieved GFLOP/s against a large fp32 matmul measured in the same run.

FunASR is not a dependency of the project; install it beside the venv for this benchmark, e.g.
``pip install --no-deps --target /tmp/fpkgs funasr kaldiio librosa lazy_loader`` and run with
``PYTHONPATH=/tmp/fpkgs``.

    PYTHONPATH=/tmp/fpkgs python recipes/benchmark/extract_vs_funasr.py --num 200
"""

import argparse
import os
import tempfile
import time

import numpy as np
import torch
import yaml

from emotion2vec_plugin.data.synthetic import synth_utterance
from emotion2vec_plugin.formats import export_cli as export
from emotion2vec_plugin.formats.load import load_pretrained
from emotion2vec_plugin.inference.batching import plan_batches
from emotion2vec_plugin.inference.featurizer import extract_batch
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig, Emotion2vecModel


def make_funasr_export(out: str) -> str:
    torch.manual_seed(0)
    cfg = Emotion2vecConfig(seed=1)
    model = Emotion2vecModel(cfg)
    fields = {k: getattr(cfg, k) for k in Emotion2vecConfig.__dataclass_fields__}
    fields.update(_name="emotion2vec", utterance_mode="chunk")
    ckpt = os.path.join(out, "checkpoint.pt")
    torch.save({"cfg": {"model": fields, "task": {"normalize": True}}, "model": model.state_dict(),
                "optimizer_history": [{"num_updates": 0, "lr_scheduler_state": {}}], "extra_state": {}}, ckpt)
    return export.main(argparse.Namespace(checkpoint=ckpt, out=os.path.join(out, "funasr"), format="funasr",
                                          random_init=None))


def load_funasr(folder: str):
    from funasr.models.emotion2vec.model import Emotion2vec

    conf = yaml.safe_load(open(os.path.join(folder, "config.yaml")))
    model = Emotion2vec(model_conf=conf["model_conf"])
    state = torch.load(os.path.join(folder, "model.pt"), map_location="cpu")["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"FunASR could not load our funasr export: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def matmul_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    return 2 * 2048**3 * 10 / (time.perf_counter() - t) / 1e9


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=200)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=1, help="e2v-extract's CPU default; try 16 to see batching's cost")
    p.add_argument("--max-batch-seconds", type=float, default=160.0)
    return p


@torch.inference_mode()
def main(args):
    rng = np.random.default_rng(0)
    wavs = [synth_utterance(int(rng.uniform(args.min_seconds, args.max_seconds) * 16000), rng) for _ in range(args.num)]
    seconds = sum(len(w) for w in wavs) / 16000
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_funasr_export(tmp)
        funasr_model = load_funasr(folder)
        ours, settings = load_pretrained(folder)

    # interleaved, batch by batch, alternating who goes first: load from other processes and cache
    # warmth hit both systems alike, so the ratio holds on a shared machine
    layers = [ours.num_layers - 1]
    batches = plan_batches([len(w) for w in wavs], range(len(wavs)), args.batch_size, int(args.max_batch_seconds * 16000))
    mine, theirs = [None] * len(wavs), [None] * len(wavs)
    t_funasr = t_ours = 0.0
    for k, batch in enumerate(batches):
        for who in (("funasr", "ours") if k % 2 == 0 else ("ours", "funasr")):
            t = time.perf_counter()
            if who == "funasr":
                out, _ = funasr_model.inference([torch.from_numpy(wavs[i]) for i in batch], key=[str(i) for i in batch],
                                                device="cpu", granularity="frame")
                for i, r in zip(batch, out):
                    theirs[i] = r
                t_funasr += time.perf_counter() - t
            else:
                for i, f in zip(batch, extract_batch(ours, [wavs[i] for i in batch], layers, settings.normalize)):
                    mine[i] = f
                t_ours += time.perf_counter() - t
    diff_vs_funasr = max(float(np.abs(m - r["feats"]).max()) for m, r in zip(mine, theirs))

    # padding behaviour on 8 utterances: batched vs one by one, for both implementations
    few = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))[:: max(1, len(wavs) // 8)][:8]
    S = max(len(wavs[i]) for i in few)
    src = torch.zeros(len(few), S)
    pad = torch.ones(len(few), S, dtype=torch.bool)
    for j, i in enumerate(few):
        w = torch.from_numpy(wavs[i])
        src[j, : len(w)] = torch.nn.functional.layer_norm(w, w.shape)
        pad[j, : len(w)] = False
    batched = funasr_model.extract_features(src, padding_mask=pad)["x"]
    frames = ours.audio.local_encoder.output_lengths(torch.tensor([len(wavs[i]) for i in few])).tolist()
    funasr_pad_diff = max(float((batched[j, :T] - torch.from_numpy(theirs[i]["feats"])).abs().max())
                          for j, (i, T) in enumerate(zip(few, frames)))
    ours_batched = extract_batch(ours, [wavs[i] for i in few], layers, settings.normalize)
    ours_pad_diff = max(float(np.abs(a - mine[i]).max()) for a, i in zip(ours_batched, few))

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        extract_batch(ours, [wavs[i] for i in batches[0]], layers, settings.normalize)
    gflop_per_s_audio = counter.get_total_flops() / 1e9 / (sum(len(wavs[i]) for i in batches[0]) / 16000)
    peak = matmul_gflops()
    achieved = gflop_per_s_audio * seconds / t_ours

    print(f"{args.num} utterances, {seconds:.0f} s of audio, base model (93.8 M), fp32, {torch.get_num_threads()} threads")
    print(f"  FunASR Emotion2vec.inference (one by one): {t_funasr:7.1f} s  {seconds / t_funasr:6.2f} audio-s/s")
    print(f"  e2v-extract, batches of {args.batch_size:<3}:             {t_ours:7.1f} s  {seconds / t_ours:6.2f} audio-s/s"
          f"  ({t_funasr / t_ours:.2f}x FunASR)")
    print(f"  max |ours - FunASR| over all frames:        {diff_vs_funasr:.2e}")
    print(f"  FunASR batched-with-padding vs its one-by-one: {funasr_pad_diff:.2e}")
    print(f"  ours batched-with-padding vs ours one-by-one:  {ours_pad_diff:.2e}")
    print(f"  model cost {gflop_per_s_audio:.1f} GFLOP per audio second; ours achieves {achieved:.0f} GFLOP/s = "
          f"{100 * achieved / peak:.0f}% of a 2048^3 fp32 matmul ({peak:.0f} GFLOP/s) measured in this run")


if __name__ == "__main__":
    main(get_parser().parse_args())
