"""``e2v-benchmark EXPORT DEST/<split> [DEST/<split2> ...] --out DIR``: an EmoBox-style table in one command.

For every labelled split (``DEST/<split>.tsv`` + ``.emo`` as ``e2v-labels`` writes them) and every
feature set (the model ``EXPORT``; with ``--baselines`` also 80-dim log-mel filterbanks and the
same architecture with random weights, the two references of the demo's report):

1. **extract** the features once with ``e2v-extract``'s own code (:mod:`..inference.extract_cli`)
   into ``DIR/features/<set>/<corpus>/``; ``extraction.json`` there records the settings (the
   model and its files' sizes and times, layers, the manifest's SHA-1): a finished extraction is
   reused by a re-run, an interrupted one resumes per utterance, one of other settings is replaced;
2. **probe** with ``e2v-probe``'s code (:mod:`.probe_cli`): on the corpus's official folds when
   ``DEST/<split>.folds`` exists (:mod:`.folds`), else leave-one-group-out over ``DEST/<split>.group``;
   each probe's JSON goes to ``DIR/probe/<set>/<corpus>.json``;
3. **report**: ``DIR/results.json`` (one row per corpus and feature set: UA, WA, macro-F1 and
   weighted-F1 as mean ± std over folds, the scheme, the number of folds, utterances and
   classes), ``DIR/results.md`` (the same as a table, in %) and ``DIR/results.png`` (UA per corpus).

Every corpus is checked (manifest, labels, folds or groups) before anything is extracted, so a
bad input ends the run at once with one line naming the file.
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..checkpoint.model_record import with_random_weights
from ..cli import run_main
from ..data.label_files import read_column_file, write_text_atomic
from ..data.labelled_split import read_labelled_split
from ..errors import Emotion2vecError
from ..formats import plugin
from ..formats.load import read_model
from ..inference import extract_cli
from . import probe_cli
from .folds import read_folds
from .metrics import MACRO_F1, METRICS, TITLES, UA, WA, WEIGHTED_F1
from .mlp_probe import ProbeConfig
from .plots import plot_benchmark

logger = logging.getLogger(__name__)

LOG_MEL, RANDOM = "log-mel", "random weights"
LOGO = "leave-one-group-out"


class BenchmarkInputError(Emotion2vecError, ValueError):
    """A corpus the benchmark cannot score; names the file and the fix."""


@dataclass
class Corpus:
    """One labelled split: ``stem`` = ``DEST/<split>`` (``.tsv``, ``.emo`` and ``.folds`` or ``.group``)."""

    name: str
    stem: str
    utterances: int
    folds: Optional[str]
    groups: Optional[str]

    @property
    def tsv(self) -> str:
        return self.stem + ".tsv"

    @property
    def emo(self) -> str:
        return self.stem + ".emo"


def read_corpus(split: str, name: str) -> Corpus:
    """Check one ``DEST/<split>`` (``.tsv``/``.emo`` may be given with their extension): manifest and
    labels agree, and its folds (mapped to the split) or its groups (>= 2) are usable."""
    stem = split
    for ext in (".tsv", ".emo", ".folds"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    folder, base = os.path.split(stem.rstrip("/"))
    labelled = read_labelled_split(folder or ".", base)  # ManifestError / LabelledDataError name the files
    folds, groups = stem + ".folds", stem + ".group"
    if os.path.isdir(folds):
        read_folds(folds, labelled.manifest, labelled.labels, labelled.label_path)  # fails now, not after extracting
        return Corpus(name, stem, len(labelled.labels), folds, groups if os.path.isfile(groups) else None)
    if not os.path.isfile(groups):
        raise BenchmarkInputError(f"{stem}: neither {folds}/ (official folds) nor {groups} (one speaker or session "
                                  f"per utterance, for leave-one-group-out) exists; write one of them with e2v-labels")
    values = read_column_file(groups, "groups")
    if len(values) != len(labelled.labels):
        raise BenchmarkInputError(f"{groups} has {len(values)} lines but {labelled.manifest.path} lists "
                                  f"{len(labelled.labels)} utterances; rewrite them together with e2v-labels")
    if len(set(values)) < 2:
        raise BenchmarkInputError(f"{groups}: every utterance is in group {values[0]!r}; leave-one-group-out needs "
                                  f">= 2 groups (or official folds in {folds}/)")
    return Corpus(name, stem, len(labelled.labels), None, groups)


def corpus_names(splits: List[str]) -> List[str]:
    """``<split>``, or ``<DEST>-<split>`` where two corpora share a split name."""
    stems = [os.path.basename(s.rstrip("/")).rsplit(".", 1)[0] if s.endswith((".tsv", ".emo", ".folds"))
             else os.path.basename(s.rstrip("/")) for s in splits]
    parents = [os.path.basename(os.path.dirname(os.path.abspath(s.rstrip("/")))) for s in splits]
    names = [f"{p}-{b}" if stems.count(b) > 1 else b for p, b in zip(parents, stems)]
    if len(set(names)) < len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise BenchmarkInputError(f"two corpora are both named {dup!r}; list each labelled split once")
    return names


def sha1(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(model: str) -> List[List[object]]:
    """(name, bytes, mtime in ns) of a model file or of every file of an export folder: a re-export
    into the same folder changes it, so stale features are not reused."""
    files = ([model] if os.path.isfile(model) else
             sorted(os.path.join(model, f) for f in os.listdir(model) if os.path.isfile(os.path.join(model, f))))
    return [[os.path.basename(f), os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files]


def extract(model: str, corpus: Corpus, out: str, args) -> str:
    """Features of ``corpus`` from ``model`` (an export, a checkpoint or ``fbank``) in ``out``, once:
    returns the stacked prefix. ``out/extraction.json`` records what is (being) extracted there
    (model, layers, the manifest and its SHA-1) and whether it finished: finished and the same
    means reused; unfinished and the same means e2v-extract resumes from the per-utterance files
    it finds; anything else (another model, layers or manifest) starts afresh."""
    prefix = os.path.join(out, corpus.name)
    key = {"model": model if model == "fbank" else os.path.abspath(model),
           "weights": None if model == "fbank" else fingerprint(model), "manifest": os.path.abspath(corpus.tsv),
           "manifest_sha1": sha1(corpus.tsv), "layers": None if model == "fbank" else args.layers,
           "utterances": corpus.utterances}
    record = os.path.join(out, "extraction.json")
    if os.path.isfile(record):
        try:
            with open(record, encoding="utf-8") as f:
                before = json.load(f)
        except (OSError, ValueError):  # cut short by a crash: nothing there can be trusted
            before = {}
        if before.get("key") == key and before.get("finished") and os.path.isfile(prefix + ".npy"):
            logger.info("%s: features of %s already extracted, reused", out, corpus.name)
            return prefix
        if before.get("key") != key:
            logger.info("%s: holds features of other settings (%s), extracting afresh", out, before.get("key"))
            shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    write_text_atomic(record, json.dumps({"key": key, "finished": False}, indent=2) + "\n")
    argv = [model, corpus.tsv, "--out", out, "--prefix", corpus.name, "--device", args.device]
    argv += (["--layers", *map(str, args.layers)] if args.layers and model != "fbank" else [])
    argv += (["--batch-size", str(args.batch_size)] if args.batch_size else []) + (["--quiet"] if args.quiet else [])
    result = extract_cli.main(extract_cli.get_parser().parse_args(argv))
    logger.info("%s: extracted %d of %d utterances of %s", out, result["extracted"], result["utterances"], corpus.name)
    write_text_atomic(record, json.dumps({"key": key, "finished": True}, indent=2) + "\n")
    return prefix


def probe(features: str, corpus: Corpus, out_json: str, args) -> dict:
    """``e2v-probe`` on one corpus: its official folds, else leave-one-group-out."""
    argv = [features, corpus.emo, "--out", out_json, "--epochs", str(args.epochs), "--patience", str(args.patience),
            "--hidden", str(args.hidden), "--device", args.device, "--seeds", *map(str, args.seeds)]
    argv += ["--folds", corpus.folds] if corpus.folds else []
    argv += ["--groups", corpus.groups] if corpus.groups else []
    argv += (["--normalize-per-group"] if args.normalize_per_group else []) + (["--quiet"] if args.quiet else [])
    if args.normalize_per_group and not corpus.groups:
        raise BenchmarkInputError(f"--normalize-per-group needs {corpus.stem}.group (one speaker per utterance)")
    return probe_cli.main(probe_cli.get_parser().parse_args(argv))


def table_row(corpus: Corpus, features: str, result: dict, probe_json: str) -> dict:
    """One results row: mean ± std over folds of every metric (in [0, 1]) and the sizes."""
    return {"corpus": corpus.name, "features": features,
            "scheme": result.get("scheme", LOGO), "folds": len(result["folds"]),
            "utterances": result.get("fold_utterances", result["num_utterances"]), "classes": len(result["labels"]),
            **{m: dict(result["summary"][m]) for m in METRICS}, "probe_json": probe_json}


def format_markdown(rows: List[dict], title: str) -> str:
    """The rows as a Markdown table, metrics in % as mean ± std over folds."""
    head = ["corpus", "features", "scheme", "folds", "utterances", "classes", *(TITLES[m] for m in (UA, WA, MACRO_F1,
                                                                                                     WEIGHTED_F1))]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["corpus"], r["features"], r["scheme"], str(r["folds"]), str(r["utterances"]), str(r["classes"]),
                 *(f"{100 * r[m]['mean']:.2f} ± {100 * r[m]['std']:.2f}" for m in (UA, WA, MACRO_F1, WEIGHTED_F1))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "UA: unweighted accuracy (mean recall over classes), WA: accuracy, F1: macro and weighted; mean ± "
                  "population std over the folds, in %. Probe: the emotion2vec paper's MLP on frozen frames."]
    return "\n".join(lines) + "\n"


def get_parser() -> argparse.ArgumentParser:
    d = ProbeConfig()
    p = argparse.ArgumentParser(
        prog="e2v-benchmark",
        description="Extract, probe and tabulate: one row per corpus (UA, WA, macro-/weighted-F1 as mean ± std over "
                    "its official folds, or leave-one-group-out where it has none).")
    p.add_argument("export", help="the model: an e2v-export folder or a checkpoint (as e2v-extract takes it)")
    p.add_argument("splits", nargs="+", metavar="DEST/SPLIT",
                   help="labelled splits as e2v-labels writes them: DEST/SPLIT.tsv, .emo and DEST/SPLIT.folds/ "
                        "(official folds) or DEST/SPLIT.group (leave-one-group-out)")
    p.add_argument("--out", required=True, help="output folder: features/, probe/, results.{md,json,png}")
    p.add_argument("--baselines", action="store_true",
                   help="add rows for 80-dim log-mel filterbanks and the same architecture with random weights")
    p.add_argument("--random-seed", type=int, default=0, help="seed of the random-weights baseline")
    p.add_argument("--name", default=None, help="the model's name in the table (default: the EXPORT folder's name)")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="blocks to average, as e2v-extract --layers (default: the last)")
    p.add_argument("--batch-size", type=int, default=None, help="extraction batch size (e2v-extract's default)")
    p.add_argument("--device", default="cpu", help="torch device of extraction and probe, e.g. cuda")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--seeds", type=int, nargs="+", default=[d.seed],
                   help="probe seeds; fold scores are averaged over them (e2v-probe --seeds)")
    p.add_argument("--normalize-per-group", action="store_true",
                   help="speaker-normalise the features first (needs DEST/SPLIT.group)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(args) -> dict:
    """Check every corpus, then extract, probe and write the results; returns the results dict."""
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    corpora = [read_corpus(s, n) for s, n in zip(args.splits, corpus_names(args.splits))]
    name = args.name or os.path.basename(os.path.abspath(args.export).rstrip("/")) or "model"
    models: Dict[str, str] = {name: args.export}
    if args.baselines:
        models[LOG_MEL] = "fbank"
        models[RANDOM] = random_export(args.export, os.path.join(args.out, "exports", f"random_{args.random_seed}"),
                                       args.random_seed)
    rows = []
    for corpus in corpora:
        for features, model in models.items():
            folder = "model" if features == name else features.replace(" ", "_")
            prefix = extract(model, corpus, os.path.join(args.out, "features", folder, corpus.name), args)
            rel = os.path.join("probe", folder, corpus.name + ".json")
            result = probe(prefix, corpus, os.path.join(args.out, rel), args)
            rows.append(table_row(corpus, features, result, rel))
            logger.info("%s / %s: UA %.2f ± %.2f over %d %s", corpus.name, features, 100 * rows[-1][UA]["mean"],
                        100 * rows[-1][UA]["std"], rows[-1]["folds"], rows[-1]["scheme"])
    title = f"e2v-benchmark: {name}"
    results = {"export": os.path.abspath(args.export), "name": name,
               "settings": {k: getattr(args, k) for k in ("layers", "epochs", "patience", "hidden", "seeds",
                                                           "normalize_per_group", "random_seed")},
               "metrics": list(METRICS), "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    write_text_atomic(os.path.join(args.out, "results.json"), json.dumps(results, indent=2) + "\n")
    write_text_atomic(os.path.join(args.out, "results.md"), format_markdown(rows, title))
    plot_benchmark(rows, os.path.join(args.out, "results.png"), title)
    return results


def random_export(export: str, out: str, seed: int) -> str:
    """``export``'s architecture with random weights (seed ``seed``) as a plugin folder ``out``, once."""
    if not os.path.isfile(os.path.join(out, plugin.CONFIG)):
        record = with_random_weights(read_model(export, classifier_checkpoints=False), seed)
        record.labels = None  # an encoder: a classifier's head is not part of the control
        for stale in (out + ".tmp", out):  # an interrupted earlier write
            shutil.rmtree(stale, ignore_errors=True)
        plugin.write(record, out + ".tmp")
        os.replace(out + ".tmp", out)
    return out


def cli_main(argv: Optional[List[str]] = None) -> None:
    # force: importing fairseq (through the package __init__) already ran basicConfig(level=DEBUG)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = get_parser().parse_args(argv)
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        results = run_main("e2v-benchmark", main, args, (ValueError,))
    print(format_markdown(results["rows"], f"e2v-benchmark: {results['name']}"), end="")
    print(f"wrote {os.path.join(args.out, 'results.md')}, results.json and results.png")
    sys.stdout.flush()


if __name__ == "__main__":
    cli_main()
