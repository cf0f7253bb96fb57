"""Console script ``e2v-curves RUN``: learning curves of a pretraining run (see
:mod:`emotion2vec_plugin.evaluation.curves` for the sources and panels).

This is the command-line layer: ``--probe-data`` probes a run's saved checkpoints now with the
in-training probe (:class:`~emotion2vec_plugin.tasks.training_probe.TrainingProbe`), so this module
(and only this one) reaches from ``evaluation`` up to ``tasks``; the curves library does not.
Outputs: ``--out PNG`` and ``--json FILE`` (the parsed series, for reports).
"""

import argparse
import glob
import json
import logging
import os
import re
from typing import Dict, List

from .curves import build_curves, plot_curves, probe_series, reference_lines

logger = logging.getLogger(__name__)


def checkpoint_updates(ckpt_dir: str) -> List[tuple]:
    """(update, path) of the saved update checkpoints, sorted; ``checkpoint_last.pt`` if there are none."""
    found = {}
    for path in glob.glob(os.path.join(ckpt_dir, "checkpoint_*.pt")):
        m = re.fullmatch(r"checkpoint_(?:\d+_)?(\d+)\.pt", os.path.basename(path))
        if m:
            found[int(m.group(1))] = path
    if not found and os.path.isfile(os.path.join(ckpt_dir, "checkpoint_last.pt")):
        from ..checkpoint.safe_load import load_checkpoint

        path = os.path.join(ckpt_dir, "checkpoint_last.pt")
        state = load_checkpoint(path)  # weights_only with fairseq's config classes allowed
        found[int(state["optimizer_history"][-1]["num_updates"])] = path
    return sorted(found.items())


def probe_checkpoints(run: str, probe_data: str, split: str, layers: str, normalize: str,
                      random_init: int) -> List[dict]:
    """Probe a run's saved checkpoints now (student, linear probe), with update 0 = random weights."""
    import torch

    from ..formats.load import load_pretrained
    from ..modules.encoder import Emotion2vecEncoder
    from ..tasks.training_probe import ProbeSettings, TrainingProbe

    ckpts = checkpoint_updates(os.path.join(run, "checkpoints"))
    if not ckpts:
        raise SystemExit(f"e2v-curves: no checkpoints under {os.path.join(run, 'checkpoints')}")
    records: List[dict] = []
    probe = None
    for update, path in ckpts:
        model, settings = load_pretrained(path)
        if probe is None:
            probe = TrainingProbe(ProbeSettings(data=probe_data, split=split, layers=layers, normalize=normalize,
                                                sample_rate=settings.sample_rate,
                                                normalize_audio=settings.normalize))
            probe.save_dir = None
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(random_init)
                random_model = Emotion2vecEncoder(model.encoder_cfg, with_decoder=False)
            records.append(_record(0, "student", probe.run(random_model.eval(), 0), probe))
            records.append(_record(0, "fbank", probe.run_fbank(), probe))
        records.append(_record(update, "student", probe.run(model.eval(), update), probe))
    return records


def _record(update: int, features: str, metrics: Dict[str, float], probe) -> dict:
    results = {k[len("probe_ua_"):]: {"UA": v, "WA": metrics.get("probe_wa_" + k[len("probe_ua_"):])}
               for k, v in metrics.items() if k.startswith("probe_ua_")}
    return {"update": update, "features": features, "results": results}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e2v-curves", description="Learning curves (loss, target/prediction std, "
                                "probe UA against updates) of a fairseq-hydra-train run of emotion2vec.")
    p.add_argument("run", help="the run's working directory (hydra_train.log, checkpoints/)")
    p.add_argument("--out", default=None, help="PNG to write (default: RUN/curves.png)")
    p.add_argument("--json", default=None, help="also write the parsed series here")
    p.add_argument("--probe-log", default=None, help="probe records (default: RUN/checkpoints/probe.jsonl)")
    p.add_argument("--probe-data", default=None,
                   help="probe the saved checkpoints now with this labelled folder (e2v-labels output) instead of "
                        "reading probe.jsonl (for runs trained without task.probe_data)")
    p.add_argument("--split", default="probe", help="labelled manifest name in --probe-data")
    p.add_argument("--layers", default="last,mean", help="as task.probe_layers")
    p.add_argument("--normalize", default="both", choices=["none", "group", "both"], help="as task.probe_normalize")
    p.add_argument("--random-init", type=int, default=0, metavar="SEED",
                   help="with --probe-data: seed of the random weights probed as update 0")
    p.add_argument("--title", default="")
    return p


def main(args) -> dict:
    curves = build_curves(args.run, args.probe_log)
    if args.probe_data:
        curves["probe"] = probe_checkpoints(args.run, args.probe_data, args.split, args.layers, args.normalize,
                                            args.random_init)
    if not curves["train"] and not curves["probe"]:
        log = os.path.join(args.run, "hydra_train.log")
        raise SystemExit(f"e2v-curves: nothing to plot: no training lines in {log} "
                         f"and no probe records")
    out = args.out or os.path.join(args.run, "curves.png")
    plot_curves(curves, out, args.title)
    logger.info("wrote %s (%d training points, %d validations, %d probe records)", out, len(curves["train"]),
                len(curves["valid"]), len(curves["probe"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"train": curves["train"], "valid": curves["valid"], "probe": curves["probe"],
                       "probe_ua": probe_series(curves["probe"]), "log_mel": reference_lines(curves["probe"])},
                      f, indent=1)
    return curves


def cli_main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    main(get_parser().parse_args())


if __name__ == "__main__":
    cli_main()
