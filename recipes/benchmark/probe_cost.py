"""Cost of the in-training emotion probe (task.probe_data), without a training run.

    .venv/bin/python recipes/benchmark/probe_cost.py LABELS_DIR --split demo --arch small

Times one probe (extraction + linear-probe fits, as at a validation) of a randomly initialised
model of ``recipes/pretrain/arch/ARCH.yaml`` on the labelled set, with one utterance per batch
(the CPU default) and with padded batches of 16 (the GPU default), then the logistic-regression
cross-validations alone on random features of IEMOCAP's size (5531 x 768, 5 sessions, 4 classes).

    .venv/bin/python recipes/benchmark/probe_cost.py --base-share [--probe-hours 7 --threads 2]

Share of the probe in the base recipe's training time, without a GPU: counts the FLOPs (torch's
FlopCounterMode) and times, in the same run, one base training step (forward, backward, AdamW, EMA;
2 x 4 s, clone_batch 8, released dropouts) and one base inference forward of the probe (8 s, all
layers); per audio-second, the ratio of the two is a property of the model, not of the machine.
Then: probe audio x inference cost / (validate_interval_updates x audio per update x training
cost), with the interval and the audio per update read from recipes/pretrain (emotion2vec_base.yaml,
data/base.yaml, run/1gpu.yaml: max_tokens x update_freq samples).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the checkout's devtools/ (not installed)

from devtools.benchmark import arch_fields, build_model, count_step_flops, train_step  # noqa: E402


def _recipe(name: str) -> dict:
    return yaml.safe_load((REPO / "recipes" / "pretrain" / name).read_text())


def base_share(probe_hours: float) -> None:
    """FLOPs and CPU time of a base training step and of a base probe forward, per audio-second."""
    torch.manual_seed(0)
    model = build_model("base", torch.device("cpu"), torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch, seconds = 2, 4.0
    source = torch.randn(batch, int(seconds * 16000))
    probe_wav = torch.randn(1, int(8.0 * 16000))

    def train():
        train_step(model, optimizer, source, torch.arange(batch), 1)

    @torch.no_grad()
    def probe():
        model.eval()
        model.extract_features(probe_wav, None)
        model.train()

    rows = {}
    for name, fn, audio_s in (("train step", train, batch * seconds), ("probe forward", probe, 8.0)):
        fn()  # warm-up
        flops = count_step_flops(fn)
        times = []
        for _ in range(3):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        times.sort()
        rows[name] = (flops / audio_s, times[1] / audio_s)
        print(f"{name}: {rows[name][0] / 1e9:.1f} GFLOP and {rows[name][1]:.3f} CPU s per audio-second "
              f"({audio_s:g} s of audio, median of 3)")
    flop_ratio = rows["train step"][0] / rows["probe forward"][0]
    time_ratio = rows["train step"][1] / rows["probe forward"][1]
    print(f"training / probe cost per audio-second: {flop_ratio:.1f}x by FLOPs, {time_ratio:.1f}x by CPU time")

    interval = _recipe("emotion2vec_base.yaml")["dataset"]["validate_interval_updates"]
    run = _recipe("run/1gpu.yaml")
    audio_per_update = run["dataset"]["max_tokens"] * run["optimization"]["update_freq"][0] / 16000
    trained = interval * audio_per_update
    probed = probe_hours * 3600
    for label, ratio in (("FLOPs", flop_ratio), ("CPU time", time_ratio)):
        share = probed / (probed + trained * ratio)
        print(f"base recipe ({interval} updates x {audio_per_update:.0f} s of audio between validations, "
              f"probe of {probe_hours:g} h): probe share of training {100 * share:.3f}% by {label}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("labels", nargs="?", help="folder with SPLIT.tsv, SPLIT.emo, SPLIT.group (e2v-labels output)")
    p.add_argument("--base-share", action="store_true", help="the probe's share of the base recipe (see above)")
    p.add_argument("--probe-hours", type=float, default=7.0, help="probe set audio (IEMOCAP's 5531: about 7 h)")
    p.add_argument("--split", default="demo")
    p.add_argument("--arch", default="small", help="recipes/pretrain/arch/<ARCH>.yaml")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.base_share:
        base_share(args.probe_hours)
        return
    if not args.labels:
        p.error("give LABELS_DIR (or --base-share)")

    from emotion2vec_plugin.tasks import training_probe
    from emotion2vec_plugin.evaluation.linear_probe import linear_probe_cv
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig, Emotion2vecModel

    model = Emotion2vecModel(Emotion2vecConfig(**arch_fields(args.arch), seed=1))
    probe = training_probe.TrainingProbe(training_probe.ProbeSettings(data=args.labels, split=args.split))
    probe.run(model, 0)  # reads and caches the audio, as the first probe of a run does
    plan = training_probe.plan_batches
    for batch in (1, 16):
        training_probe.plan_batches = lambda lengths, todo, _b, m, batch=batch: plan(lengths, todo, batch, m)
        t0 = time.monotonic()
        metrics = probe.run(model, 0)
        print(f"one probe of {len(probe.data)} utterances, arch {args.arch}, batches of {batch}: "
              f"{time.monotonic() - t0:.1f} s (probe_ua {metrics['probe_ua']:.3f})")
    training_probe.plan_batches = plan
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5531, 768)).astype(np.float32)
    labels = [f"c{v}" for v in rng.integers(0, 4, len(x))]
    groups = [f"Ses{v}" for v in rng.integers(1, 6, len(x))]
    for per_group in (False, True):
        t0 = time.monotonic()
        linear_probe_cv(x, labels, groups, per_group=per_group)
        print(f"linear-probe cross-validation, 5531 x 768, 5 groups, per_group={per_group}: "
              f"{time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
