"""``e2v-demo-report WORK``: the demo's result table, JSON report, bar chart and stage timings.

Reads what ``recipes/demo.sh`` left in WORK: ``probe/{pretrained,random,fbank}.json`` (written by
``e2v-probe``), ``timings.tsv`` and the pretraining log. Writes ``WORK/report.json``,
``WORK/report.md``, ``WORK/probe_scores.png`` and ``WORK/curves.png`` (the pretraining run's
learning curves, e2v-curves), and prints the table. The verdict line says whether pretraining
beat the same architecture with random weights by a paired comparison over the same speaker
folds (evaluation/paired.py: per-fold differences of the seed-averaged UA, t confidence interval,
sign test), for raw and per-speaker normalised features (``probe/*.spknorm.json``). The second
task (pitch contours with matched global statistics, ``probe/contour/``, demo/corpus.py) gets the
same tables and verdicts, with the corpus builder's measured per-class prosody
(``corpus/contour_stats.json``).
"""

import argparse
import json
import logging
import os
import re
from typing import Dict, List, Optional

from ..cli import run_main
from ..evaluation.metrics import METRICS, TITLES
from . import finetune_stage

FEATURES = {
    "pretrained": "emotion2vec (pretrained here)",
    "random": "same architecture, random weights",
    "fbank": "log-mel filterbank (80)",
}


def load_probe(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not an e2v-probe results file ({e}); re-run stage 6 (e2v-probe)") from None


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


# probe variants written by recipes/demo.sh stage 6: raw features, and per-speaker normalised ones
VARIANTS = {"": "raw features", ".spknorm": "per-speaker normalised features (e2v-probe --normalize-per-group)"}
# the references the pretrained features are paired against: probe file key -> name in verdicts
REFERENCES = {"random": "random weights", "fbank": "log-mel"}


def probe_rows(work: str, variant: str, subdir: str = "probe") -> List[dict]:
    rows: List[dict] = []
    for key, name in FEATURES.items():
        probe = load_probe(os.path.join(work, subdir, f"{key}{variant}.json"))
        if probe is None:
            continue
        summary = probe["summary"]
        rows.append({"features": key, "description": name,
                     **{m: summary[m]["mean"] for m in METRICS}, **{f"{m}_std": summary[m]["std"] for m in METRICS},
                     "folds": len(probe["folds"]), "seeds": len(probe.get("seed_runs", [])) or 1,
                     "fold_UA": {f["group"]: f["UA"] for f in probe["folds"]}})
    return rows


def paired_verdicts(work: str, variant: str, subdir: str = "probe") -> List[dict]:
    """Pretrained vs random weights and vs log-mel, paired over the same speaker folds (evaluation/paired.py)."""
    from ..evaluation.paired import paired_comparison, verdict

    probes = {k: load_probe(os.path.join(work, subdir, f"{k}{variant}.json")) for k in FEATURES}
    out = []
    for other, name in REFERENCES.items():
        if probes["pretrained"] is not None and probes[other] is not None:
            cmp = paired_comparison(probes["pretrained"], probes[other], "UA")
            out.append({"a": "pretrained", "b": other, **cmp, "verdict": verdict(cmp, "pretraining", name)})
    return out


def learning_curve(work: str) -> Optional[dict]:
    """The pretraining run's curves (e2v-curves): WORK/curves.png and the probe UA series."""
    from ..evaluation import curves

    run = os.path.join(work, "pretrain")
    data = curves.build_curves(run)
    if not data["train"]:
        return None
    curves.plot_curves(data, os.path.join(work, "curves.png"), "demo pretraining")
    return {"png": "curves.png", "probe_ua": curves.probe_series(data["probe"]),
            "log_mel": curves.reference_lines(data["probe"]),
            "target_var": {u: v["target_var"] for u, v in data["train"].items() if "target_var" in v},
            "command": f"e2v-curves {run} --out {os.path.join(work, 'curves.png')}"}


def task_results(work: str, subdir: str = "probe") -> dict:
    """One labelled task's probe tables (raw and per-speaker normalised) and paired verdicts; the
    headline verdict is pretrained vs random weights on raw features."""
    from ..evaluation.paired import aim

    paired = {variant.lstrip(".") or "raw": paired_verdicts(work, variant, subdir) for variant in VARIANTS}
    raw_random = [p for p in paired["raw"] if p["b"] == "random"]
    return {"rows": probe_rows(work, "", subdir), "rows_spknorm": probe_rows(work, ".spknorm", subdir),
            "verdict": raw_random[0]["verdict"] if raw_random else None, "paired": paired,
            "aim": {variant: aim([(REFERENCES[p["b"]], p) for p in items]) for variant, items in paired.items()}}


def format_aim(results: dict, curves: str) -> str:
    """The aim's line: met (with which features) or not, each variant's numbers, where the curves are."""
    short = {"raw": "raw", "spknorm": "per-speaker normalised"}
    met = [short[v] for v, a in results["aim"].items() if a["met"]]
    detail = "; ".join(f"{short[v]} features: {a['text']}" for v, a in results["aim"].items() if a["text"])
    head = (f"met with {' and '.join(met)} features"
            if met else f"**not met** at this scale; {curves} show where pretraining got to")
    return ("**Aim** (pretrained beats random weights and log-mel by a paired 'beats', on every speaker fold but "
            f"at most one): {head}. {detail}.")


def f0_shape_probe(work: str) -> Optional[dict]:
    """The contour task's reference: the linear probe (leave-one-speaker-out, the in-training probe's
    settings) on five numbers measured from every utterance's F0 track by the corpus stage (slope and
    the four quarter medians, demo/corpus.py ``measure_prosody``). It shows whether the classes are in
    the audio at all, for features that follow the pitch. None when the corpus has no measurements."""
    import numpy as np

    from ..data.label_files import read_column_file
    from ..data.manifest import read_manifest
    from ..evaluation.linear_probe import linear_probe_cv
    from .corpus import CONTOUR_PROSODY

    path, labels = os.path.join(work, "corpus", CONTOUR_PROSODY), os.path.join(work, "labels", "contour")
    if not (os.path.isfile(path) and os.path.isfile(labels + ".tsv")):
        return None
    with open(path, encoding="utf-8") as f:
        measured = json.load(f)
    manifest = read_manifest(labels + ".tsv", check_root=False)
    corpus = os.path.realpath(os.path.join(work, "corpus"))
    keys = [os.path.relpath(os.path.realpath(manifest.full_path(i)), corpus) for i in range(len(manifest))]
    if any(k not in measured for k in keys):
        return None  # a corpus from before the measurements were saved
    x = np.array([[measured[k]["slope"], *measured[k]["quarters"]] for k in keys])
    result = linear_probe_cv(x, read_column_file(labels + ".emo", "labels"), read_column_file(labels + ".group", "groups"))
    return {"features": "F0 slope and 4 quarter medians (5 numbers per utterance, measured by the corpus stage)",
            "UA": result["summary"]["UA"]["mean"], "UA_std": result["summary"]["UA"]["std"],
            "fold_UA": {f["group"]: f["UA"] for f in result["folds"]}}


def contour_report(work: str) -> Optional[dict]:
    """The second task (pitch contours with matched global statistics, WORK/probe/contour): the same
    tables and paired verdicts as the first, and the corpus builder's measured per-class prosody."""
    subdir = os.path.join("probe", "contour")
    results = task_results(work, subdir)
    if not results["rows"]:
        return None
    stats_path = os.path.join(work, "corpus", "contour_stats.json")
    stats = None
    if os.path.isfile(stats_path):
        with open(stats_path, encoding="utf-8") as f:
            stats = json.load(f)
    curve = load_probe(os.path.join(work, subdir, "curve.json"))  # e2v-curves --probe-data ... --json
    if curve is not None:
        curve = {"png": "curves_contour.png", "probe_ua": curve["probe_ua"], "log_mel": curve["log_mel"],
                 "command": f"e2v-curves {os.path.join(work, 'pretrain')} --probe-data {os.path.join(work, 'labels')} "
                            f"--split contour --layers last"}
    return {**results, "corpus_stats": stats, "curve": curve, "f0_shape": f0_shape_probe(work)}


def format_contour_stats(stats: Dict[str, dict]) -> str:
    """The contour corpus' measured prosody per class (demo/corpus.py measure_prosody)."""
    lines = ["| class | n | mean log2 F0 | median F0 (Hz) | RMS | duration (s) | F0 slope (oct/s) | "
             "middle - ends (oct) |", "|---" * 8 + "|"]
    for label, m in stats.items():
        lines.append(f"| {label} | {m['n']} | {m['logf0_mean']:.3f} | {m['f0_median']:.1f} | {m['rms']:.4f} | "
                     f"{m['duration']:.2f} | {m['slope']:+.3f} | {m['middle']:+.3f} |")
    return "\n".join(lines)


CONTOUR_CURVES = "this task's curve below and the first task's curves"


def format_contour(contour: dict) -> str:
    verdicts = "\n".join(f"* {VARIANTS['' if variant == 'raw' else '.' + variant]}: {p['verdict']}"
                         for variant, items in contour["paired"].items() for p in items)
    stats = (f"Measured on the labelled contour audio (global statistics matched, shape different):\n\n"
             f"{format_contour_stats(contour['corpus_stats'])}\n\n" if contour["corpus_stats"] else "")
    curve = contour["curve"]
    curve_md = (f"Learning curve (linear probe on the saved checkpoints):\n\n![contour curves]({curve['png']})\n\n"
                f"`{curve['command']}`; UA by update: {json.dumps(curve['probe_ua'])}, log-mel "
                f"{json.dumps(curve['log_mel'])}\n\n" if curve else "")
    shape = contour.get("f0_shape")
    shape_md = (f"Reference, not a representation: the linear probe on {shape['features']}: UA "
                f"{100 * shape['UA']:.1f} ± {100 * shape['UA_std']:.1f}, leave-one-speaker-out. The classes are "
                f"in the audio and simple for features that follow the pitch.\n\n" if shape else "")
    return (f"## Second task: pitch contours (rise, fall, peak, dip) with matched global statistics\n\n"
            f"{stats}{format_table(contour)}\n\n{shape_md}**Verdict:** {contour['verdict']}\n\n"
            f"{format_aim(contour, CONTOUR_CURVES)}\n\n{verdicts}\n\n"
            f"Per-speaker normalised features:\n\n{format_table(contour, 'rows_spknorm')}\n\n"
            f"UA per speaker fold (%):\n\n{format_folds(contour)}\n\n{curve_md}")


def build_report(work: str) -> dict:
    from .corpus import load_summary
    return {
        **task_results(work),
        "curve": learning_curve(work),
        "contour": contour_report(work),
        "pretraining_valid": last_valid_losses(os.path.join(work, "pretrain", "hydra_train.log")),
        "timings_s": read_timings(os.path.join(work, "timings.tsv")),
        "finetune": finetune_stage.load_result(work),  # stage 7: fine-tuned vs linear probe, one held-out speaker
        "corpus": load_summary(os.path.join(work, "corpus")),  # which engine made the corpus (stage 1)
    }


def corpus_note(report: dict) -> str:
    """One plain sentence when the corpus is the numpy fallback (tone bursts, not speech), else ''."""
    if (report.get("corpus") or {}).get("engine") != "numpy-fallback":
        return ""
    return ("Corpus: the NUMPY FALLBACK (harmonic tone bursts, not speech), because espeak-ng was not installed "
            "or --force-fallback was given. The probes and verdicts below are computed as usual, on tones; "
            "install espeak-ng (apt-get install espeak-ng, or setup.sh as root) for the speech corpus.")


def format_table(report: dict, key: str = "rows") -> str:
    lines = ["| features | " + " | ".join(TITLES[m] for m in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for r in report[key]:
        cells = [f"{100 * r[m]:.1f} ± {100 * r[m + '_std']:.1f}" for m in METRICS]
        lines.append(f"| {r['description']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_folds(report: dict) -> str:
    """UA per speaker fold (mean over probe seeds), raw and per-speaker normalised."""
    cols = [(r, tag) for key, tag in (("rows", ""), ("rows_spknorm", " (spk-norm)")) for r in report[key]]
    if not cols:
        return ""
    groups = list(cols[0][0]["fold_UA"])
    lines = ["| fold | " + " | ".join(f"{r['features']}{tag}" for r, tag in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{100 * r['fold_UA'].get(g, float('nan')):.1f}" for r, _ in cols)
                     + " |")
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
    ax.set_xticks(x + width * (len(rows) - 1) / 2, [TITLES[m] for m in METRICS])
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
    verdicts = "\n".join(f"* {VARIANTS['' if variant == 'raw' else '.' + variant]}: {p['verdict']}"
                         for variant, items in report["paired"].items() for p in items)
    curve = report["curve"]
    curve_md = (f"## Learning curve\n\n![learning curves]({curve['png']})\n\n`{curve['command']}`; linear-probe UA "
                f"by update: {json.dumps(curve['probe_ua'])}, log-mel {json.dumps(curve['log_mel'])}\n\n"
                if curve else "")
    note = corpus_note(report)
    header = f"**{note}**\n\n" if note else ""
    md = (f"# Demo report\n\n{header}{format_table(report)}\n\n**Verdict:** {report['verdict']}\n\n"
          f"{format_aim(report, 'the learning curves below')}\n\n"
          f"## Paired comparisons (same speaker folds)\n\n{verdicts}\n\n"
          f"Per-speaker normalised features:\n\n{format_table(report, 'rows_spknorm')}\n\n"
          f"UA per speaker fold (%):\n\n{format_folds(report)}\n\n{curve_md}"
          f"{format_contour(report['contour']) if report['contour'] else ''}"
          f"{finetune_stage.format_section(report['finetune'])}"
          f"Pretraining, last validation: {report['pretraining_valid']}\n\n"
          f"| stage | seconds |\n|---|---|\n{timings}\n")
    with open(os.path.join(args.work, "report.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return report


def cli_main(argv: Optional[List[str]] = None) -> None:
    # force: importing fairseq (through the package) configured the root logger at DEBUG
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args(argv)
    report = run_main("e2v-demo-report", main, args, (ValueError,))  # one line, exit 2 (cli.py)
    if corpus_note(report):
        print(corpus_note(report) + "\n")
    print(format_table(report))
    print(f"\nverdict: {report['verdict']}")
    print("aim: " + ("met" if any(a["met"] for a in report["aim"].values()) else "not met") + " (report.md)")
    for variant, items in report["paired"].items():
        for p in items[1 if variant == "raw" else 0:]:
            print(f"  {variant}: {p['verdict']}")
    if report["contour"]:
        print("\ncontour task (pitch contours, matched global statistics):\n" + format_table(report["contour"]))
        for variant, items in report["contour"]["paired"].items():
            for p in items:
                print(f"  contour {variant}: {p['verdict']}")
    print("stage timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()))
    print(f"report: {os.path.join(args.work, 'report.md')}, {os.path.join(args.work, 'report.json')}, "
          f"plots: {os.path.join(args.work, 'probe_scores.png')}, {os.path.join(args.work, 'probe')}/*.png")


if __name__ == "__main__":
    cli_main()
