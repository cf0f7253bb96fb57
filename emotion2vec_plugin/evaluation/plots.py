"""Plots of probe results as PNG (matplotlib's Agg canvas, no pyplot state): the t-SNE of
utterance embeddings (``e2v-probe --plot``) and a confusion-matrix heat map (``e2v-probe
--confusion-plot``, ``e2v-predict``) and the UA bars of ``e2v-benchmark``."""

import os
from typing import Dict, Sequence

import numpy as np

from .mlp_probe import ProbeInputError


def plot_embeddings(embeddings: np.ndarray, labels: Sequence[str], path: str, seed: int = 0) -> None:
    """2-D t-SNE of utterance embeddings [N, D] coloured by label (cf. the paper's Fig. 3), as PNG.

    Embeddings are standardised per dimension first so that no single large-scale dimension
    dominates the distances.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    emb = np.asarray(embeddings, dtype=np.float64)
    if len(emb) < 4:
        raise ProbeInputError(f"t-SNE plot {path}: needs at least 4 utterances, got {len(emb)}")
    emb = (emb - emb.mean(axis=0)) / np.maximum(emb.std(axis=0), 1e-6)
    perplexity = min(30.0, (len(emb) - 1) / 3.0)  # TSNE requires perplexity < n_samples
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb)
    fig = Figure(figsize=(5.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = np.asarray(labels)
    for c, name in enumerate(sorted(set(labels.tolist()))):
        sel = labels == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=10, alpha=0.8, color=f"C{c % 10}", label=name)
    ax.set_title(f"t-SNE of utterance embeddings (mean-pooled features, N={len(emb)})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, markerscale=1.5)
    fig.tight_layout()
    _savefig(fig, path)


def plot_confusion(confusion: Dict[str, object], path: str, title: str = "confusion, all folds") -> None:
    """Heat map of a confusion matrix (``{"labels", "matrix"}``, rows = true, cols = predicted):
    colour = row-normalised recall, text = recall % and count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(confusion["matrix"], dtype=np.int64)
    names = list(confusion["labels"])
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.7 * len(names)
    fig = Figure(figsize=(size + 1.2, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{100 * recall[i, j]:.0f}%\n{counts[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if recall[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)


def _savefig(fig, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)



def plot_benchmark(rows: Sequence[Dict[str, object]], path: str, title: str = "e2v-benchmark") -> None:
    """Bar chart of UA per corpus (mean ± std over folds, %), one bar per feature set: the rows of
    ``e2v-benchmark``'s ``results.json`` (``corpus``, ``features``, ``UA`` {mean, std}, ``folds``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    corpora = list(dict.fromkeys(str(r["corpus"]) for r in rows))
    sets = list(dict.fromkeys(str(r["features"]) for r in rows))
    width = 0.8 / max(1, len(sets))
    fig = Figure(figsize=(max(4.5, 1.3 * len(corpora) * max(1, len(sets)) ** 0.5 + 2), 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k, name in enumerate(sets):
        xs, means, stds = [], [], []
        for c, corpus in enumerate(corpora):
            row = next((r for r in rows if r["corpus"] == corpus and r["features"] == name), None)
            if row is not None:
                xs.append(c - 0.4 + width * (k + 0.5))
                means.append(100 * row["UA"]["mean"])
                stds.append(100 * row["UA"]["std"])
        ax.bar(xs, means, width, yerr=stds, capsize=3, color=f"C{k % 10}", label=name)
    ax.set_xticks(range(len(corpora)), corpora, rotation=20 if len(corpora) > 4 else 0)
    ax.set_ylabel("UA (%), mean ± std over folds")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, path)
