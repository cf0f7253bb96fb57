"""The demo's paired verdict (evaluation/paired.py) against hand computations, and e2v-probe --seeds."""

import numpy as np
import pytest
import torch

from emotion2vec_plugin.data.feature_store import as_feature_set
from emotion2vec_plugin.evaluation import probe_cli
from emotion2vec_plugin.evaluation.paired import aim, paired_comparison, verdict
from emotion2vec_plugin.evaluation.standardize import zscore_per_group


def result(fold_ua, seeds=None):
    """An e2v-probe-shaped result with these per-fold UAs."""
    out = {"folds": [{"group": g, "UA": ua} for g, ua in fold_ua.items()]}
    if seeds:
        out["seed_runs"] = [{"seed": s} for s in range(seeds)]
    return out


def test_paired_statistic_matches_hand_computation():
    a = result({"s1": 0.70, "s2": 0.60, "s3": 0.80, "s4": 0.25}, seeds=3)
    b = result({"s1": 0.60, "s2": 0.55, "s3": 0.70, "s4": 0.25}, seeds=3)
    cmp = paired_comparison(a, b)
    d = np.array([0.10, 0.05, 0.10, 0.0])
    assert cmp["mean_diff"] == pytest.approx(d.mean()) and cmp["sd_diff"] == pytest.approx(d.std(ddof=1))
    half = 3.182446305284263 * d.std(ddof=1) / 2  # t_{3, 0.975} * sd / sqrt(4)
    assert cmp["ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert (cmp["wins"], cmp["losses"], cmp["ties"]) == (3, 0, 1)  # s4 at chance for both: a tie
    assert cmp["sign_p"] == pytest.approx(0.25)  # 2 * 0.5^3
    assert cmp["per_fold"]["s2"] == pytest.approx(0.05) and cmp["seeds"] == [3, 3]
    text = verdict(cmp, "pretraining", "random weights")
    # sd = 0.0479, half-width = 3.182 * 0.0479 / 2 = 0.0762: the interval straddles 0
    assert text.startswith("no significant difference between pretraining and random weights: +6.2 UA points "
                           "(95% CI -1.4 to +13.9, over 4 speaker folds x 3 probe seed(s); better on 3, worse on 0, "
                           "tied on 1 folds, sign test p = 0.25)")


def test_a_fold_shared_offset_is_not_mistaken_for_noise():
    """Large spread between folds but a constant gain: the paired test sees the gain that a
    'difference of means within one fold std' rule would call no clear gain."""
    base = {"s1": 0.30, "s2": 0.50, "s3": 0.70, "s4": 0.90, "s5": 0.60, "s6": 0.40}
    a = result({g: v + 0.04 + 0.005 * i for i, (g, v) in enumerate(base.items())})
    b = result(base)
    cmp = paired_comparison(a, b)
    assert cmp["ci"][0] > 0 and cmp["wins"] == 6 and cmp["sign_p"] == pytest.approx(2 / 64)
    assert 100 * cmp["mean_diff"] < 100 * np.std(list(base.values()))  # within one fold std
    assert "beats" in verdict(cmp, "A", "B")
    flipped = paired_comparison(b, a)
    assert "is worse than" in verdict(flipped, "B", "A")
    mixed = paired_comparison(result({"s1": 0.6, "s2": 0.4, "s3": 0.5}), result({"s1": 0.5, "s2": 0.5, "s3": 0.5}))
    assert verdict(mixed, "A", "B").startswith("no significant difference between A and B: +0.0 UA points")
    # a constant gain on 2 folds: zero-width interval above 0, but 2 of 2 folds won is sign p = 0.5
    constant = paired_comparison(result({"s1": 0.6, "s2": 0.5}), result({"s1": 0.5, "s2": 0.4}))
    assert constant["ci"][0] > 0 and constant["sign_p"] == pytest.approx(0.5)
    assert verdict(constant, "A", "B").startswith("no significant difference between A and B: +10.0 UA points")
    with pytest.raises(ValueError, match="share no fold"):
        paired_comparison(result({"x": 0.5}), result({"y": 0.5}))


def test_aim_needs_a_beats_verdict_and_every_fold_but_one():
    """Issue 14's aim: a paired 'beats' (interval above 0 and sign test) and at most one fold not won."""
    def gains(n, losers):  # fold i gains 4-6 points, except the first `losers` folds, which lose 1 point
        return result({f"s{i}": 0.5 + (-0.01 if i < losers else 0.04 + 0.002 * i) for i in range(n)})

    base = {n: result({f"s{i}": 0.5 for i in range(n)}) for n in (8, 9, 12)}
    all_won = paired_comparison(gains(8, 0), base[8])
    one_lost = paired_comparison(gains(9, 1), base[9])  # 8 of 9: sign p = 2 * 10 / 512 = 0.039
    two_lost = paired_comparison(gains(12, 2), base[12])  # 10 of 12: sign p = 2 * 79 / 4096 = 0.039
    assert one_lost["sign_p"] == pytest.approx(20 / 512) and two_lost["sign_p"] == pytest.approx(158 / 4096)
    for cmp in (all_won, one_lost, two_lost):  # every one a 'beats' by the paired verdict
        assert verdict(cmp, "A", "B").startswith("A beats B")
    assert aim([("random", all_won), ("log-mel", one_lost)])["met"]
    short = aim([("random", all_won), ("log-mel", two_lost)])  # 2 folds lost: the aim allows one
    assert not short["met"] and short["text"].count("(short)") == 1
    assert "vs log-mel better on 10 of 12 folds" in short["text"]
    # 7 of 8 won: sign p = 0.07, no 'beats', so not met although only one fold was lost
    assert not aim([("random", paired_comparison(gains(8, 1), base[8]))])["met"]
    assert not aim([])["met"]


def test_probe_seeds_are_averaged_per_fold(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add synchronisation
    try:
        check_seed_averaging(tmp_path)
    finally:
        torch.set_num_threads(threads)


def check_seed_averaging(tmp_path):
    from tests.test_probe import FAST, synthetic_task, write_task

    feats, labels, groups = synthetic_task(per_class=4, dim=8)
    paths = write_task(tmp_path, feats, labels, groups)
    single = [probe_cli.main(probe_cli.get_parser().parse_args([paths[0], paths[1], "--groups", paths[2], *FAST,
                                                        "--seed", str(s)])) for s in (0, 1)]
    both = probe_cli.main(probe_cli.get_parser().parse_args([paths[0], paths[1], "--groups", paths[2], *FAST,
                                                     "--seeds", "0", "1"]))
    assert both["seeds"] == [0, 1] and len(both["seed_runs"]) == 2
    for k, fold in enumerate(both["folds"]):
        assert fold["UA"] == pytest.approx((single[0]["folds"][k]["UA"] + single[1]["folds"][k]["UA"]) / 2)
        assert both["seed_runs"][1]["folds"][k]["UA"] == single[1]["folds"][k]["UA"]
    assert both["summary"]["UA"]["mean"] == pytest.approx(np.mean([f["UA"] for f in both["folds"]]))
    # per-group normalisation of frames: every group's frames have zero mean, unit std per dimension
    fs = zscore_per_group(as_feature_set(feats), groups)
    for g in set(groups):
        frames = np.concatenate([fs[i] for i in range(len(fs)) if groups[i] == g])
        np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(frames.std(0), 1.0, atol=1e-4)
