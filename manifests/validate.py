"""``e2v-validate-manifest M.tsv [M2.tsv ...]``: re-check fairseq wav manifests before a long run.

For every manifest: line 1 must be an existing folder; every listed file must exist, be
readable (the same checks as ``e2v-manifest``, see :func:`manifests.audio_info.inspect`), be
16 kHz mono and have the listed length. Problems are reported as
``manifest:line: what is wrong (expected X, got Y)``, the first ``--limit`` of them on stderr,
and the exit status is 1; with no problem it prints one OK line per manifest and exits 0.

The manifest is parsed by :func:`emotion2vec_plugin.data.manifest.read_manifest`, the same
reader the training task uses.
"""

import argparse
import logging
import os
import sys
from typing import List, Optional, Sequence, Tuple

from emotion2vec_plugin.cli import run_main
from emotion2vec_plugin.data.manifest import Manifest, ManifestError, read_manifest

from .audio_info import TARGET_RATE, inspect, map_chunked

logger = logging.getLogger(__name__)

REBUILD = "rebuild the manifest with e2v-manifest"


def check_entry(entry: Tuple[str, str, int]) -> Optional[str]:
    """Problem of one manifest line (``where``, file, listed length) as ``where: ...``, or None."""
    where, path, listed = entry
    if not os.path.lexists(path):
        return f"{where}: file missing (expected {path}, got nothing there); fix line 1 (the root) or {REBUILD}"
    probe = inspect(path)
    if not probe.ok:
        return f"{where}: {probe.reason} file (expected readable audio, got: {probe.detail}) at {path}; {REBUILD}"
    if probe.samplerate != TARGET_RATE:
        return (f"{where}: wrong sample rate (expected {TARGET_RATE} Hz, got {probe.samplerate} Hz) in {path}; "
                f"{REBUILD} --resample-to OUT")
    if probe.channels != 1:
        return (f"{where}: not mono (expected 1 channel, got {probe.channels}) in {path}; "
                f"{REBUILD} --resample-to OUT")
    if probe.frames != listed:
        return (f"{where}: wrong length (expected {listed} samples as listed, got {probe.frames} in the file) "
                f"for {path}; {REBUILD}")
    return None


class ManifestEntries(Sequence):
    """``(where, file, listed length)`` of each utterance of ``manifest``, made on access: a
    manifest of millions of lines is not turned into millions of tuples, and forked workers
    share its flat buffers (``emotion2vec_plugin/data/columns.py``)."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        m = self.manifest
        return m.where(i), m.full_path(i), int(m.sizes[i])


def check_manifest(manifest: Manifest, workers: int = 1, progress: bool = False) -> List[str]:
    """Problems of every line of a parsed manifest, in line order."""
    entries = ManifestEntries(manifest)
    results = map_chunked(check_entry, entries, workers=workers, progress=progress, desc="validating")
    return [r for r in results if r is not None]


def check(path: str, workers: int = 1, progress: bool = False) -> List[str]:
    """Problems of the manifest file ``path`` as ``path:line: ...`` strings (empty when it is fine)."""
    try:
        manifest = read_manifest(path)
    except ManifestError as e:
        return [str(e)]
    if len(manifest) == 0:
        return [f"{path}:2: no utterances (expected 'relpath<TAB>num_samples' lines after the root, got none); "
                f"{REBUILD}"]
    return check_manifest(manifest, workers, progress)


def get_parser() -> argparse.ArgumentParser:
    """Command-line options of ``e2v-validate-manifest``."""
    p = argparse.ArgumentParser(prog="e2v-validate-manifest",
                                description="Re-check fairseq wav manifests: root, files, 16 kHz mono, lengths.")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST", help="train.tsv, valid.tsv, ...")
    p.add_argument("--limit", type=int, default=20, help="problems printed at most (all are counted)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes reading files (1: no pool); the training start-up check samples large "
                        "manifests and points here to check every file in parallel")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> List[str]:
    """Check every manifest in ``args.manifests``; return all problems (empty list: all fine)."""
    problems: List[str] = []
    for path in args.manifests:
        found = check(path, args.workers, progress=not args.quiet)
        logger.info("%s: %d problem(s)", path, len(found))
        problems.extend(found)
    return problems


def cli_main(argv: Optional[List[str]] = None) -> int:
    """Console script ``e2v-validate-manifest``: exit 1 and list problems, or print OK lines.

    A manifest that cannot be parsed at all (binary, another encoding, a directory) is one
    problem ``path[:line]: ...``; an unreadable input (OSError) is one ``error:`` line, exit 2.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = get_parser().parse_args(argv)
    problems = run_main("e2v-validate-manifest", main, args)
    if problems:
        shown = problems[: max(args.limit, 1)]
        print("\n".join(shown), file=sys.stderr)
        more = f" (first {len(shown)} shown; --limit to see more)" if len(problems) > len(shown) else ""
        print(f"e2v-validate-manifest: {len(problems)} problem(s){more}", file=sys.stderr)
        return 1
    for path in args.manifests:
        m = read_manifest(path)
        print(f"e2v-validate-manifest: {path}: OK, {len(m)} utterances, {int(m.sizes.sum()) / TARGET_RATE / 3600:.2f} h "
              f"at 16 kHz mono, root {m.root}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
