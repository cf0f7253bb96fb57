"""One training step of ours against fairseq's own data2vec 2.0, interleaved in one process.

fairseq's ``examples/data2vec`` (shipped inside the installed wheel) is copied to a temp dir and
patched to import on Python 3.11 by ``devtools/reference_data2vec.py`` (the same helper the reference
tests use; the plugin never imports it). Both models get the same weights (ours loaded strictly into
``Data2VecMultiModel``), the same batches and the same precomputed masks, the same optimizer (torch
AdamW) and both do their own EMA step before each forward, as in fairseq training. A step is
forward + backward + optimizer step + EMA. The two take turns step by step (the order flips every
step) so that other load on the machine slows both alike; the JSON printed at the end has the
median step time of each (wall and CPU seconds of the process), the median of the per-step ratios
and the throughput ratio. On a shared CPU, ``--threads 1`` and the CPU-time ratio are the stable
measure (waiting for a core is not counted).

    OMP_NUM_THREADS=2 python recipes/benchmark/train_step_vs_data2vec.py --arch base --batch 2 \\
        --seconds 4 --steps 6 --threads 2
    python recipes/benchmark/train_step_vs_data2vec.py --arch base --profile   # where the step goes

LayerDrop: data2vec 2.0 draws it from numpy, ours from torch, so with the released rates the two
would drop different blocks; ``--layerdrop off`` (default) sets both rates to 0 so that both do the
same work; ``--layerdrop released`` keeps the arch's rates (noisier). Every other dropout is on.
"""

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the checkout's devtools/ (shared with the tests; not installed)

from devtools.benchmark import arch_fields, count_step_flops, timed  # noqa: E402
from emotion2vec_plugin.criterions.emotion2vec_criterion import (  # noqa: E402
    Emotion2vecCriterion,
    Emotion2vecCriterionConfig,
)
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig, Emotion2vecModel  # noqa: E402
from emotion2vec_plugin.modules.masking import compute_span_mask  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_config(arch: str, layerdrop: str = "off", **overrides) -> Emotion2vecConfig:
    fields = {**arch_fields(arch), "seed": 1, "utterance_mode": "token", **overrides}
    if layerdrop == "off":
        fields.update(layerdrop=0.0, prenet_layerdrop=0.0)
    # data2vec 2.0's cls_loss reads the last extra token: the objective both run here
    return Emotion2vecConfig(**fields)


def build_ours(cfg: Emotion2vecConfig, device: torch.device) -> Emotion2vecModel:
    torch.manual_seed(0)
    model = Emotion2vecModel(cfg).to(device).train()
    model.teacher.to(device)
    return model


def build_data2vec(cfg: Emotion2vecConfig, ours: Emotion2vecModel, device: torch.device, workdir: Path):
    """fairseq's Data2VecMultiModel in the shape of ``cfg`` with ``ours``'s weights (student and teacher)."""
    from devtools.reference_data2vec import data2vec_config, data2vec_state, load_data2vec

    d2v = load_data2vec(workdir)
    torch.manual_seed(0)
    theirs = d2v.Data2VecMultiModel(data2vec_config(d2v, cfg), [d2v.Modality.AUDIO])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its state_dict passes positional args
        theirs.load_state_dict(data2vec_state(ours.state_dict()), strict=True)
    theirs = theirs.to(device).train()
    if device.type != "cpu":
        # its EMA teacher is not a submodule: its forward moves it on first use, but the EMA step of
        # set_num_updates runs before that, so move it (module and fp32 copies) the way that forward does
        theirs.ema.model = theirs.ema.model.to(device)

        def to_device(d):
            for k, v in d.items():
                d[k] = to_device(v) if isinstance(v, dict) else v.to(device)
            return d

        to_device(theirs.ema.fp32_params)
    return theirs


def make_batches(cfg: Emotion2vecConfig, ours: Emotion2vecModel, n: int, batch: int, seconds: float,
                 device: torch.device) -> List[Dict[str, torch.Tensor]]:
    """``n`` batches of normalised noise with dataset-side masks (the loader-worker path of both)."""
    S = int(seconds * 16000)
    T = int(ours.audio.local_encoder.output_lengths(torch.tensor([S])))
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(100 + i)
        wav = torch.nn.functional.layer_norm(torch.randn(batch, S, generator=g), (S,))
        mask = compute_span_mask(batch * cfg.clone_batch, T, cfg.mask_prob, cfg.mask_length, cfg.mask_prob_adjust, g)
        out.append({"source": wav.to(device), "precomputed_mask": mask.to(device), "id": torch.arange(batch)})
    return out


def autocast(device: torch.device, dtype_name: str):
    dtype = DTYPES[dtype_name]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def step_ours(model, crit, opt, net_input, update: int, device, dtype_name: str) -> torch.Tensor:
    model.set_num_updates(update)  # EMA step, as fairseq does before each forward
    with autocast(device, dtype_name):
        loss, n, _ = crit(model, {"net_input": net_input})
    (loss / n).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def step_data2vec(model, opt, net_input, update: int, device, dtype_name: str) -> torch.Tensor:
    model.set_num_updates(update)  # its EMA step
    with autocast(device, dtype_name):
        res = model(net_input["source"], id=net_input["id"], precomputed_mask=net_input["precomputed_mask"])
        loss = sum(v.sum() for v in res["losses"].values())
    (loss / res["sample_size"]).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def compare(args, device: torch.device, workdir: Path, compile_ours: bool = False,
            prepare_data2vec: Optional[Callable] = None) -> Dict[str, object]:
    """Interleaved steps of ours and data2vec 2.0; returns the JSON-able result. ``prepare_data2vec``
    (e.g. compiling its blocks) is called on data2vec 2.0's model after the weights are loaded."""
    cfg = model_config(args.arch, args.layerdrop, clone_batch=args.clone_batch,
                       **({"compile": True} if compile_ours else {}))
    ours = build_ours(cfg, device)
    theirs = build_data2vec(cfg, ours, device, workdir)
    if prepare_data2vec is not None:
        prepare_data2vec(theirs)
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(alpha=1.0, loss_reduction="data2vec"), task=None)
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    opt_t = torch.optim.AdamW(theirs.parameters(), lr=1e-5)
    batches = make_batches(cfg, ours, 2, args.batch, args.seconds, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    sides = ["ours", "data2vec"]
    if args.baseline:  # ours as it was before the speed work, the frozen reference of the equivalence test
        from devtools.speed_reference import reference_path

        before = build_ours(cfg, device)
        before.load_state_dict(ours.state_dict())
        opt_b = torch.optim.AdamW(before.parameters(), lr=1e-5)
        sides.append("ours_before")

    def run(side: str, i: int):
        b = batches[i % len(batches)]
        if side == "ours":
            return lambda: step_ours(ours, crit, opt_o, b, i + 1, device, args.dtype)
        if side == "ours_before":
            def step_before():
                with reference_path():
                    return step_ours(before, crit, opt_b, b, i + 1, device, args.dtype)
            return step_before
        return lambda: step_data2vec(theirs, opt_t, b, i + 1, device, args.dtype)

    times: Dict[str, List[float]] = {k: [] for k in sides}
    cpu: Dict[str, List[float]] = {k: [] for k in sides}
    peak: Dict[str, float] = {}
    for i in range(args.warmup + args.steps):
        order = sides if i % 2 == 0 else sides[::-1]
        for side in order:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t, c = timed(run(side, i), device)
            if device.type == "cuda":
                peak[side] = max(peak.get(side, 0.0), torch.cuda.max_memory_allocated() / 2**30)
            if i >= args.warmup:
                times[side].append(t)
                cpu[side].append(c)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    audio = args.batch * args.seconds
    result: Dict[str, object] = {
        "arch": args.arch, "device": str(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
        "batch": args.batch, "seconds": args.seconds, "clone_batch": cfg.clone_batch, "layerdrop": args.layerdrop,
        "compile": compile_ours, "steps": args.steps, "warmup": args.warmup,
        "step_s": {k: round(v, 4) for k, v in med.items()},
        "all_step_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "audio_s_per_s": {k: round(audio / v, 3) for k, v in med.items()},
        "speedup_median_steps": round(med["data2vec"] / med["ours"], 4),
        "speedup_paired": round(statistics.median(t / o for o, t in zip(times["ours"], times["data2vec"])), 4),
        # CPU seconds of the process per step: on a shared machine far less noisy than wall time
        # (time spent waiting for a core is not counted), but it includes OpenMP threads spinning
        "cpu_s": {k: round(v, 4) for k, v in med_cpu.items()},
        "all_cpu_s": {k: [round(t, 4) for t in v] for k, v in cpu.items()},
        "speedup_cpu_s": round(med_cpu["data2vec"] / med_cpu["ours"], 4),
    }
    if args.baseline:
        result["ours_before_vs_data2vec"] = {"wall": round(med["data2vec"] / med["ours_before"], 4),
                                             "cpu_s": round(med_cpu["data2vec"] / med_cpu["ours_before"], 4)}
    if peak:
        result["peak_mem_gib"] = {k: round(v, 3) for k, v in peak.items()}
    if args.count_flops:
        step_i = args.warmup + args.steps
        # model FLOPs, counted on ours: both run the same architecture on the same batch (counting
        # data2vec's step trips FlopCounterMode's module tracker on its no-grad teacher)
        flops = count_step_flops(run("ours", step_i))
        result["tflop_per_step"] = float(f"{flops / 1e12:.5g}")
        result["tflops"] = {k: float(f"{flops / v / 1e12:.4g}") for k, v in med.items()}
        if args.peak_tflops:
            result["peak_tflops"] = args.peak_tflops
            result["mfu"] = {k: round(flops / v / 1e12 / args.peak_tflops, 4) for k, v in med.items()}
    return result


@contextmanager
def labelled(obj, names: Dict[str, str]):
    """Wrap methods of ``obj`` (instance-level) in ``torch.profiler.record_function`` ranges."""
    originals = {}
    for attr, label in names.items():
        fn = getattr(obj, attr)
        originals[attr] = fn

        def wrapped(*a, _fn=fn, _label=label, **k):
            with torch.profiler.record_function(_label):
                return _fn(*a, **k)

        obj.__dict__[attr] = wrapped  # shadows the class's method on this instance only
    try:
        yield
    finally:
        for attr in originals:
            del obj.__dict__[attr]


def profile(args, device: torch.device, workdir: Path) -> Dict[str, object]:
    """torch.profiler over ``args.steps`` steps of each side: self CPU time per stage (forward pieces,
    backward, optimizer, EMA) and per op class (matmul/conv, attention, elementwise and the rest)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    cfg = model_config(args.arch, args.layerdrop, clone_batch=args.clone_batch)
    ours = build_ours(cfg, device)
    theirs = build_data2vec(cfg, ours, device, workdir)
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(alpha=1.0, loss_reduction="data2vec"), task=None)
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    opt_t = torch.optim.AdamW(theirs.parameters(), lr=1e-5)
    batches = make_batches(cfg, ours, 2, args.batch, args.seconds, device)
    for i in range(args.warmup):
        step_ours(ours, crit, opt_o, batches[i % 2], i + 1, device, args.dtype)
        step_data2vec(theirs, opt_t, batches[i % 2], i + 1, device, args.dtype)

    def staged(model, opt, forward, i):
        with record_function("ema"):
            model.set_num_updates(i)
        with record_function("forward"), autocast(device, args.dtype):
            loss, n = forward()
        with record_function("backward"):
            (loss / n).backward()
        with record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    def fwd_ours(b):
        loss, n, _ = crit(ours, {"net_input": b})
        return loss, n

    def fwd_theirs(b):
        res = theirs(b["source"], id=b["id"], precomputed_mask=b["precomputed_mask"])
        return sum(v.sum() for v in res["losses"].values()), res["sample_size"]

    out: Dict[str, object] = {}
    fe = theirs.modality_encoders["AUDIO"]
    for side in ("ours", "data2vec"):
        if side == "ours":  # fwd.student includes fwd.decoder
            stages = [(ours, {"local_features": "fwd.cnn", "student_forward": "fwd.student", "decode": "fwd.decoder",
                              "teacher_targets": "fwd.teacher", "pair_outputs": "fwd.pair_targets"})]
        else:  # its student and teacher run inline in forward: label modules (teacher: its blocks only)
            stages = [(fe.local_encoder, {"forward": "fwd.cnn"}), (fe.decoder, {"forward": "fwd.decoder"})]
            stages += [(blk, {"forward": "fwd.teacher_blocks"}) for blk in theirs.ema.model.blocks]
        with ExitStack() as stack:
            for obj, names in stages:
                stack.enter_context(labelled(obj, names))
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                for i in range(args.steps):
                    b = batches[i % 2]
                    if side == "ours":
                        staged(ours, opt_o, lambda: fwd_ours(b), args.warmup + 1 + i)
                    else:
                        staged(theirs, opt_t, lambda: fwd_theirs(b), args.warmup + 1 + i)
        events = prof.key_averages()
        ranges = {e.key: e.cpu_time_total / 1e3 / args.steps for e in events
                  if e.key in ("ema", "forward", "backward", "optimizer") or e.key.startswith("fwd.")}
        by_class: Dict[str, float] = {}
        for e in events:
            if e.key in ranges or e.key.startswith("ProfilerStep"):
                continue
            by_class[op_class(e.key)] = by_class.get(op_class(e.key), 0.0) + e.self_cpu_time_total / 1e3 / args.steps
        top = sorted(((e.self_cpu_time_total / 1e3 / args.steps, e.key) for e in events), reverse=True)[:args.top]
        out[side] = {"ms_per_step_by_stage": {k: round(v, 1) for k, v in sorted(ranges.items())},
                     "self_ms_per_step_by_op_class": {k: round(v, 1) for k, v in sorted(by_class.items())},
                     "top_ops_self_ms": [[k, round(v, 1)] for v, k in top]}
    return out


def op_class(name: str) -> str:
    n = name.lower()
    if any(s in n for s in ("addmm", "aten::mm", "bmm", "matmul", "linear", "conv", "mkldnn")):
        return "matmul_conv"
    if any(s in n for s in ("attention", "softmax")):
        return "attention"
    if any(s in n for s in ("layer_norm", "gelu", "dropout", "bernoulli", "mul", "add", "div", "sub", "native_norm",
                            "instance_norm", "batch_norm", "pow", "sum", "mean", "var", "sqrt", "clamp", "abs",
                            "_foreach", "lerp", "fill", "neg", "exp")):
        return "elementwise_reduction"
    if any(s in n for s in ("copy", "clone", "contiguous", "cat", "index", "gather", "scatter", "repeat",
                            "masked", "pad", "nonzero", "stack", "empty", "zero")):
        return "copy_index"
    return "other"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="base", help="recipes/pretrain/arch/<arch>.yaml")
    p.add_argument("--batch", type=int, default=2, help="utterances per step (each cloned clone_batch times)")
    p.add_argument("--seconds", type=float, default=4.0, help="utterance length")
    p.add_argument("--clone-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    p.add_argument("--layerdrop", choices=["off", "released"], default="off")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="autocast dtype (weights stay fp32)")
    p.add_argument("--compile", action="store_true", help="ours with model.compile=true")
    p.add_argument("--baseline", action="store_true",
                   help="also time ours before the speed work (tests/test_speed_equivalence.py's reference path)")
    p.add_argument("--count-flops", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="profile stages instead of timing")
    p.add_argument("--top", type=int, default=15, help="ops listed with --profile")
    p.add_argument("--workdir", default=None, help="where the patched data2vec copy goes (default: a temp dir)")
    return p


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = get_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        result = profile(args, device, workdir) if args.profile else compare(args, device, workdir, args.compile)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
