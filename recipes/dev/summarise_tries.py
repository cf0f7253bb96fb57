"""Summarise the demo's pretraining tries (recipes/dev/demo_try.sh): in-training probe UA by update,
and the last update paired against update 0 (same network, random weights) and log-mel over the
speaker folds (emotion2vec_plugin/demo/paired.py).

    .venv/bin/python recipes/dev/summarise_tries.py WORK/tries [--layers last last_gnorm mean mean_gnorm]
"""

import argparse
import json
import os

from emotion2vec_plugin.demo.paired import paired_comparison


def load(run: str):
    path = os.path.join(run, "checkpoints", "probe.jsonl")
    if not os.path.isfile(path):
        return None
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tries")
    p.add_argument("--layers", nargs="+", default=["last", "last_gnorm", "mean", "mean_gnorm"])
    args = p.parse_args()
    for name in sorted(os.listdir(args.tries)):
        run = os.path.join(args.tries, name)
        records = load(run)
        if not records:
            continue
        over = open(os.path.join(run, "overrides.txt")).read().strip() if os.path.isfile(
            os.path.join(run, "overrides.txt")) else ""
        secs = open(os.path.join(run, "seconds")).read().strip() if os.path.isfile(os.path.join(run, "seconds")) else "running"
        student = [r for r in records if r["features"] == "student"]
        fbank = next((r for r in records if r["features"] == "fbank"), None)
        print(f"== {name} ({secs} s): {over}")
        for layer in args.layers:
            series = " ".join(f"{r['update']}:{100 * r['results'][layer]['UA']:.1f}" for r in student
                              if layer in r["results"])
            line = f"  {layer:11s} {series}"
            ref = "fbank" + layer[layer.index("_"):] if "_" in layer else "fbank"
            if fbank is not None and ref in fbank["results"]:
                line += f" | log-mel {100 * fbank['results'][ref]['UA']:.1f}"
            last, first = student[-1], student[0]
            if layer in last["results"] and last["update"] > 0 and first["update"] == 0:
                c0 = paired_comparison(last["results"][layer], first["results"][layer])
                line += (f" | vs update 0: {100 * c0['mean_diff']:+.1f} (CI {100 * c0['ci'][0]:+.1f}..{100 * c0['ci'][1]:+.1f},"
                         f" {c0['wins']}/{c0['losses']}/{c0['ties']})")
                if fbank is not None and ref in fbank["results"]:
                    cf = paired_comparison(last["results"][layer], fbank["results"][ref])
                    line += (f" | vs log-mel: {100 * cf['mean_diff']:+.1f} (CI {100 * cf['ci'][0]:+.1f}.."
                             f"{100 * cf['ci'][1]:+.1f}, {cf['wins']}/{cf['losses']}/{cf['ties']})")
            print(line)


if __name__ == "__main__":
    main()
