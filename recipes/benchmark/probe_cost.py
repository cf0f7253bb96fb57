"""Cost of the in-training emotion probe (task.probe_data), without a training run.

    .venv/bin/python recipes/benchmark/probe_cost.py LABELS_DIR --split demo --arch small

Times one probe (extraction + linear-probe fits, as at a validation) of a randomly initialised
model of ``recipes/pretrain/arch/ARCH.yaml`` on the labelled set, with one utterance per batch
(the CPU default) and with padded batches of 16 (the GPU default), then the logistic-regression
cross-validations alone on random features of IEMOCAP's size (5531 x 768, 5 sessions, 4 classes).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("labels", help="folder with SPLIT.tsv, SPLIT.emo, SPLIT.group (e2v-labels output)")
    p.add_argument("--split", default="demo")
    p.add_argument("--arch", default="small", help="recipes/pretrain/arch/<ARCH>.yaml")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from emotion2vec_plugin.downstream import training_probe
    from emotion2vec_plugin.downstream.linear_probe import linear_probe_cv
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig, Emotion2vecModel

    fields = yaml.safe_load((REPO / "recipes" / "pretrain" / "arch" / f"{args.arch}.yaml").read_text())["model"]
    fields.pop("_name", None)
    model = Emotion2vecModel(Emotion2vecConfig(**fields, seed=1))
    probe = training_probe.TrainingProbe(training_probe.ProbeSettings(data=args.labels, split=args.split))
    probe.run(model, 0)  # reads and caches the audio, as the first probe of a run does
    plan = training_probe.plan_length_batches
    for batch in (1, 16):
        training_probe.plan_length_batches = lambda lengths, _b, m, batch=batch: plan(lengths, batch, m)
        t0 = time.monotonic()
        metrics = probe.run(model, 0)
        print(f"one probe of {len(probe.data)} utterances, arch {args.arch}, batches of {batch}: "
              f"{time.monotonic() - t0:.1f} s (probe_ua {metrics['probe_ua']:.3f})")
    training_probe.plan_length_batches = plan
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
