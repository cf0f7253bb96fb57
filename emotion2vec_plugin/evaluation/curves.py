"""Learning curves of a pretraining run against updates (the library behind ``e2v-curves``).

Three panels: the loss (training, every ``common.log_interval`` updates, and validation), the
teacher-target and student-prediction std (``target_var``, ``pred_var``: a collapse shows as
both falling towards 0) and the emotion probe's UA (every logged layer / normalisation), with
update 0 (the initial weights) and a horizontal log-mel reference line.

Sources, from a run folder (the working directory of ``fairseq-hydra-train``):

* ``RUN/hydra_train.log``: fairseq's ``train_inner`` and ``valid`` lines (``simple`` or ``json``
  log format; a resumed run appends to the same log, a repeated update keeps its last value);
* ``RUN/checkpoints/probe.jsonl``: written by the in-training probe (``task.probe_data``), with the
  update-0 and log-mel records;
* or, for a run trained without ``task.probe_data``, ``--probe-data DIR`` probes its saved
  checkpoints now (``checkpoint_*_N.pt`` / ``checkpoint_N.pt``, the student, with the same
  linear probe), plus the architecture with random weights (``--random-init SEED``) as update 0
  and log-mel filterbanks.

The command line (and ``--probe-data``) is :mod:`emotion2vec_plugin.evaluation.curves_cli`.
"""

import json
import logging
import os
import re
from typing import Dict, List, Optional

logger = logging.getLogger(__name__)


def _parse_stats(text: str) -> Dict[str, float]:
    """``key=value, ...`` (train_inner, simple), ``| key value |`` (valid, simple) or a JSON dict."""
    text = text.strip()
    if text.startswith("{"):
        try:
            out = {}
            for k, v in json.loads(text).items():
                try:
                    out[k] = float(v)
                except (TypeError, ValueError):
                    pass
            return out
        except json.JSONDecodeError:
            return {}
    out = {}
    for part in re.split(r",\s|\s\|\s", text):
        m = re.fullmatch(r"\s*(\w+)[= ]([-+\d.eE]+|nan|inf)\s*", part)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def read_log(path: str) -> Dict[str, Dict[int, Dict[str, float]]]:
    """{"train": {update: stats}, "valid": {update: stats}} from a fairseq training log."""
    series: Dict[str, Dict[int, Dict[str, float]]] = {"train": {}, "valid": {}}
    if not os.path.isfile(path):
        return series
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "][train_inner][" in line:
                kind = "train"
            elif "][valid][" in line:
                kind = "valid"
            else:
                continue
            body = line.split("] - ", 1)[-1]
            if kind == "train" and not body.lstrip().startswith("{"):
                body = re.sub(r"^epoch \d+:\s+\d+ / \d+\s+", "", body.strip())
            stats = _parse_stats(body)
            if "num_updates" in stats:
                series[kind][int(stats["num_updates"])] = stats
    return series


def read_probe_log(path: str) -> List[dict]:
    """Records of ``probe.jsonl`` (later records for the same update and features win)."""
    if not os.path.isfile(path):
        return []
    records = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning("%s:%d: not a JSON record, skipped", path, lineno)
                    continue
                records[(r["update"], r["features"])] = r
    return sorted(records.values(), key=lambda r: (r["update"], r["features"] == "fbank"))


def build_curves(run: str, probe_log: Optional[str] = None) -> dict:
    log = read_log(os.path.join(run, "hydra_train.log"))
    probe = read_probe_log(probe_log or os.path.join(run, "checkpoints", "probe.jsonl"))
    return {"train": log["train"], "valid": log["valid"], "probe": probe}


def probe_series(records: List[dict]) -> Dict[str, Dict[int, float]]:
    """{probe key (e.g. last, mean_gnorm): {update: UA}} over the network records (not log-mel)."""
    out: Dict[str, Dict[int, float]] = {}
    for r in records:
        if r["features"] != "fbank":
            for key, res in r["results"].items():
                out.setdefault(key, {})[r["update"]] = res["UA"]
    return out


def reference_lines(records: List[dict]) -> Dict[str, float]:
    """{fbank, fbank_gnorm: UA} of the log-mel reference record(s)."""
    out = {}
    for r in records:
        if r["features"] == "fbank":
            out.update({k: v["UA"] for k, v in r["results"].items()})
    return out


def plot_curves(curves: dict, path: str, title: str = "") -> None:
    """The three panels as a PNG (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    ax_loss, ax_var, ax_probe = fig.subplots(1, 3)
    for kind, style in (("train", "-"), ("valid", "o-")):
        series = curves[kind]
        ups = sorted(u for u in series if "loss" in series[u])
        if ups:
            ax_loss.plot(ups, [series[u]["loss"] for u in ups], style, ms=3, label=f"{kind} loss")
    ax_loss.set_yscale("log")
    ax_loss.set_title("loss", fontsize=9)
    train = curves["train"]
    for key in ("target_var", "pred_var"):
        ups = sorted(u for u in train if key in train[u])
        if ups:
            ax_var.plot(ups, [train[u][key] for u in ups], label=key)
    ax_var.set_title("teacher target / student prediction std", fontsize=9)
    series = probe_series(curves["probe"])
    for i, (key, points) in enumerate(series.items()):
        ups = sorted(points)
        ax_probe.plot(ups, [100 * points[u] for u in ups], "o-" if i == 0 else "o--", ms=3, lw=2 if i == 0 else 1,
                      label=f"{key}{' (probe_ua)' if i == 0 else ''}")
    for key, value in reference_lines(curves["probe"]).items():
        ax_probe.axhline(100 * value, color="gray", ls="-" if key == "fbank" else ":", lw=1,
                         label=f"log-mel{' (per-group norm.)' if key != 'fbank' else ''} {100 * value:.1f}")
    ax_probe.set_title("linear probe UA (%), update 0 = initial weights", fontsize=9)
    for ax in (ax_loss, ax_var, ax_probe):
        ax.set_xlabel("updates")
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
