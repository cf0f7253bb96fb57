"""Summarise the demo's pretraining tries (recipes/dev/demo_try.sh): in-training probe UA by update,
and the last update paired against update 0 (same network, random weights) and log-mel over the
speaker folds (emotion2vec_plugin/evaluation/paired.py).

    .venv/bin/python recipes/dev/summarise_tries.py WORK/tries [--layers last last_gnorm mean mean_gnorm]

Runs named ``CONFIG.sSEED`` (``demo_try.sh WORK CONFIG.s2 ... -- common.seed=2``) are one try
with several training seeds: UA by update is the mean over the seeds, and before pairing every
speaker fold's score is averaged over the seeds (of the last update common to all of them, and of
update 0), so the paired statistic has one difference per speaker fold, as in the demo's report.
Log-mel does not depend on the training seed (the first seed's record is used). Output: one
markdown row per try and layer.
"""

import argparse
import json
import os
import re
from collections import defaultdict
from typing import Dict, List

import numpy as np

from emotion2vec_plugin.evaluation.paired import paired_comparison


def load(run: str) -> List[dict]:
    path = os.path.join(run, "checkpoints", "probe.jsonl")
    if not os.path.isfile(path):
        return []
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def seed_mean(records: List[dict], layer: str) -> dict:
    """Probe records of one update, one per training seed -> {"folds": [{group, UA}]}, UA averaged."""
    by_group: Dict[str, List[float]] = defaultdict(list)
    for r in records:
        for f in r["results"][layer]["folds"]:
            by_group[f["group"]].append(f["UA"])
    return {"folds": [{"group": g, "UA": float(np.mean(v))} for g, v in by_group.items()]}


def describe(cmp: dict, name: str) -> str:
    return (f"vs {name}: {100 * cmp['mean_diff']:+.1f} (CI {100 * cmp['ci'][0]:+.1f}..{100 * cmp['ci'][1]:+.1f}, "
            f"{cmp['wins']}/{cmp['losses']}/{cmp['ties']}, sign p {cmp['sign_p']:.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tries")
    p.add_argument("--layers", nargs="+", default=["last", "last_gnorm", "mean", "mean_gnorm"])
    args = p.parse_args()
    tries: Dict[str, Dict[str, List[dict]]] = defaultdict(dict)  # config -> {seed: records}
    notes = {}
    for name in sorted(os.listdir(args.tries)):
        run = os.path.join(args.tries, name)
        records = load(run)
        if not records:
            continue
        m = re.fullmatch(r"(.+)\.s(\d+)", name)
        config, seed = (m.group(1), m.group(2)) if m else (name, "?")
        tries[config][seed] = records
        over = os.path.join(run, "overrides.txt")
        secs = os.path.join(run, "seconds")
        notes.setdefault(config, []).append(
            f"seed {seed}: {open(secs).read().strip() + ' s' if os.path.isfile(secs) else 'running'}"
            + (f"; {open(over).read().strip()}" if os.path.isfile(over) else ""))
    print("| try | seeds | layer | UA (%) by update, mean over seeds | last update paired (per-fold seed means) |")
    print("|---|---|---|---|---|")
    for config, by_seed in tries.items():
        students = {s: {r["update"]: r for r in recs if r["features"] == "student"} for s, recs in by_seed.items()}
        updates = sorted(set.intersection(*(set(u) for u in students.values())))
        fbank = next((r for recs in by_seed.values() for r in recs if r["features"] == "fbank"), None)
        for layer in args.layers:
            if not updates or layer not in students[next(iter(students))][updates[-1]]["results"]:
                continue
            series = " ".join(
                f"{u}: {100 * np.mean([students[s][u]['results'][layer]['UA'] for s in students]):.1f}" for u in updates)
            paired = []
            last = seed_mean([students[s][updates[-1]] for s in students], layer)
            if updates[0] == 0 and updates[-1] > 0:
                paired.append(describe(paired_comparison(last, seed_mean([students[s][0] for s in students], layer)),
                                       "update 0"))
            ref = "fbank" + layer[layer.index("_"):] if "_" in layer else "fbank"
            if fbank is not None and ref in fbank["results"]:
                paired.append(describe(paired_comparison(last, fbank["results"][ref]),
                                       f"log-mel {100 * fbank['results'][ref]['UA']:.1f}"))
            print(f"| {config} | {','.join(sorted(by_seed))} | {layer} | {series} | {'; '.join(paired)} |")
    print()
    for config, lines in notes.items():
        print(f"- {config}: " + " | ".join(lines))


if __name__ == "__main__":
    main()
