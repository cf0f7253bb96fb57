"""Summarise recipes/dev/utterance_targets.sh: probe UA per utterance target at the last update,
and paired comparisons of the targets over (training seed x speaker fold) pairs.

Usage: python recipes/dev/compare_utterance_targets.py WORK/meas [--update N]
"""

import argparse
import glob
import json
import os
from collections import defaultdict

from emotion2vec_plugin.evaluation.paired import paired_comparison, verdict

KEYS = ("last", "last_gnorm", "mean", "mean_gnorm")


def last_probe(run: str, update: int = None) -> dict:
    """The student probe at ``update`` (default: the last one) of a run's checkpoints/probe.jsonl."""
    rows = [json.loads(line) for line in open(os.path.join(run, "checkpoints", "probe.jsonl"))]
    rows = [r for r in rows if r["features"] == "student" and (update is None or r["update"] == update)]
    return max(rows, key=lambda r: r["update"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("meas", help="folder of runs named TARGET.sSEED")
    p.add_argument("--update", type=int, default=None, help="probe at this update (default: the last)")
    args = p.parse_args()
    runs = defaultdict(dict)
    for run in sorted(glob.glob(os.path.join(args.meas, "*.s*"))):
        target, seed = os.path.basename(run).rsplit(".s", 1)
        runs[target][seed] = last_probe(run, args.update)
    print("| utterance target | seeds | update | " + " | ".join(f"UA {k}" for k in KEYS) + " |")
    print("|---|---|---|" + "---|" * len(KEYS))
    for target, by_seed in runs.items():
        cells = []
        for k in KEYS:
            ua = [100 * r["results"][k]["UA"] for r in by_seed.values()]
            cells.append(" / ".join(f"{u:.1f}" for u in ua) + f" (mean {sum(ua) / len(ua):.1f})")
        updates = sorted({r["update"] for r in by_seed.values()})
        print(f"| {target} | {','.join(sorted(by_seed))} | {updates} | " + " | ".join(cells) + " |")

    def pooled(target: str, key: str) -> dict:  # folds of every seed as one paired sample
        return {"folds": [{"group": f"s{seed}/{f['group']}", "UA": f["UA"]}
                          for seed, r in runs[target].items() for f in r["results"][key]["folds"]]}

    # references from the first run: the same network at update 0 (random weights) and log-mel
    first = sorted(glob.glob(os.path.join(args.meas, "*.s*")))[0]
    rows = [json.loads(line) for line in open(os.path.join(first, "checkpoints", "probe.jsonl"))]
    init = next(r for r in rows if r["features"] == "student" and r["update"] == 0)
    fbank = next((r for r in rows if r["features"] == "fbank"), None)
    print("| random weights (update 0) | 1 | [0] | "
          + " | ".join(f"{100 * init['results'][k]['UA']:.1f}" for k in KEYS) + " |")
    if fbank:
        print(f"| log-mel | - | - | {100 * fbank['results']['fbank']['UA']:.1f} | "
              f"{100 * fbank['results']['fbank_gnorm']['UA']:.1f} | | |")
    print()
    names = list(runs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for key in ("last", "last_gnorm"):
                cmp = paired_comparison(pooled(a, key), pooled(b, key))
                print(f"- {key}: " + verdict(cmp, a, b).replace("speaker folds", "seed x speaker folds"))


if __name__ == "__main__":
    main()
