"""``e2v-probe FEATURES LABELS --groups GROUPS``: the emotion probes on frozen features.

Reads the features (:mod:`emotion2vec_plugin.data.feature_store`, e2v-extract output) and one
label and one group (session or speaker) per utterance (:func:`~emotion2vec_plugin.data.label_files.read_column_file`),
checks that they agree, and runs

* ``--probe mlp`` (default): the paper's MLP probe, leave-one-group-out (:mod:`.mlp_probe`);
  per fold and mean ± std: WA, UA, macro-F1, weighted-F1 (:mod:`.metrics`), confusion matrix;
  ``--seeds`` repeats it with several seeds on the same folds;
* ``--probe linear``: the fast linear probe of :mod:`.linear_probe` (time-mean pooled utterance
  vectors, StandardScaler + LogisticRegression; leave-one-group-out, or stratified
  ``--folds``-fold without ``--groups``): the probe run during pretraining (``task.probe_data``),
  offline; WA and UA.

``--folds DEST/<split>.folds`` probes on a corpus's official folds instead (:mod:`.folds`): each
fold's train rows are trained on, its valid rows (where the corpus gives them) select the epoch,
its test rows are scored; the fold rows are mapped to the features by relpath through the main
split ``DEST/<split>.tsv`` next to the labels. Per fold and mean ± std as above (the linear probe
adds macro- and weighted-F1 there).

``--no-standardize`` feeds the MLP the raw features, as the official recipe does (default: per
dimension standardised with each fold's training statistics). ``--normalize-per-group`` first
z-scores every dimension with the mean / std of the utterance's own group (speaker or session;
the usual speaker normalisation of SER probes, label-free, and it uses the test speaker's own
statistics; :mod:`.standardize`): all frames of the group for the MLP, the utterance vectors for
the linear probe.

Writes the results JSON (``--out``), the t-SNE and confusion plots (``--plot``,
``--confusion-plot``, :mod:`.plots`) and prints the per-fold table.
"""

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from typing import Dict, List, Optional, Union

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from ..cli import COMMON_INPUT_ERRORS, describe, fail
from ..data.feature_store import FeatureFormatError, FeatureSet, load_features
from ..data.label_files import LabelFileError, read_column_file
from ..data.manifest import read_manifest
from .folds import SCHEME, linear_official_folds, probe_official_folds, read_folds
from .linear_probe import LinearProbeError, linear_probe_cv, per_group_standardize
from .metrics import METRICS, TITLES
from .mlp_probe import ProbeConfig, ProbeInputError, cross_validate, merge_seed_runs
from .plots import plot_confusion, plot_embeddings
from .standardize import zscore_per_group

logger = logging.getLogger(__name__)


def format_table(result: dict) -> str:
    """The per-fold scores and mean ± std as a compact text table (percent)."""
    width = max(12, *(len(f["group"]) for f in result["folds"]))
    cols = [(m, max(6, len(TITLES[m]))) for m in METRICS]  # (metric, column width)
    lines = [f"{'fold':<{width}} {'n':>5} " + " ".join(f"{TITLES[m]:>{w}}" for m, w in cols) + f" {'epoch':>5}"]
    for f in result["folds"]:
        lines.append(f"{f['group']:<{width}} {f['n_test']:>5} " + " ".join(f"{100 * f[m]:{w}.2f}" for m, w in cols)
                     + f" {f['best_epoch']:>5}")
    s = result["summary"]
    lines.append(f"{'mean ± std':<{width}} {result['num_utterances']:>5} "
                 + "  ".join(f"{TITLES[m]} {100 * s[m]['mean']:.2f} ± {100 * s[m]['std']:.2f}" for m in METRICS))
    return "\n".join(lines)


def fold_spec(text: str) -> Union[int, str]:
    """``--folds``: an integer k (stratified k-fold of the linear probe) or a folds folder."""
    return int(text) if text.strip().isdigit() else text


def get_parser() -> argparse.ArgumentParser:
    d = ProbeConfig()
    p = argparse.ArgumentParser(
        prog="e2v-probe",
        description="Leave-one-group-out emotion probe on frozen features (emotion2vec paper protocol): "
                    "Linear(D,256)-ReLU-masked mean-Linear(256,C), early stopping on validation UA; "
                    "reports WA, UA, macro-F1 and weighted-F1 per fold and mean ± std.")
    p.add_argument("features", help="stacked prefix (PREFIX.npy [frames, D] + PREFIX.lengths) or a features "
                                    "directory with index.tsv (e2v-extract output)")
    p.add_argument("labels", help="one label per line (e.g. neu/hap/ang/sad) in manifest order; "
                                  "'utt_id<TAB>label' lines (official train.emo) are accepted too")
    p.add_argument("--groups", default=None,
                   help="one fold key per line (session or speaker), manifest order; each group is one test fold "
                        "(required by the mlp probe; without it the linear probe runs stratified k-fold)")
    p.add_argument("--probe", choices=["mlp", "linear"], default="mlp",
                   help="mlp: the paper's probe (default); linear: time-mean pooling + logistic regression, the "
                        "probe run during pretraining (task.probe_data), equal numbers on the same checkpoint")
    p.add_argument("--normalize-per-group", action="store_true",
                   help="z-score features per group (speaker normalisation) before the probe: frames with their "
                        "group's frame statistics (mlp), utterance vectors with their group's (linear)")
    p.add_argument("--folds", type=fold_spec, default=5, metavar="DIR|K",
                   help="DEST/<split>.folds: probe on the corpus's official folds (fold_K/{train,[valid,]test}.{tsv,"
                        "emo}; rows matched by relpath to DEST/<split>.tsv next to LABELS; valid selects the epoch, "
                        "else --valid-fraction of train is held out); an integer k: the linear probe's stratified "
                        "k-fold without --groups (default 5)")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop after this many epochs without a better validation UA (<= 0: never)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--optimizer", choices=["rmsprop", "adam"], default=d.optimizer,
                   help="rmsprop: RMSprop + cyclic LR (official emotion2vec IEMOCAP recipe); adam: plain Adam")
    p.add_argument("--hidden", type=int, default=d.hidden, help="probe hidden size (paper: 256)")
    p.add_argument("--valid-fraction", type=float, default=d.valid_fraction,
                   help="share of the training folds' utterances held out for early stopping")
    p.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="feed raw features (official recipe) instead of per-dimension standardised ones")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="mlp probe: run with each of these seeds (overrides --seed); per-fold scores are then the "
                        "mean over seeds (each seed's folds are kept under 'seed_runs'), so paired comparisons of "
                        "feature sets over the same folds are less noisy")
    p.add_argument("--device", default=d.device, help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default); 1 is fastest for small feature sets or a busy machine")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="t-SNE plot of the utterance embeddings (mean-pooled input features) by label")
    p.add_argument("--confusion-plot", default=None, metavar="PNG",
                   help="confusion-matrix heat map, summed over folds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> dict:
    """Load the inputs once, check they agree, cross-validate, write the JSON and plots."""
    if getattr(args, "threads", 0) > 0:
        torch.set_num_threads(args.threads)
    labels = read_column_file(args.labels, "labels")
    folds_dir = args.folds if isinstance(getattr(args, "folds", None), str) else None
    if args.groups is None:
        if (getattr(args, "probe", "mlp") == "mlp" and folds_dir is None) or args.normalize_per_group:
            raise ProbeInputError("--groups is required by the mlp probe without --folds DIR and by "
                                  "--normalize-per-group (one session or speaker per line); the linear probe runs "
                                  "k-fold without it")
        groups = None
    else:
        groups = read_column_file(args.groups, "groups")
    if groups is not None and len(labels) != len(groups):
        raise ProbeInputError(f"{args.labels} has {len(labels)} labels but {args.groups} has {len(groups)} groups; "
                              f"both must have one line per utterance of the same manifest")
    feats = load_features(args.features, expected_utterances=len(labels))
    for what, values, path in (("labels", labels, args.labels), ("groups", groups, args.groups)):
        if values is not None and len(values) != len(feats):
            raise ProbeInputError(
                f"{path} has {len(values)} {what} but {args.features} holds {len(feats)} utterances "
                f"({feats.describe()}); expected one line per utterance, in the order of the manifest the features "
                f"were extracted from: regenerate {what} from that manifest, or re-extract the features")
    logger.info("features: %s; %s groups, labels %s", feats.describe(), len(set(groups)) if groups else "no",
                sorted(set(labels)))
    if folds_dir is not None:
        return _folds_main(args, feats, labels, groups, folds_dir)
    if getattr(args, "probe", "mlp") == "linear":
        return _linear_main(args, feats, labels, groups)
    if args.normalize_per_group:
        feats = zscore_per_group(feats, groups)
    cfg = _config(args)
    seeds = args.seeds or [args.seed]
    runs = [cross_validate(feats, labels, groups, replace(cfg, seed=s), progress=not args.quiet) for s in seeds]
    result = runs[0] if len(runs) == 1 else merge_seed_runs(runs)
    result["probe"] = "mlp"
    result["normalize_per_group"] = bool(args.normalize_per_group)
    result["inputs"] = _inputs(args)
    _write_json(result, args.out)
    if args.plot:
        plot_embeddings(feats.utterance_means(), labels, args.plot, args.seed)
        logger.info("wrote %s", args.plot)
    if args.confusion_plot:
        plot_confusion(result["confusion_total"], args.confusion_plot,
                       title=f"confusion, {len(result['folds'])} folds summed (rows: true)")
        logger.info("wrote %s", args.confusion_plot)
    return result


def _config(args) -> ProbeConfig:
    return ProbeConfig(hidden=args.hidden, epochs=args.epochs, patience=args.patience, lr=args.lr,
                       batch_size=args.batch_size, optimizer=args.optimizer, valid_fraction=args.valid_fraction,
                       standardize=args.standardize, seed=args.seed, device=args.device)


def _folds_main(args, feats: FeatureSet, labels: List[str], groups: Optional[List[str]], folds_dir: str) -> dict:
    """``--folds DIR``: the probe on each official fold (:mod:`.folds`)."""
    stem = args.labels[: -len(".emo")] if args.labels.endswith(".emo") else os.path.splitext(args.labels)[0]
    main_tsv = stem + ".tsv"
    if not os.path.isfile(main_tsv):
        raise ProbeInputError(f"{main_tsv}: not found; --folds matches fold rows by relpath to the main split "
                              f"DEST/<split>.tsv next to the labels {args.labels} (as e2v-labels writes them)")
    main = read_manifest(main_tsv, check_root=False)
    if len(main) != len(labels):
        raise ProbeInputError(f"{main_tsv} lists {len(main)} utterances but {args.labels} has {len(labels)} labels; "
                              f"both must come from one e2v-labels run, one line per utterance")
    if feats.names is not None and list(feats.names) != list(main.names):
        i = next(i for i, (a, b) in enumerate(zip(feats.names, main.names)) if a != b)
        raise ProbeInputError(f"{feats.source}:{i + 1}: utterance {feats.names[i]!r} but {main.where(i)} is "
                              f"{main.names[i]!r}; the features must be extracted from {main_tsv}, in its order")
    folds = read_folds(folds_dir, main, labels, args.labels)
    inputs = {**_inputs(args), "folds": os.path.abspath(folds_dir), "manifest": os.path.abspath(main_tsv)}
    if getattr(args, "probe", "mlp") == "linear":
        x = feats.utterance_means()
        if args.normalize_per_group:
            x = per_group_standardize(x, groups)
        result = linear_official_folds(x, labels, folds)
        result.update(probe="linear", normalize_per_group=bool(args.normalize_per_group),
                      num_utterances=len(feats), feature_dim=feats.dim, inputs=inputs)
        _write_json(result, args.out)
        return result
    if args.normalize_per_group:
        feats = zscore_per_group(feats, groups)
    cfg = _config(args)
    runs = [probe_official_folds(feats, labels, folds, replace(cfg, seed=s), progress=not args.quiet)
            for s in (args.seeds or [args.seed])]
    result = runs[0] if len(runs) == 1 else merge_seed_runs(runs)
    result.update(probe="mlp", normalize_per_group=bool(args.normalize_per_group), inputs=inputs)
    _write_json(result, args.out)
    if args.confusion_plot:
        plot_confusion(result["confusion_total"], args.confusion_plot,
                       title=f"confusion, {len(result['folds'])} {SCHEME} summed (rows: true)")
    if args.plot:
        plot_embeddings(feats.utterance_means(), labels, args.plot, args.seed)
    return result


def _write_json(result: dict, out: Optional[str]) -> None:
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        logger.info("wrote %s", out)


def _inputs(args) -> Dict[str, Optional[str]]:
    return {"features": os.path.abspath(args.features), "labels": os.path.abspath(args.labels),
            "groups": os.path.abspath(args.groups) if args.groups else None}


def _linear_main(args, feats: FeatureSet, labels: List[str], groups: Optional[List[str]]) -> dict:
    """``--probe linear``: the in-training probe's numbers, offline."""
    try:
        result = linear_probe_cv(feats.utterance_means(), labels, groups, args.folds, args.seed,
                                 args.normalize_per_group)
    except LinearProbeError as e:
        raise ProbeInputError(str(e)) from None
    result.update(probe="linear", normalize_per_group=bool(args.normalize_per_group), num_utterances=len(feats),
                  feature_dim=feats.dim, inputs=_inputs(args))
    _write_json(result, args.out)
    return result


def format_linear_table(result: dict) -> str:
    """Per-fold scores and mean ± std of a linear-probe result (percent): WA and UA, plus the F1s
    where the result has them (official folds)."""
    metrics = [m for m in METRICS if m in result["summary"]]
    cols = [(m, max(6, len(TITLES[m]))) for m in metrics]  # (metric, column width)
    width = max(12, *(len(f["group"]) for f in result["folds"]))
    lines = [f"{'fold':<{width}} {'n':>5} " + " ".join(f"{TITLES[m]:>{w}}" for m, w in cols)]
    for f in result["folds"]:
        lines.append(f"{f['group']:<{width}} {f['n_test']:>5} " + " ".join(f"{100 * f[m]:{w}.2f}" for m, w in cols))
    s = result["summary"]
    lines.append(f"{'mean ± std':<{width}} {result['num_utterances']:>5} "
                 + "  ".join(f"{TITLES[m]} {100 * s[m]['mean']:.2f} ± {100 * s[m]['std']:.2f}" for m in metrics))
    return "\n".join(lines)


def cli_main(argv: Optional[List[str]] = None) -> None:
    # force: importing fairseq (through the package __init__) already ran basicConfig(level=DEBUG)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = get_parser().parse_args(argv)
    try:
        with logging_redirect_tqdm():  # per-fold log lines above the progress bar, not through it
            result = main(args)
    except (ProbeInputError, LabelFileError, FeatureFormatError, *COMMON_INPUT_ERRORS) as e:
        # one line, exit 2 (cli.py)
        raise fail("e2v-probe", describe(e)) from None
    print(format_linear_table(result) if result.get("probe") == "linear" else format_table(result))
    sys.stdout.flush()


if __name__ == "__main__":
    cli_main()
