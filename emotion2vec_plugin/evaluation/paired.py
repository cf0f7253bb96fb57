"""Paired comparison of two feature sets probed on the same folds (the demo's verdict).

Speaker folds differ far more from each other than feature sets do (one speaker can be at
chance for every feature set), so "difference of means against a fold std" mostly measures the
folds. A paired statistic removes them: for every fold g, ``d_g = score_A(g) - score_B(g)``
(each score the mean over the probe seeds, which removes most of the probe's own training
noise), then

* mean difference with a two-sided Student-t confidence interval over the n folds
  (``mean ± t_{n-1, 0.975} · sd / sqrt(n)``);
* sign test: folds A wins / loses / ties (|d| < 1e-9), two-sided binomial p-value of the wins
  among the non-tied folds (exact, no normality assumption; with 6 folds the smallest possible
  p is 2/64 = 0.031).

The verdict says "beats" only when the interval lies above zero *and* the sign test agrees at the
same level (p < 1 - confidence), "is worse" likewise below zero, and otherwise "no significant
difference", with the numbers either way. The sign test guards the interval where it degenerates:
a constant difference over a few folds (sd 0) gives a zero-width interval, but 2 folds won of 2 is
p = 0.5, not evidence.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


def fold_scores(result: dict, metric: str = "UA") -> Dict[str, float]:
    """{fold group: score} of an ``e2v-probe`` result (seed-averaged when it holds several seeds)."""
    return {f["group"]: float(f[metric]) for f in result["folds"]}


def num_seeds(result: dict) -> int:
    return len(result.get("seed_runs", [])) or 1


def paired_comparison(a: dict, b: dict, metric: str = "UA", confidence: float = 0.95) -> dict:
    """Compare probe results ``a`` and ``b`` fold by fold (see module docstring).

    Returns {"metric", "n_folds", "seeds": [a, b], "mean_diff", "sd_diff", "ci": [lo, hi] or None
    (fewer than 2 folds), "confidence", "wins", "losses", "ties", "sign_p", "per_fold": {group: d}}.
    Raises ValueError when the two results share no fold.
    """
    from scipy import stats

    sa, sb = fold_scores(a, metric), fold_scores(b, metric)
    groups = [g for g in sa if g in sb]
    if not groups:
        raise ValueError(f"the two probe results share no fold (folds {sorted(sa)} vs {sorted(sb)}); probe both "
                         f"feature sets with the same labels and groups")
    d = np.array([sa[g] - sb[g] for g in groups])
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    ci: Optional[List[float]] = None
    if n > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        ci = [mean - half, mean + half]
    wins, losses = int((d > 1e-9).sum()), int((d < -1e-9).sum())
    sign_p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    return {"metric": metric, "n_folds": n, "seeds": [num_seeds(a), num_seeds(b)], "mean_diff": mean,
            "sd_diff": sd, "ci": ci, "confidence": confidence, "wins": wins, "losses": losses,
            "ties": n - wins - losses,
            "sign_p": sign_p, "per_fold": {g: float(x) for g, x in zip(groups, d)}}


def decision(cmp: dict) -> int:
    """+1 when A beats B (interval above 0 and the sign test at the same level), -1 when A is worse
    (interval below 0, sign test), 0 otherwise (no significant difference, or a single fold)."""
    if cmp["ci"] is None or cmp["sign_p"] >= 1 - cmp["confidence"]:
        return 0
    return 1 if cmp["ci"][0] > 0 else -1 if cmp["ci"][1] < 0 else 0


def aim(comparisons: Sequence[Tuple[str, dict]]) -> dict:
    """The demo's aim (issue 14) for one feature variant: the pretrained features beat every
    reference (``comparisons`` = [(name, paired_comparison(pretrained, reference))], e.g. random
    weights and log-mel) by a paired verdict of "beats", *and* on every fold but at most one.

    Returns {"met": bool, "text": one clause per reference with its folds won and interval}."""
    met, parts = True, []
    for name, cmp in comparisons:
        ok = decision(cmp) > 0 and cmp["wins"] >= cmp["n_folds"] - 1
        met = met and ok
        ci = (f", {int(100 * cmp['confidence'])}% CI {100 * cmp['ci'][0]:+.1f} to {100 * cmp['ci'][1]:+.1f}"
              if cmp["ci"] is not None else "")
        parts.append(f"vs {name} better on {cmp['wins']} of {cmp['n_folds']} folds, {100 * cmp['mean_diff']:+.1f} "
                     f"points{ci}, sign p = {cmp['sign_p']:.2f}{'' if ok else ' (short)'}")
    return {"met": bool(met and comparisons), "text": "; ".join(parts)}


def verdict(cmp: dict, a_name: str, b_name: str) -> str:
    """One sentence with the decision and its numbers (points = percentage points)."""
    m = 100 * cmp["mean_diff"]
    seeds = "/".join(str(s) for s in sorted(set(cmp["seeds"])))
    where = (f"over {cmp['n_folds']} speaker folds x {seeds} probe seed(s); better on {cmp['wins']}, worse on "
             f"{cmp['losses']}, tied on {cmp['ties']} folds, sign test p = {cmp['sign_p']:.2f}")
    if cmp["ci"] is None:
        return (f"{a_name} vs {b_name}: {m:+.1f} {cmp['metric']} points on a single fold ({where}); "
                f"too few folds to decide")
    lo, hi = (100 * x for x in cmp["ci"])
    ci = f"{int(100 * cmp['confidence'])}% CI {lo:+.1f} to {hi:+.1f}"
    decided = decision(cmp)
    if decided > 0:
        return f"{a_name} beats {b_name} by {m:.1f} {cmp['metric']} points ({ci}, {where})"
    if decided < 0:
        return f"{a_name} is worse than {b_name} by {-m:.1f} {cmp['metric']} points ({ci}, {where})"
    return f"no significant difference between {a_name} and {b_name}: {m:+.1f} {cmp['metric']} points ({ci}, {where})"
