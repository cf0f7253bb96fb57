"""``e2v-validate-manifest M.tsv``: re-check a manifest before a long run.

Checks the root line, that every file exists and is readable, is 16 kHz mono and has the listed
length. Exits non-zero listing the first problems as ``manifest:line: what (expected X, got Y)``.
"""

import argparse
import os
import sys
from typing import List

from emotion2vec_plugin.data.manifest import ManifestError, read_manifest

from .audio_info import TARGET_RATE, inspect


def check(path: str, limit: int = 20) -> List[str]:
    """Problems of manifest ``path`` as ``path:line: message`` strings (at most ``limit``)."""
    try:
        manifest = read_manifest(path)
    except ManifestError as e:
        return [str(e)]
    problems = []
    for i in range(len(manifest)):
        where, file = manifest.where(i), manifest.full_path(i)
        if not os.path.isfile(file):
            problems.append(f"{where}: {file} does not exist")
        else:
            e = inspect(file)
            if not e.ok:
                problems.append(f"{where}: {file} is {e.reason} ({e.detail})")
            elif e.samplerate != TARGET_RATE or e.channels != 1:
                problems.append(f"{where}: {file} is {e.samplerate} Hz with {e.channels} channel(s) "
                                f"(expected {TARGET_RATE} Hz mono; rebuild with e2v-manifest --resample-to)")
            elif e.frames != manifest.sizes[i]:
                problems.append(f"{where}: length mismatch (expected {manifest.sizes[i]} as listed, "
                                f"got {e.frames} in the file)")
        if len(problems) >= limit:
            break
    return problems


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Re-check a fairseq wav manifest.")
    p.add_argument("manifest")
    p.add_argument("--limit", type=int, default=20, help="stop after this many problems")
    return p


def main(args) -> List[str]:
    return check(args.manifest, args.limit)


def cli_main() -> None:
    args = get_parser().parse_args()
    problems = main(args)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"e2v-validate-manifest: {len(problems)} problem(s) (first {args.limit} shown at most)", file=sys.stderr)
        raise SystemExit(1)
    n = len(read_manifest(args.manifest))
    print(f"e2v-validate-manifest: {args.manifest}: {n} utterances OK")


if __name__ == "__main__":
    cli_main()
