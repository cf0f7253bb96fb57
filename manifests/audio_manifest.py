"""``e2v-manifest``: a folder of audio in whatever shape -> clean train/valid manifests.

    e2v-manifest ROOT --dest DIR [--ext wav,flac,ogg,mp3] [--valid-percent 0.01] [--seed 0]
                 [--min-seconds 0] [--max-seconds S] [--resample-to OUT] [--workers N]

Scans ROOT recursively (symlinks followed), checks every file (header + last frame, see
``audio_info.inspect``) and writes ``DIR/train.tsv`` and ``DIR/valid.tsv`` in fairseq's format
(root on line 1, then ``relpath<TAB>num_samples`` at 16 kHz), ``DIR/skipped.tsv``
(``path<TAB>reason<TAB>detail``) and prints a summary.

Audio that is not 16 kHz mono is never listed with a wrong length: without ``--resample-to`` it is
skipped as "needs resampling"; with ``--resample-to OUT`` it is converted into OUT (same relative
path, ``.wav``), files already 16 kHz mono are symlinked there, and the manifests' root is OUT,
so every listed path resolves under one root.
"""

import argparse
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .audio_info import NEEDS_RESAMPLING, REASONS, TARGET_RATE, Entry, check_duration, convert, inspect

logger = logging.getLogger(__name__)


def scan(root: str, exts: Sequence[str]) -> List[str]:
    """Relative paths under ``root`` with one of ``exts`` (case-insensitive), sorted."""
    wanted = {"." + e.lower().lstrip(".") for e in exts}
    found = []
    for dirpath, _, files in os.walk(root, followlinks=True):
        for name in files:
            if os.path.splitext(name)[1].lower() in wanted:
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def process(job: Tuple[str, str, Optional[str], float, Optional[float]]) -> Tuple[str, Entry]:
    """Inspect one file; convert or link it into ``resample_to`` when given. Runs in workers."""
    root, rel, resample_to, min_s, max_s = job
    path = os.path.join(root, rel)
    entry = inspect(path)
    if not entry.ok:
        return rel, entry
    entry = check_duration(entry, min_s, max_s)
    if not entry.ok:
        return rel, entry
    native = entry.samplerate == TARGET_RATE and entry.channels == 1
    if resample_to is None:
        if not native:
            entry.reason = NEEDS_RESAMPLING
            entry.detail = f"{entry.samplerate} Hz, {entry.channels} channel(s); use --resample-to OUT"
        return rel, entry
    if native:
        dest = os.path.join(resample_to, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.lexists(dest):
            os.symlink(os.path.abspath(path), dest)
        return rel, entry
    dest_rel = os.path.splitext(rel)[0] + ".wav"
    return dest_rel, convert(entry, os.path.join(resample_to, dest_rel))


def build(root: str, rels: Sequence[str], resample_to: Optional[str], min_seconds: float,
          max_seconds: Optional[float], workers: int, progress: bool = True) -> List[Tuple[str, Entry]]:
    """(listed relpath, Entry) for every file, in input order."""
    jobs = [(root, rel, resample_to, min_seconds, max_seconds) for rel in rels]
    bar = dict(total=len(jobs), unit="file", desc="checking", disable=not progress)
    if workers <= 1:
        return [process(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(process, jobs, chunksize=64), **bar))


def write_manifest(path: str, root: str, rows: Sequence[Tuple[str, int]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(os.path.abspath(root) + "\n")
        for rel, frames in rows:
            f.write(f"{rel}\t{frames}\n")


def write_skipped(path: str, root: str, results: Sequence[Tuple[str, Entry]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for _, e in results:
            if not e.ok:
                f.write(f"{os.path.abspath(e.path)}\t{e.reason}\t{e.detail}\n")


def split(rows: List[Tuple[str, int]], valid_fraction: float, seed: int) -> Tuple[list, list]:
    """Deterministic for a seed: rows are sorted, then a seeded permutation picks the valid part."""
    rows = sorted(rows)
    n_valid = int(round(len(rows) * valid_fraction))
    valid_idx = set(np.random.default_rng(seed).permutation(len(rows))[:n_valid].tolist())
    train = [r for i, r in enumerate(rows) if i not in valid_idx]
    valid = [r for i, r in enumerate(rows) if i in valid_idx]
    return train, valid


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write fairseq train/valid manifests for a folder of audio.")
    p.add_argument("root", help="folder scanned recursively")
    p.add_argument("--dest", required=True, help="output folder for train.tsv, valid.tsv, skipped.tsv")
    p.add_argument("--ext", default="wav,flac,ogg,mp3", help="comma-separated extensions")
    p.add_argument("--valid-percent", type=float, default=0.01, help="fraction (0-1) of files for valid.tsv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-seconds", type=float, default=0.0)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--resample-to", default=None, help="convert non-16 kHz-mono audio into this folder")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    return p


def main(args) -> Dict[str, object]:
    if not os.path.isdir(args.root):
        raise SystemExit(f"e2v-manifest: {args.root} is not a directory")
    if not 0 <= args.valid_percent < 1:
        raise SystemExit(f"e2v-manifest: --valid-percent {args.valid_percent} must be a fraction in [0, 1)")
    rels = scan(args.root, args.ext.split(","))
    results = build(args.root, rels, args.resample_to, args.min_seconds, args.max_seconds, args.workers, not args.quiet)
    kept = [(rel, e.frames) for rel, e in results if e.ok]
    train, valid = split(kept, args.valid_percent, args.seed)
    os.makedirs(args.dest, exist_ok=True)
    root = args.resample_to or args.root
    write_manifest(os.path.join(args.dest, "train.tsv"), root, train)
    write_manifest(os.path.join(args.dest, "valid.tsv"), root, valid)
    write_skipped(os.path.join(args.dest, "skipped.tsv"), args.root, results)
    reasons = Counter(e.reason for _, e in results if not e.ok)
    return {"found": len(rels), "kept": len(kept), "converted": sum(e.converted for _, e in results),
            "train": len(train), "valid": len(valid), "skipped": {r: reasons[r] for r in REASONS if reasons[r]},
            "hours": sum(f for _, f in kept) / TARGET_RATE / 3600}


def cli_main() -> None:
    # force: importing fairseq already configured the root logger at DEBUG
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args()
    s = main(args)
    skipped = ", ".join(f"{k}: {v}" for k, v in s["skipped"].items()) or "none"
    print(f"e2v-manifest: found {s['found']}, kept {s['kept']} ({s['hours']:.2f} h; train {s['train']}, "
          f"valid {s['valid']}), converted {s['converted']}, skipped {sum(s['skipped'].values())} ({skipped}); "
          f"list of skipped files: {os.path.join(args.dest, 'skipped.tsv')}")


if __name__ == "__main__":
    cli_main()
