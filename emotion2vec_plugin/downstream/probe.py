"""``e2v-probe``: the emotion2vec paper's downstream probe with leave-one-group-out folds.

Frozen frame features [T, D] -> Linear(D, 256) -> ReLU -> masked mean over time -> Linear(256, C)
(paper §4.2, Table 2). For each group (IEMOCAP session, speaker, ...) the probe is trained on
the other groups, with ``--valid-fraction`` (20%) of their utterances held out for early
stopping on validation UA, and scored on the held-out group: WA (accuracy), UA (balanced
accuracy), WF1 (weighted F1), confusion matrix; then mean ± std over folds.

Features are standardised per dimension with the training folds' statistics, so that feature
sets of different scales (log-mel vs network outputs) are probed on equal terms.
"""

import argparse
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
from tqdm import tqdm

from .features import load_features

logger = logging.getLogger(__name__)


class ProbeInputError(ValueError):
    """Labels or groups that do not match the features; names both files and counts."""


@dataclass
class ProbeConfig:
    hidden: int = 256
    epochs: int = 100
    patience: int = 10
    lr: float = 5e-4
    batch_size: int = 32
    optimizer: str = "adam"
    valid_fraction: float = 0.2
    seed: int = 0
    device: str = "cpu"


class UtteranceProbe(nn.Module):
    """[B, T, D] frames (+ padding mask [B, T], True = padded) -> [B, C] logits."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = torch.relu(self.proj(x))  # [B, T, H]
        if padding_mask is None:
            pooled = h.mean(dim=1)
        else:
            keep = (~padding_mask).unsqueeze(-1).to(h.dtype)  # [B, T, 1]
            pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1)
        return self.out(pooled)


def pad_batch(arrays: Sequence[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
    """List of [T_i, D] -> x [B, T_max, D] (zeros where padded) and padding mask [B, T_max]."""
    T = max(a.shape[0] for a in arrays)
    x = torch.zeros(len(arrays), T, arrays[0].shape[1])
    mask = torch.ones(len(arrays), T, dtype=torch.bool)
    for i, a in enumerate(arrays):
        x[i, : len(a)] = torch.from_numpy(a)
        mask[i, : len(a)] = False
    return x, mask


def scores(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> Dict[str, object]:
    return {
        "WA": float(accuracy_score(y_true, y_pred)),
        "UA": float(balanced_accuracy_score(y_true, y_pred)),
        "WF1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=list(range(num_classes))).tolist(),
    }


def predict(model: UtteranceProbe, feats: List[np.ndarray], idx: Sequence[int], batch_size: int, device) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            x, m = pad_batch([feats[i] for i in idx[s:s + batch_size]])
            out.append(model(x.to(device), m.to(device)).argmax(dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=int)


def train_probe(feats: List[np.ndarray], y: np.ndarray, train: List[int], valid: List[int], num_classes: int,
                cfg: ProbeConfig, seed: int) -> UtteranceProbe:
    """Train on ``train``; keep the state with the best validation UA (early stopping)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = torch.device(cfg.device)
    model = UtteranceProbe(feats[0].shape[1], num_classes, cfg.hidden).to(device)
    if cfg.optimizer == "rmsprop":  # the official emotion2vec IEMOCAP recipe
        opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=cfg.lr / 10, max_lr=cfg.lr, step_size_up=50,
                                                  cycle_momentum=False)
    else:
        opt, sched = torch.optim.Adam(model.parameters(), lr=cfg.lr), None
    best, best_state, waited = -1.0, None, 0
    for _ in range(cfg.epochs):
        model.train()
        order = rng.permutation(train)
        for s in range(0, len(order), cfg.batch_size):
            x, m = pad_batch([feats[i] for i in order[s:s + cfg.batch_size]])
            loss = nn.functional.cross_entropy(model(x.to(device), m.to(device)),
                                               torch.from_numpy(y[order[s:s + cfg.batch_size]]).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        ua = balanced_accuracy_score(y[valid], predict(model, feats, valid, cfg.batch_size, device))
        if ua > best:
            best, best_state, waited = ua, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return model


def standardise(feats: List[np.ndarray], train: Sequence[int]) -> List[np.ndarray]:
    frames = np.concatenate([feats[i] for i in train])
    mean, std = frames.mean(axis=0), frames.std(axis=0) + 1e-5
    return [((f - mean) / std).astype(np.float32) for f in feats]


def cross_validate(feats: List[np.ndarray], labels: Sequence[str], groups: Sequence[str], cfg: ProbeConfig,
                   progress: bool = False) -> dict:
    """Leave-one-group-out probe; returns the JSON-ready result (see module docstring)."""
    names = sorted(set(labels))
    y = np.array([names.index(label) for label in labels])
    fold_keys = sorted(set(groups))
    if len(fold_keys) < 2:
        raise ProbeInputError(f"need at least 2 groups for leave-one-group-out folds, got {fold_keys}")
    groups = np.asarray(groups)
    folds = []
    for k, g in enumerate(tqdm(fold_keys, desc="folds", disable=not progress)):
        test = np.flatnonzero(groups == g).tolist()
        rest = np.random.default_rng(cfg.seed + k).permutation(np.flatnonzero(groups != g))
        n_valid = max(1, int(round(len(rest) * cfg.valid_fraction)))
        valid, train = sorted(rest[:n_valid].tolist()), sorted(rest[n_valid:].tolist())
        normed = standardise(feats, train)
        model = train_probe(normed, y, train, valid, len(names), cfg, cfg.seed + k)
        pred = predict(model, normed, test, cfg.batch_size, torch.device(cfg.device))
        folds.append({"group": str(g), "n_train": len(train), "n_valid": len(valid), "n_test": len(test),
                      **scores(y[test], pred, len(names))})
    summary = {m: {"mean": float(np.mean([f[m] for f in folds])), "std": float(np.std([f[m] for f in folds]))}
               for m in ("WA", "UA", "WF1")}
    total = np.sum([f["confusion"] for f in folds], axis=0).tolist()
    return {"config": asdict(cfg), "labels": names, "folds": folds, "summary": summary, "confusion_total": total}


def read_lines(path: str, what: str) -> List[str]:
    if not os.path.isfile(path):
        raise ProbeInputError(f"{what} file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def plot_embeddings(feats: List[np.ndarray], labels: Sequence[str], path: str, seed: int) -> None:
    """t-SNE of utterance embeddings (time-mean features), coloured by label (paper Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    emb = np.stack([f.mean(axis=0) for f in feats])
    emb = (emb - emb.mean(axis=0)) / (emb.std(axis=0) + 1e-5)
    xy = TSNE(n_components=2, perplexity=min(30.0, max(2.0, len(emb) / 4)), random_state=seed,
              init="pca").fit_transform(emb)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name in sorted(set(labels)):
        sel = np.array([label == name for label in labels])
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, label=name)
    ax.set_title("t-SNE of utterance embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(result["confusion_total"], dtype=float)
    cm = cm / cm.sum(axis=1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    names = result["labels"]
    ax.set_xticks(range(len(names)), names, rotation=45)
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (rows normalised, all folds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Leave-one-group-out emotion probe on frozen features (emotion2vec paper protocol).")
    p.add_argument("features", help="stacked prefix (PREFIX.npy + PREFIX.lengths) or a features dir with index.tsv")
    p.add_argument("labels", help="one label per line, same order as the features")
    p.add_argument("--groups", required=True, help="one fold key per line (session, speaker)")
    p.add_argument("--out", default=None, help="results JSON")
    d = ProbeConfig()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--patience", type=int, default=d.patience, help="epochs without validation UA gain before stopping")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--optimizer", choices=["adam", "rmsprop"], default=d.optimizer,
                   help="adam, or rmsprop with a cyclic LR (official emotion2vec IEMOCAP recipe)")
    p.add_argument("--valid-fraction", type=float, default=d.valid_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--plot", default=None, help="t-SNE plot of utterance embeddings (PNG)")
    p.add_argument("--confusion-plot", default=None, help="confusion-matrix heat map (PNG)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(args) -> dict:
    feats = load_features(args.features)
    labels = read_lines(args.labels, "labels")
    groups = read_lines(args.groups, "groups")
    for what, values, path in (("labels", labels, args.labels), ("groups", groups, args.groups)):
        if len(values) != len(feats):
            raise ProbeInputError(f"{path} has {len(values)} {what} but {args.features} holds {len(feats)} utterances; "
                                  f"both must follow the same manifest")
    cfg = ProbeConfig(hidden=args.hidden, epochs=args.epochs, patience=args.patience, lr=args.lr,
                      batch_size=args.batch_size, optimizer=args.optimizer, valid_fraction=args.valid_fraction,
                      seed=args.seed, device=args.device)
    result = cross_validate(feats, labels, groups, cfg, progress=not args.quiet)
    result["features"] = os.path.abspath(args.features)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    if args.plot:
        plot_embeddings(feats, labels, args.plot, args.seed)
    if args.confusion_plot:
        plot_confusion(result, args.confusion_plot)
    return result


def cli_main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = get_parser().parse_args()
    try:
        result = main(args)
    except (ProbeInputError, ValueError) as e:
        raise SystemExit(f"e2v-probe: {e}")
    print(f"{'fold':>12} {'n':>5} {'WA':>6} {'UA':>6} {'WF1':>6}")
    for f in result["folds"]:
        print(f"{f['group']:>12} {f['n_test']:>5} {100 * f['WA']:6.1f} {100 * f['UA']:6.1f} {100 * f['WF1']:6.1f}")
    s = result["summary"]
    print(f"{'mean ± std':>12} {'':>5} " + " ".join(f"{100 * s[m]['mean']:.1f}±{100 * s[m]['std']:.1f}" for m in ("WA", "UA", "WF1")))


if __name__ == "__main__":
    cli_main()
