"""``e2v-demo-report WORK``: the demo's result table, JSON report, bar chart and stage timings.

Reads what ``recipes/demo.sh`` left in WORK: ``probe/{pretrained,random,fbank}.json`` (written by
``e2v-probe``), ``timings.tsv`` and the pretraining log. Writes ``WORK/report.json``,
``WORK/report.md`` and ``WORK/probe_scores.png``, and prints the table. The verdict line says
plainly whether pretraining beat the same architecture with random weights.
"""

import argparse
import json
import logging
import os
import re
from typing import Dict, List, Optional

FEATURES = {
    "pretrained": "emotion2vec (pretrained here)",
    "random": "same architecture, random weights",
    "fbank": "log-mel filterbank (80)",
}
METRICS = ("WA", "UA", "WF1")


def load_probe(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_timings(path: str) -> Dict[str, int]:
    """Seconds per stage; a stage run twice keeps its last time."""
    out: Dict[str, int] = {}
    if os.path.isfile(path):
        for line in open(path, encoding="utf-8"):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                out[parts[1]] = int(parts[2])
    return out


def last_valid_losses(log_path: str) -> Dict[str, float]:
    """The last validation line of the pretraining log: loss, loss_frame, loss_utt, ..."""
    if not os.path.isfile(log_path):
        return {}
    last = None
    for line in open(log_path, encoding="utf-8", errors="replace"):
        if "[valid]" in line and "valid on" in line:
            last = line
    if last is None:
        return {}
    return {k: float(v) for k, v in re.findall(r"\| (loss\w*|target_var|pred_var|num_updates) ([-\d.e]+)", last)}


def build_report(work: str) -> dict:
    rows: List[dict] = []
    for key, name in FEATURES.items():
        probe = load_probe(os.path.join(work, "probe", f"{key}.json"))
        if probe is None:
            continue
        summary = probe["summary"]
        rows.append({"features": key, "description": name,
                     **{m: summary[m]["mean"] for m in METRICS}, **{f"{m}_std": summary[m]["std"] for m in METRICS},
                     "folds": len(probe["folds"])})
    by_key = {r["features"]: r for r in rows}
    verdict = None
    if "pretrained" in by_key and "random" in by_key:
        gain = by_key["pretrained"]["UA"] - by_key["random"]["UA"]
        spread = max(by_key["pretrained"]["UA_std"], by_key["random"]["UA_std"])
        if gain > spread:
            verdict = f"pretraining beats random weights by {100 * gain:.1f} UA points (more than one fold std)"
        elif gain > 0:
            verdict = (f"pretraining is ahead of random weights by only {100 * gain:.1f} UA points, within one fold "
                       f"std ({100 * spread:.1f}): no clear gain on this task")
        else:
            verdict = f"pretraining did NOT beat random weights on this task ({100 * gain:.1f} UA points)"
    return {
        "rows": rows,
        "verdict": verdict,
        "pretraining_valid": last_valid_losses(os.path.join(work, "pretrain", "hydra_train.log")),
        "timings_s": read_timings(os.path.join(work, "timings.tsv")),
    }


def format_table(report: dict) -> str:
    lines = ["| features | WA | UA | WF1 |", "|---|---|---|---|"]
    for r in report["rows"]:
        cells = [f"{100 * r[m]:.1f} ± {100 * r[m + '_std']:.1f}" for m in METRICS]
        lines.append(f"| {r['description']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_scores(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = report["rows"]
    x = np.arange(len(METRICS))
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, r in enumerate(rows):
        ax.bar(x + i * width, [100 * r[m] for m in METRICS], width, yerr=[100 * r[m + "_std"] for m in METRICS],
               label=r["description"], capsize=3)
    ax.set_xticks(x + width * (len(rows) - 1) / 2, METRICS)
    ax.set_ylabel("% (mean ± std over speaker folds)")
    ax.set_title("Leave-one-speaker-out probe on the demo corpus")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Summarise a recipes/demo.sh run.")
    p.add_argument("work", help="the demo's work folder")
    return p


def main(args) -> dict:
    report = build_report(args.work)
    if not report["rows"]:
        raise SystemExit(f"e2v-demo-report: no probe results in {os.path.join(args.work, 'probe')}; run stage 6 first")
    with open(os.path.join(args.work, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    plot_scores(report, os.path.join(args.work, "probe_scores.png"))
    timings = "\n".join(f"| {stage} | {secs} |" for stage, secs in report["timings_s"].items())
    md = (f"# Demo report\n\n{format_table(report)}\n\n**Verdict:** {report['verdict']}\n\n"
          f"Pretraining, last validation: {report['pretraining_valid']}\n\n"
          f"| stage | seconds |\n|---|---|\n{timings}\n")
    with open(os.path.join(args.work, "report.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return report


def cli_main() -> None:
    # force: importing fairseq (through the package) configured the root logger at DEBUG
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args()
    report = main(args)
    print(format_table(report))
    print(f"\nverdict: {report['verdict']}")
    print("stage timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()))
    print(f"report: {os.path.join(args.work, 'report.md')}, {os.path.join(args.work, 'report.json')}, "
          f"plots: {os.path.join(args.work, 'probe_scores.png')}, {os.path.join(args.work, 'probe')}/*.png")


if __name__ == "__main__":
    cli_main()
