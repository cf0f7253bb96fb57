"""One set of metric names: the probe's scores, the fine-tuning criterion's count-based scores
(summed over two batches, as over workers) and e2v-predict's scoring give the same WA, UA,
macro-F1 and weighted-F1 on the same predictions, against values computed by hand."""

from types import SimpleNamespace

import pytest
import torch
from fairseq import metrics

from emotion2vec_plugin.criterions.emotion2vec_classification import (Emotion2vecClassificationCriterion,
                                                                       Emotion2vecClassificationCriterionConfig)
from emotion2vec_plugin.evaluation.metrics import METRICS, TITLES, compute_metrics, log_name
from emotion2vec_plugin.inference import predict_cli

CLASSES = ["a", "b", "c", "d"]  # "d" is neither a label nor a prediction: no metric counts it
TRUE = ["a", "a", "a", "a", "b", "b", "c", "c"]
PRED = ["a", "a", "a", "a", "a", "b", "b", "c"]
# per class (true, predicted, both): a (4, 5, 4), b (2, 2, 1), c (2, 1, 1); F1_c = 2 tp / (true + pred)
F1 = {"a": 8 / 9, "b": 2 / 4, "c": 2 / 3}
BY_HAND = {
    "WA": 6 / 8,  # 4 + 1 + 1 right of 8
    "UA": (4 / 4 + 1 / 2 + 1 / 2) / 3,  # recall averaged over the 3 classes present
    "macro_f1": (F1["a"] + F1["b"] + F1["c"]) / 3,  # 37/54
    "weighted_f1": (4 * F1["a"] + 2 * F1["b"] + 2 * F1["c"]) / 8,  # 53/72
}


def test_the_names_are_one_set():
    assert METRICS == ("WA", "UA", "macro_f1", "weighted_f1")
    assert [log_name(m) for m in METRICS] == ["wa", "ua", "macro_f1", "weighted_f1"]
    assert [TITLES[m] for m in METRICS] == ["WA", "UA", "macro-F1", "weighted-F1"]
    assert len(set(BY_HAND.values())) == 4  # the example tells the four apart


def test_probe_metrics_by_hand():
    index = {c: i for i, c in enumerate(CLASSES)}
    got = compute_metrics([index[v] for v in TRUE], [index[v] for v in PRED], CLASSES)
    assert {m: got[m] for m in METRICS} == pytest.approx(BY_HAND, abs=1e-12)
    assert got["confusion"]["matrix"][0] == [4, 0, 0, 0] and got["confusion"]["matrix"][1] == [1, 1, 0, 0]


def test_criterion_counts_summed_over_batches_by_hand():
    crit = Emotion2vecClassificationCriterion(Emotion2vecClassificationCriterionConfig(),
                                              SimpleNamespace(labels=CLASSES, label_counts=None))
    index = {c: i for i, c in enumerate(CLASSES)}
    logs = []
    for part in (slice(0, 3), slice(3, 8)):  # two validation batches (or two workers)
        pred = torch.tensor([index[v] for v in PRED[part]])
        logits = torch.nn.functional.one_hot(pred, len(CLASSES)).float()  # argmax = the prediction

        class Fixed(torch.nn.Module):
            def forward(self, logits=logits):
                return {"logits": logits}

        logs.append(crit(Fixed(), {"net_input": {}, "target": torch.tensor([index[v] for v in TRUE[part]])})[2])
    with metrics.aggregate() as agg:
        Emotion2vecClassificationCriterion.reduce_metrics(logs)
        logged = agg.get_smoothed_values()
    for m in METRICS:  # fairseq's log: percent, 2 decimals, lower-case keys
        assert logged[log_name(m)] == pytest.approx(round(100 * BY_HAND[m], 2), abs=1e-9), m


def test_e2v_predict_scoring_by_hand(tmp_path):
    predictions = [{"key": f"u{i}", "label": label} for i, label in enumerate(PRED)]
    args = SimpleNamespace(plot=str(tmp_path / "confusion.png"), out=None)
    got = predict_cli.score(TRUE, predictions, list(range(len(TRUE))), CLASSES, args)
    assert {m: got[m] for m in METRICS} == pytest.approx(BY_HAND, abs=1e-12)
    assert (tmp_path / "confusion.png").is_file()
