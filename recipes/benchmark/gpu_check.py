"""Everything to measure on the first GPU lent to the project, in one script that prints JSON.

    python recipes/benchmark/gpu_check.py --work /tmp/gpu_check            # one H100: < 8 minutes
    python recipes/benchmark/gpu_check.py --smoke --work /tmp/gpu_smoke    # CPU, seconds: same code paths

Sections (each reported under its name; a failing section is reported with its error and the
script exits 1 after running the others):

* ``train_step``: the base config's training step (forward, backward, AdamW, EMA) in bf16 autocast,
  ours and fairseq's own data2vec 2.0 interleaved on the same weights and batches
  (``train_step_vs_data2vec.py``), without and with ``model.compile=true`` (data2vec 2.0's blocks and
  decoder compiled alike in the second run): audio-s/s, peak memory, MFU from the FLOPs counted by
  ``torch.utils.flop_counter`` against the card's dense bf16 peak;
* ``hydra_bf16`` / ``hydra_fp16``: ``fairseq-hydra-train`` of the base recipe (random init) for 200
  updates in bf16 and 100 in fp16 on synthesised audio: every logged loss finite, the loss of the
  last updates, the saved teacher (``_ema.*``) in fp32;
* ``extract_rtf``: ``e2v-extract`` of the bf16 run's checkpoint in bf16, batched (16) and one by one:
  real-time factor (processing seconds per audio second) of each.

``--smoke`` runs the same sections on CPU with the tiny arch, fp32 steps, a few updates and a few
short files (``--smoke`` cannot measure speed; it shows that the script works). fairseq's fp16
optimizer needs CUDA, so on CPU the fp16 section is skipped (the bf16 run does run on CPU).
"""

import argparse
import json
import math
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the checkout's devtools/ (shared with the tests; not installed)

import train_step_vs_data2vec as bench  # noqa: E402  (this script's folder, on sys.path when run)
from devtools.benchmark import sync, train_log_losses  # noqa: E402

# dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, by device name
BF16_PEAK_TFLOPS = {"H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0,
                    "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def device_peak_tflops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK_TFLOPS.items():  # most specific first
        if key in name:
            return value
    return None


def compile_data2vec(model) -> None:
    """Compile data2vec 2.0's blocks, teacher blocks and decoder in place (dynamic shapes), as ours."""
    mods = [model.modality_encoders["AUDIO"].decoder]
    for net in (model, model.ema.model):  # student and teacher: prenet and main blocks
        mods += list(net.blocks) + list(net.modality_encoders["AUDIO"].context_encoder.blocks)
    for m in mods:
        m.compile(dynamic=True)


def train_step(args, device: torch.device, work: Path) -> Dict[str, object]:
    rows = {}
    peak = device_peak_tflops(device)
    for compiled in ([False] if args.no_compile else [False, True]):
        argv = ["--arch", args.arch, "--batch", str(args.batch), "--seconds", str(args.seconds),
                "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", str(device),
                "--dtype", args.dtype, "--clone-batch", str(args.clone_batch)]
        if not compiled:  # FLOPs are counted on the eager model; the compiled one does the same work
            argv += ["--count-flops"] + (["--peak-tflops", str(peak)] if peak else [])
        bargs = bench.get_parser().parse_args(argv)
        hook = compile_data2vec if compiled else None
        row = bench.compare(bargs, device, work / "d2v", compile_ours=compiled, prepare_data2vec=hook)
        if compiled and "tflop_per_step" in rows.get("eager", {}):
            flops = rows["eager"]["tflop_per_step"]
            row["tflop_per_step"] = flops
            row["tflops"] = {k: round(flops / v, 3) for k, v in row["step_s"].items()}
            if peak:
                row["peak_tflops"] = peak
                row["mfu"] = {k: round(flops / v / peak, 4) for k, v in row["step_s"].items()}
        rows["compile" if compiled else "eager"] = row
    return rows


def hydra_run(args, device: torch.device, work: Path, corpus: Path, name: str, precision: str,
              updates: int) -> Dict[str, object]:
    """One fairseq-hydra-train run; returns its losses, time and the teacher's dtypes."""
    run = work / name
    run.mkdir(parents=True, exist_ok=True)
    over = [f"task.data={corpus}", f"common.user_dir={REPO / 'emotion2vec_plugin'}",
            f"optimization.max_update={updates}", "common.log_format=json",
            f"common.log_interval={max(1, updates // 20)}", "checkpoint.save_interval_updates=0",
            "checkpoint.save_dir=checkpoints", "dataset.validate_interval_updates=0", "dataset.disable_validation=true",
            "optimization.update_freq=[1]", "common.tensorboard_logdir=null", "model.init_from=null",
            f"lr_scheduler.warmup_updates={min(20, updates // 10)}"]
    if args.smoke:
        config = "emotion2vec_tiny"
        over += ["common.bf16=true"] if precision == "bf16" else []
    else:
        config = "emotion2vec_base"
        over += ["dataset.num_workers=4", f"dataset.max_tokens={args.max_tokens}", "task.max_sample_size=160000",
                 "optimization.lr=[5e-4]"]
        over += ["common.bf16=true", "common.fp16=false"] if precision == "bf16" else ["common.bf16=false",
                                                                                     "common.fp16=true"]
    cmd = [str(Path(sys.executable).with_name("fairseq-hydra-train")),
           "--config-dir", str(REPO / "recipes" / "pretrain"), "--config-name", config, *over]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=run, capture_output=True, text=True, timeout=args.hydra_timeout)
    wall = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    (run / "train.log").write_text(log)
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq-hydra-train exited {proc.returncode}; log {run / 'train.log'}:\n{log[-3000:]}")
    losses = train_log_losses(log)
    ckpt = run / "checkpoints" / "checkpoint_last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model_state = state["model"]
    teacher = {k: v for k, v in model_state.items()
               if k.startswith("_ema.") and torch.is_tensor(v) and v.is_floating_point()}
    student_dtypes = sorted({str(v.dtype) for k, v in model_state.items()
                             if not k.startswith("_ema") and torch.is_tensor(v) and v.is_floating_point()})
    result = {
        "config": config, "precision": precision, "updates": updates, "wall_s": round(wall, 1),
        "num_updates_saved": int(state["optimizer_history"][-1]["num_updates"]),
        "losses_logged": len(losses), "all_losses_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "teacher_tensors": len(teacher), "teacher_dtypes": sorted({str(v.dtype) for v in teacher.values()}),
        "student_dtypes_in_checkpoint": student_dtypes, "checkpoint": str(ckpt),
    }
    result["ok"] = (result["all_losses_finite"] and result["teacher_dtypes"] == ["torch.float32"]
                    and result["num_updates_saved"] == updates)
    return result


def extract_rtf(args, device: torch.device, work: Path, checkpoint: str, corpus: Path) -> Dict[str, object]:
    """e2v-extract real-time factor, batched vs one by one, on ``corpus/valid.tsv``."""
    from emotion2vec_plugin.data.manifest import read_manifest
    from emotion2vec_plugin.inference import extract_cli as extract

    manifest = corpus / "valid.tsv"
    audio_s = sum(read_manifest(str(manifest)).sizes) / 16000
    dtype = "fp32" if args.smoke else args.dtype
    out: Dict[str, object] = {"utterances": len(read_manifest(str(manifest))), "audio_s": round(audio_s, 1),
                              "dtype": dtype}
    for name, bs in (("warmup", 16), ("one_by_one", 1), ("batched", 16)):
        argv = [checkpoint, str(manifest), "--out", str(work / f"extract_{name}"), "--batch-size", str(bs),
                "--device", str(device), "--dtype", dtype, "--quiet", "--format", "npy"]
        sync(device)
        t0 = time.perf_counter()
        extract.main(extract.get_parser().parse_args(argv))
        sync(device)
        wall = time.perf_counter() - t0
        if name != "warmup":
            out[name] = {"wall_s": round(wall, 3), "rtf": round(wall / audio_s, 5),
                         "audio_s_per_s": round(audio_s / wall, 1)}
    out["batched_speedup"] = round(out["one_by_one"]["wall_s"] / out["batched"]["wall_s"], 3)
    return out


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="work/gpu_check", help="folder for the corpus, runs and extracted features")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny arch, a few updates: checks the script works")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="train_step / extraction dtype")
    p.add_argument("--arch", default=None, help="train_step arch (default: base; tiny with --smoke)")
    p.add_argument("--batch", type=int, default=None, help="train_step utterances (default 8; 1 with --smoke)")
    p.add_argument("--seconds", type=float, default=None,
                   help="train_step utterance length (default 8; 1 with --smoke)")
    p.add_argument("--clone-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="timed train steps per side (default 10; 1 with --smoke)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps (default 3, compile included; 1 with --smoke)")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled train_step (the default with --smoke)")
    p.add_argument("--bf16-updates", type=int, default=None, help="default 200 (2 with --smoke)")
    p.add_argument("--fp16-updates", type=int, default=None, help="default 100 (2 with --smoke)")
    p.add_argument("--max-tokens", type=int, default=1400000, help="samples per GPU batch in the hydra runs")
    p.add_argument("--hydra-timeout", type=int, default=900)
    p.add_argument("--only", nargs="+", default=None,
                   choices=["train_step", "hydra_bf16", "hydra_fp16", "extract_rtf"], help="run only these sections")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p


def fill_defaults(args) -> None:
    smoke = args.smoke
    defaults = dict(device="cpu" if smoke else "cuda", arch="tiny" if smoke else "base", batch=1 if smoke else 8,
                    seconds=1.0 if smoke else 8.0, steps=1 if smoke else 10, warmup=1 if smoke else 3,
                    bf16_updates=2 if smoke else 200, fp16_updates=2 if smoke else 100)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if smoke:
        args.no_compile = True
        args.dtype = "fp32"
        args.clone_batch = 2


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    fill_defaults(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device; use --smoke for the CPU check"}))
        return 2
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    from emotion2vec_plugin.data.synthetic import write_corpus

    corpus = work / "data"
    if not (corpus / "train.tsv").exists():
        n_train, n_valid = (8, 3) if args.smoke else (400, 100)
        min_len, max_len = (16000, 24000) if args.smoke else (32000, 160000)
        write_corpus(corpus, (("train", n_train), ("valid", n_valid)), min_len=min_len, max_len=max_len)
    report: Dict[str, object] = {"smoke": args.smoke, "device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(device)
        report["bf16_peak_tflops"] = device_peak_tflops(device)
    sections = args.only or ["train_step", "hydra_bf16", "hydra_fp16", "extract_rtf"]
    failed = []
    t_all = time.perf_counter()
    for section in sections:
        t0 = time.perf_counter()
        try:
            if section == "train_step":
                report[section] = train_step(args, device, work)
            elif section == "hydra_bf16":
                report[section] = hydra_run(args, device, work, corpus, "hydra_bf16", "bf16", args.bf16_updates)
            elif section == "hydra_fp16":
                if device.type == "cpu":  # fairseq's fp16 optimizer needs CUDA
                    report[section] = {"skipped": "fp16 training needs CUDA"}
                else:
                    report[section] = hydra_run(args, device, work, corpus, "hydra_fp16", "fp16", args.fp16_updates)
            elif section == "extract_rtf":
                ckpt = work / "hydra_bf16" / "checkpoints" / "checkpoint_last.pt"
                if not ckpt.exists():
                    raise FileNotFoundError(f"{ckpt} missing: extract_rtf needs the hydra_bf16 section's checkpoint")
                report[section] = extract_rtf(args, device, work, str(ckpt), corpus)
            if isinstance(report[section], dict) and report[section].get("ok") is False:
                failed.append(section)
        except Exception as e:  # report and go on with the next section
            report[section] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
            failed.append(section)
        print(f"[gpu_check] {section}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    report["wall_s"] = round(time.perf_counter() - t_all, 1)
    report["failed"] = failed
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
