"""Console script ``e2v-synth-corpus``: a synthetic 16 kHz corpus with train/valid manifests.

The audio itself comes from :mod:`emotion2vec_plugin.data.synthetic`; this file is only the
command line around it.
"""

from pathlib import Path
from typing import List, Optional

from emotion2vec_plugin.cli import run_main
from emotion2vec_plugin.data.synthetic import write_corpus


def get_parser():
    import argparse

    p = argparse.ArgumentParser(description="Write a synthetic 16 kHz corpus with train/valid manifests.")
    p.add_argument("dest", help="output folder (wav/ and train.tsv, valid.tsv)")
    p.add_argument("--train", type=int, default=200, help="training utterances")
    p.add_argument("--valid", type=int, default=20, help="validation utterances")
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--max-seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args) -> Path:
    if args.train < 1 or args.valid < 0:
        raise ValueError(f"--train {args.train} --valid {args.valid}: need at least 1 training utterance and "
                         f"0 or more validation utterances")
    if not 0 < args.min_seconds < args.max_seconds:
        raise ValueError(f"--min-seconds {args.min_seconds} --max-seconds {args.max_seconds}: need "
                         f"0 < min < max")
    if Path(args.dest).exists() and not Path(args.dest).is_dir():
        raise ValueError(f"{args.dest}: is a file, expected a folder to write wav/, train.tsv and valid.tsv into")
    return write_corpus(Path(args.dest), (("train", args.train), ("valid", args.valid)),
                        int(args.min_seconds * 16000), int(args.max_seconds * 16000), args.seed)


def cli_main(argv: Optional[List[str]] = None) -> None:
    """Console script ``e2v-synth-corpus``: bad input is one ``e2v-synth-corpus: error: ...`` line and exit 2."""
    args = get_parser().parse_args(argv)
    root = run_main("e2v-synth-corpus", main, args, (ValueError,))
    print(f"wrote {args.train} + {args.valid} utterances and manifests to {root}")


if __name__ == "__main__":
    cli_main()
