"""Time one emotion2vec training step (forward + backward + optimizer + EMA) and compare attention kernels.

For each config (tiny, base) it builds the fairseq model, runs a few warm-up steps, then times
``--steps`` steps and prints audio-seconds per second, the model FLOPs of one step (counted by
``torch.utils.flop_counter``), achieved FLOP/s, MFU against ``--peak-tflops`` and, on CUDA, peak
memory. Peers in the same run: the same model with each attention kernel of ``AltAttention``
(``sdpa``: ``F.scaled_dot_product_attention``; ``eager``: ``softmax(q k^T * scale + bias) v``
written out as data2vec 2.0 / FunASR do), so ratios are measured
on the same machine and inputs.

    python recipes/benchmark/train_step.py --configs tiny base --batch 2 --seconds 4 --device cpu
    python recipes/benchmark/train_step.py --configs base --batch 8 --seconds 8 --device cuda --dtype bf16
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's devtools/ (not installed)

from devtools.benchmark import attention_impl, build_model, count_step_flops, sync, train_step  # noqa: E402


def measure(arch, attn, args, device, dtype):
    torch.manual_seed(0)
    model = build_model(arch, device, dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    S = int(args.seconds * 16000)
    source = torch.randn(args.batch, S, device=device, dtype=dtype)
    ids = torch.arange(args.batch)
    with attention_impl(attn):
        for i in range(args.warmup):
            train_step(model, optimizer, source, ids, i + 1)
        flops = None
        if args.count_flops:
            flops = count_step_flops(lambda: train_step(model, optimizer, source, ids, args.warmup + 1))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(args.steps):
            sync(device)
            t0 = time.perf_counter()
            train_step(model, optimizer, source, ids, args.warmup + 2 + i)
            sync(device)
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    row = {
        "config": arch, "attention": attn, "step_s": t, "audio_s_per_s": args.batch * args.seconds / t,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    if flops is not None:
        row["tflop_per_step"] = flops / 1e12
        row["tflops"] = flops / t / 1e12
        if args.peak_tflops:
            row["mfu"] = flops / t / 1e12 / args.peak_tflops
    if device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return row


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["tiny", "base"], help="arch yaml names in recipes/pretrain/arch")
    p.add_argument("--attention", nargs="+", default=["sdpa", "eager"], choices=["sdpa", "eager"])
    p.add_argument("--batch", type=int, default=2, help="utterances per step (each cloned clone_batch times)")
    p.add_argument("--seconds", type=float, default=4.0, help="utterance length")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--count-flops", action="store_true", help="count model FLOPs of one step (slow on CPU)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (H100 SXM bf16 dense: 989)")
    p.add_argument("--threads", type=int, default=None)
    return p


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    rows = [measure(arch, attn, args, device, dtype) for arch in args.configs for attn in args.attention]
    by_arch = {}
    for r in rows:
        by_arch.setdefault(r["config"], {})[r["attention"]] = r
    print(f"device={device} dtype={args.dtype} threads={torch.get_num_threads()} batch={args.batch} x {args.seconds}s")
    for r in rows:
        extra = " ".join(f"{k}={v:.3g}" for k, v in r.items() if k not in ("config", "attention") and isinstance(v, float))
        print(f"{r['config']:>5} {r['attention']:>5}: {extra}")
    for arch, d in by_arch.items():
        if "sdpa" in d and "eager" in d:
            print(f"{arch}: sdpa / eager throughput = {d['sdpa']['audio_s_per_s'] / d['eager']['audio_s_per_s']:.2f}x")
    return rows


if __name__ == "__main__":
    main(get_parser().parse_args())
