"""``e2v-split-labels DIR/NAME --dest OUT``: train / valid / test splits of one ``e2v-labels`` output.

``e2v-labels`` writes all labelled utterances of a corpus as one split (``NAME.tsv``, ``.emo``,
``.group``); fine-tuning needs ``train`` and ``valid`` (and maybe ``test``). Two ways to split:

* by group (speaker or session, the ``.group`` file): ``--valid-groups Session4 --test-groups
  Session5`` (IEMOCAP's leave-one-session-out), every other group goes to train;
* at random, stratified by label: ``--valid-fraction 0.1 [--test-fraction 0.1] --seed 0``.

Each output split keeps the input order and the same audio root, and is written as
``OUT/{train,valid,test}.{tsv,emo,group}`` (atomically). A group that does not occur, an empty
split or a label missing from train is an error that names the files.
"""

import argparse
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from emotion2vec_plugin.cli import run_main
from emotion2vec_plugin.data.label_files import read_column_file, write_text_atomic
from emotion2vec_plugin.data.labelled_split import LabelledDataError, read_labelled_split

logger = logging.getLogger(__name__)


def assign_by_group(groups: Sequence[str], valid: Sequence[str], test: Sequence[str], group_path: str) -> List[str]:
    """Split name per utterance from its group."""
    known = sorted(set(groups))
    for g in [*valid, *test]:
        if g not in known:
            raise LabelledDataError(f"group {g!r} does not occur in {group_path} (groups: {known[:20]})")
    overlap = set(valid) & set(test)
    if overlap:
        raise LabelledDataError(f"group(s) {sorted(overlap)} are both in --valid-groups and --test-groups")
    return ["valid" if g in valid else "test" if g in test else "train" for g in groups]


def assign_at_random(labels: Sequence[str], valid: float, test: float, seed: int) -> List[str]:
    """Split name per utterance: per label, round(n * fraction) utterances to valid / test at random."""
    rng = np.random.default_rng(seed)
    out = ["train"] * len(labels)
    for label in sorted(set(labels)):
        idx = rng.permutation([i for i, lab in enumerate(labels) if lab == label])
        n_valid, n_test = int(round(len(idx) * valid)), int(round(len(idx) * test))
        for i in idx[:n_valid]:
            out[i] = "valid"
        for i in idx[n_valid:n_valid + n_test]:
            out[i] = "test"
    return out


def write_split(dest: str, name: str, root: str, rows: List[Dict[str, str]], with_groups: bool) -> None:
    os.makedirs(dest, exist_ok=True)
    files = {"tsv": root + "\n" + "".join(f"{r['name']}\t{r['size']}\n" for r in rows),
             "emo": "".join(f"{r['label']}\n" for r in rows)}
    if with_groups:
        files["group"] = "".join(f"{r['group']}\n" for r in rows)
    for ext, text in files.items():
        write_text_atomic(os.path.join(dest, f"{name}.{ext}"), text)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Split one e2v-labels output into train/valid[/test] for fine-tuning.")
    p.add_argument("split", help="DIR/NAME of the labelled split (reads NAME.tsv, NAME.emo and NAME.group)")
    p.add_argument("--dest", required=True, help="output folder for train/valid/test .tsv/.emo/.group")
    p.add_argument("--valid-groups", default=None, help="comma-separated groups (speakers/sessions) for valid")
    p.add_argument("--test-groups", default=None, help="comma-separated groups for test")
    p.add_argument("--valid-fraction", type=float, default=None, help="random stratified share for valid (0-1)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="random stratified share for test (0-1)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args) -> Dict[str, Dict[str, int]]:
    folder, name = os.path.split(args.split.rstrip("/"))
    for ext in (".tsv", ".emo"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    labelled = read_labelled_split(folder or ".", name)
    group_path = os.path.join(folder, f"{name}.group")
    groups: Optional[List[str]] = None
    if os.path.isfile(group_path):
        groups = read_column_file(group_path, "groups")
        if len(groups) != len(labelled.labels):
            raise LabelledDataError(f"{group_path} has {len(groups)} lines but {labelled.manifest.path} lists "
                                    f"{len(labelled.labels)} utterances; rewrite them together with e2v-labels")
    if (args.valid_groups is None) == (args.valid_fraction is None):
        raise LabelledDataError("give either --valid-groups (split by speaker/session) or --valid-fraction (random)")
    if args.valid_groups is not None:
        if groups is None:
            raise LabelledDataError(f"--valid-groups needs {group_path} (one group per utterance); use "
                                    f"--valid-fraction for a random split")
        split_of = assign_by_group(groups, args.valid_groups.split(","),
                                   args.test_groups.split(",") if args.test_groups else [], group_path)
    else:
        if not (0 < args.valid_fraction < 1 and 0 <= args.test_fraction < 1
                and args.valid_fraction + args.test_fraction < 1):
            raise LabelledDataError(f"--valid-fraction {args.valid_fraction} and --test-fraction {args.test_fraction} "
                                    f"must be in (0, 1) and [0, 1) and sum to less than 1")
        split_of = assign_at_random(labelled.labels, args.valid_fraction, args.test_fraction, args.seed)
    m = labelled.manifest
    rows = {s: [] for s in ("train", "valid", "test")}
    for i, s in enumerate(split_of):
        rows[s].append({"name": m.names[i], "size": str(m.sizes[i]), "label": labelled.labels[i],
                        "group": groups[i] if groups else ""})
    for s in ("train", "valid"):
        if not rows[s]:
            raise LabelledDataError(f"the {s} split of {m.path} would be empty; choose other groups or fractions")
    train_labels = {r["label"] for r in rows["train"]}
    unseen = sorted({r["label"] for s in ("valid", "test") for r in rows[s]} - train_labels)
    if unseen:
        raise LabelledDataError(f"label(s) {unseen} would occur in valid/test but not in train; fine-tuning cannot "
                                f"learn them: choose other groups or drop those utterances")
    summary = {}
    for s, r in rows.items():
        if r:
            write_split(args.dest, s, m.root, r, groups is not None)
            summary[s] = {lab: sum(1 for x in r if x["label"] == lab) for lab in sorted(train_labels)}
    return summary


def cli_main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args(argv)
    summary = run_main("e2v-split-labels", main, args)
    for s, counts in summary.items():
        logger.info("%s: %d utterances %s", s, sum(counts.values()), counts)


if __name__ == "__main__":
    cli_main()
