"""``e2v-probe --folds`` (official folds) and ``e2v-benchmark`` (extract, probe, tabulate) on tiny synthetic data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emotion2vec_plugin.cli import InputErrorExit
from emotion2vec_plugin.data.feature_store import load_features, save_stacked
from emotion2vec_plugin.evaluation import benchmark, mlp_probe, probe_cli
from emotion2vec_plugin.evaluation.metrics import METRICS
from manifests.split_labels import write_split
from tests.probe_data import write_probe_set
from tests.test_probe import synthetic_task

FAST = ["--epochs", "12", "--patience", "4", "--hidden", "32", "--quiet"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_folds(dest: Path, split: str, root: str, names, sizes, labels, folds) -> Path:
    """``dest/<split>.folds/fold_K/{train,[valid,]test}`` from {subset: main-split indices} per fold (as
    e2v-labels writes them, through the same writer)."""
    out = dest / f"{split}.folds"
    for k, subsets in enumerate(folds, start=1):
        for subset, idx in subsets.items():
            rows = [{"name": names[i], "size": str(sizes[i]), "label": labels[i], "group": ""} for i in idx]
            write_split(str(out / f"fold_{k}"), subset, root, rows, with_groups=False)
    return out


@pytest.fixture
def fold_task(tmp_path):
    """Synthetic features of a 'main split' of 180 utterances (3 groups) and two official folds: fold_1 with a
    valid set, fold_2 without; fold rows are listed in a shuffled order and cover only part of the split."""
    feats, labels, groups = synthetic_task(seed=1, dim=8)
    labels = [lab if i % 7 else "neu" for i, lab in enumerate(labels)]  # some noise: not every fold at 100%
    n = len(labels)
    names, sizes = [f"g{groups[i]}/utt{i:03d}.wav" for i in range(n)], [16000 + i for i in range(n)]
    save_stacked(feats, str(tmp_path / "feats" / "all"))
    root = str(tmp_path / "audio")
    (tmp_path / "all.tsv").write_text(root + "\n" + "".join(f"{a}\t{b}\n" for a, b in zip(names, sizes)))
    (tmp_path / "all.emo").write_text("".join(f"{v}\n" for v in labels))
    g = np.array(groups)
    rng = np.random.default_rng(0)
    spk = {s: rng.permutation(np.flatnonzero(g == s)) for s in ("spk0", "spk1", "spk2")}
    folds = [{"train": spk["spk0"][:50], "valid": spk["spk1"][:30], "test": spk["spk2"]},
             {"train": np.concatenate([spk["spk2"], spk["spk1"]]), "test": spk["spk0"]}]
    folds_dir = write_folds(tmp_path, "all", root, names, sizes, labels, folds)
    return tmp_path, folds_dir, feats, labels, folds


def hand_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> dict:
    """WA, UA, macro-F1 and weighted-F1 written out from their definitions."""
    recalls, f1s, weights = [], [], []
    for c in range(classes):
        tp = np.sum((y_true == c) & (y_pred == c))
        true, pred = np.sum(y_true == c), np.sum(y_pred == c)
        if true:
            recalls.append(tp / true)
        if true + pred:
            f1s.append(2 * tp / (true + pred))
            weights.append(true)
    return {"WA": np.mean(y_true == y_pred), "UA": np.mean(recalls), "macro_f1": np.mean(f1s),
            "weighted_f1": np.dot(f1s, weights) / len(y_true)}


def test_official_folds_with_and_without_valid_against_hand_metrics(fold_task):
    tmp, folds_dir, feats, labels, folds = fold_task
    args = probe_cli.get_parser().parse_args([str(tmp / "feats" / "all"), str(tmp / "all.emo"),
                                              "--folds", str(folds_dir), "--out", str(tmp / "p.json"), *FAST])
    result = probe_cli.main(args)
    assert result["scheme"] == "official folds" and [f["group"] for f in result["folds"]] == ["fold_1", "fold_2"]
    assert json.loads((tmp / "p.json").read_text())["summary"] == result["summary"]
    names = sorted(set(labels))
    y = np.array([names.index(v) for v in labels])
    cfg = mlp_probe.ProbeConfig(epochs=12, patience=4, hidden=32)
    fs = load_features(str(tmp / "feats" / "all"))
    for k, (fold, record) in enumerate(zip(folds, result["folds"])):
        seed = mlp_probe.fold_seed(0, k)
        if "valid" in fold:  # the official valid rows select the epoch
            train, valid = fold["train"], fold["valid"]
            assert record["valid_set"] == "official"
        else:  # none given: a stratified share of train is held out, as leave-one-group-out does
            train, valid = mlp_probe.split_validation(fold["train"], y, 0.2, np.random.default_rng(seed))
            assert record["valid_set"] == "held out of train"
            assert len(valid) == round(0.2 * len(fold["train"]))
        assert (record["n_train"], record["n_valid"], record["n_test"]) == (len(train), len(valid), len(fold["test"]))
        model, _, frames = mlp_probe.train_probe(fs, y, np.asarray(train), np.asarray(valid), len(names), cfg, seed)
        pred = mlp_probe.predict_logits(model, frames, fold["test"], 32, torch.device("cpu")).argmax(-1).numpy()
        want = hand_metrics(y[fold["test"]], pred, len(names))
        for m in METRICS:
            assert record[m] == pytest.approx(want[m], abs=1e-12), (k, m)
        assert 0.3 < record["UA"] < 1.0  # learned, and the noisy labels keep it off 100%
    for m in METRICS:
        vals = [f[m] for f in result["folds"]]
        assert result["summary"][m] == pytest.approx({"mean": np.mean(vals), "std": np.std(vals)})
    assert result["fold_utterances"] == len(np.unique(np.concatenate([i for f in folds for i in f.values()])))


def run_cli_error(capsys, argv) -> str:
    with pytest.raises(InputErrorExit) as e:
        probe_cli.cli_main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("e2v-probe: error: ")]
    assert errors == [str(e.value)] and err.strip().splitlines()[-1] == errors[0]  # one line, the last
    return errors[0]


def test_bad_folds_end_with_one_line(fold_task, capsys):
    tmp, folds_dir, *_ = fold_task
    base = [str(tmp / "feats" / "all"), str(tmp / "all.emo"), *FAST, "--folds"]
    test_tsv = folds_dir / "fold_2" / "test.tsv"
    lines = test_tsv.read_text().splitlines()
    test_tsv.write_text("\n".join(lines[:2] + ["nowhere/x.wav\t1234"] + lines[3:]) + "\n")
    msg = run_cli_error(capsys, [*base, str(folds_dir)])
    assert f"{test_tsv}:3: 'nowhere/x.wav' is not a row of {tmp / 'all.tsv'}" in msg
    (tmp / "empty.folds").mkdir()
    assert "holds no fold_K folder" in run_cli_error(capsys, [*base, str(tmp / "empty.folds")])
    test_tsv.write_text("\n".join(lines) + "\n")
    emo = folds_dir / "fold_1" / "valid.emo"
    emo.write_text("\n".join(emo.read_text().splitlines()[:-2]) + "\n")
    msg = run_cli_error(capsys, [*base, str(folds_dir)])
    assert f"{emo} has 28 labels but {folds_dir / 'fold_1' / 'valid.tsv'} lists 30 utterances" in msg


def tiny_export(path: Path) -> Path:
    """A tiny encoder (recipes/pretrain/arch/tiny.yaml) with seeded random weights, as an e2v-export plugin folder."""
    from emotion2vec_plugin.checkpoint.model_record import InferenceSettings, ModelRecord
    from emotion2vec_plugin.formats import plugin
    from emotion2vec_plugin.modules.config import student_config_from
    from emotion2vec_plugin.modules.encoder import Emotion2vecEncoder
    from tests.helpers import tiny_model_cfg

    torch.manual_seed(3)
    cfg = student_config_from(tiny_model_cfg())
    plugin.write(ModelRecord(Emotion2vecEncoder(cfg).state_dict(), cfg, InferenceSettings(), "tiny"), str(path))
    return path


def bench_args(export, splits, out, *extra):
    return benchmark.get_parser().parse_args([str(export), *map(str, splits), "--out", str(out), "--epochs", "6",
                                              "--patience", "3", "--hidden", "16", "--quiet", *extra])


def test_benchmark_folds_logo_baselines_and_resume(tmp_path, monkeypatch):
    export = tiny_export(tmp_path / "export")
    a = write_probe_set(tmp_path / "a", split="acted", speakers=3, per_class=4)  # gets official folds
    b = write_probe_set(tmp_path / "b", split="talk", speakers=2, per_class=4, seed=1)  # none: leave-one-group-out
    lines = (a / "acted.tsv").read_text().splitlines()
    root, rows = lines[0], [line.split("\t") for line in lines[1:]]
    labels = (a / "acted.emo").read_text().split()
    spk = [int(r[0][3]) for r in rows]
    idx = {s: [i for i in range(len(rows)) if spk[i] == s] for s in range(3)}
    write_folds(a, "acted", root, [r[0] for r in rows], [r[1] for r in rows], labels,
                [{"train": idx[0] + idx[1], "test": idx[2]}, {"train": idx[1], "valid": idx[2], "test": idx[0]}])
    out = tmp_path / "bench"
    results = benchmark.main(bench_args(export, [a / "acted", b / "talk"], out, "--baselines"))
    table = {(r["corpus"], r["features"]): r for r in results["rows"]}
    assert set(table) == {(c, f) for c in ("acted", "talk") for f in ("export", "log-mel", "random weights")}
    for f in ("export", "log-mel", "random weights"):
        assert (table["acted", f]["scheme"], table["acted", f]["folds"]) == ("official folds", 2)
        assert (table["talk", f]["scheme"], table["talk", f]["folds"]) == ("leave-one-group-out", 2)
        assert (table["acted", f]["utterances"], table["talk", f]["utterances"]) == (24, 16)
        assert table["acted", f]["classes"] == table["talk", f]["classes"] == 2
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == results["rows"]
    md = (out / "results.md").read_text()
    r = table["talk", "log-mel"]
    assert (f"| talk | log-mel | leave-one-group-out | 2 | 16 | 2 | {100 * r['UA']['mean']:.2f} ± "
            f"{100 * r['UA']['std']:.2f} |") in md
    assert (out / "results.png").stat().st_size > 1000
    # the random-weights row uses other features than the export, the log-mel row 80-dim filterbanks
    feats = {f: load_features(str(out / "features" / f / "acted" / "acted")) for f in ("model", "random_weights",
                                                                                       "log-mel")}
    assert feats["log-mel"].dim == 80 and feats["model"].dim == feats["random_weights"].dim == 64
    assert not np.allclose(feats["model"][0], feats["random_weights"][0])
    # leave-one-group-out fallback: the same numbers as e2v-probe --groups on those features
    direct = probe_cli.main(probe_cli.get_parser().parse_args(
        [str(out / "features" / "log-mel" / "talk" / "talk"), str(b / "talk.emo"), "--groups", str(b / "talk.group"),
         "--epochs", "6", "--patience", "3", "--hidden", "16", "--quiet"]))
    assert direct["summary"] == {m: r[m] for m in METRICS}

    calls = []
    real_extract = benchmark.extract_cli.main

    def spy(args):
        result = real_extract(args)
        calls.append((Path(args.out).relative_to(out / "features").as_posix(), result["extracted"]))
        return result

    monkeypatch.setattr(benchmark.extract_cli, "main", spy)
    # an interrupted extraction: log-mel of talk lost its first utterance and never finished
    lost = out / "features" / "log-mel" / "talk"
    (lost / "extraction.json").write_text(json.dumps({**json.loads((lost / "extraction.json").read_text()),
                                                      "finished": False}))
    (lost / (lost / "index.tsv").read_text().split("\n")[0].split("\t")[1]).unlink()
    again = benchmark.main(bench_args(export, [a / "acted", b / "talk"], out, "--baselines"))
    assert calls == [("log-mel/talk", 1)]  # the finished five are reused, the interrupted one resumes
    assert again["rows"] == results["rows"]
    calls.clear()
    benchmark.main(bench_args(export, [a / "acted"], out, "--layers", "1"))  # other settings: extracted afresh
    assert calls == [("model/acted", 24)]
    calls.clear()
    tiny_export(export)  # re-exported into the same folder: its features are stale
    benchmark.main(bench_args(export, [a / "acted"], out, "--layers", "1"))
    assert calls == [("model/acted", 24)]


def test_benchmark_bad_corpus_ends_before_extraction(tmp_path, capsys):
    export = tiny_export(tmp_path / "export")
    c = write_probe_set(tmp_path / "c", split="x", speakers=2, per_class=2)
    (c / "x.group").unlink()
    with pytest.raises(InputErrorExit):
        benchmark.cli_main([str(export), str(c / "x"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("e2v-benchmark: error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0]
    assert f"{c / 'x'}: neither {c / 'x.folds'}/ (official folds) nor {c / 'x.group'}" in errors[0]
    assert not (tmp_path / "o" / "features").exists()


def test_benchmark_from_every_corpus_layout(tmp_path):
    """From each public layout (tests/corpus_layouts.py, issue 23 parts 1-4) through e2v-labels to one
    e2v-benchmark table: official folds where the corpus has them, leave-one-group-out where not."""
    from tests import corpus_layouts as layouts
    from tests.test_corpora import run_labels
    from tests.test_labels import IEMOCAP_ROWS, iemocap_corpus

    mirror = str(tmp_path / "mirror")
    layouts.meld_tree(tmp_path / "MELD.Raw")
    run_labels("meld", tmp_path / "MELD.Raw", tmp_path / "meld", "--resample-to", mirror)
    layouts.msppodcast_tree(tmp_path / "msp")
    run_labels("msppodcast", tmp_path / "msp", tmp_path / "msppodcast")
    folds_py = layouts.mosei_tree(tmp_path / "mosei")
    run_labels("mosei", tmp_path / "mosei", tmp_path / "cmumosei", "--resample-to", mirror, "--folds-file", str(folds_py))
    layouts.mead_tree(tmp_path / "MEAD")
    run_labels("mead", tmp_path / "MEAD", tmp_path / "mead", "--resample-to", mirror)
    run_labels("emobox", layouts.emobox_tree(tmp_path / "EmoBox", with_valid=True), tmp_path / "emobox",
               "--resample-to", mirror)
    iemocap_corpus(tmp_path / "IEMOCAP_full_release", IEMOCAP_ROWS)
    run_labels("iemocap", tmp_path / "IEMOCAP_full_release", tmp_path / "iemocap")
    corpora = ("meld", "msppodcast", "cmumosei", "mead", "emobox", "iemocap")
    out = tmp_path / "bench"
    results = benchmark.main(bench_args(tiny_export(tmp_path / "export"), [tmp_path / c / "x" for c in corpora], out,
                                        "--epochs", "2"))
    rows = {r["corpus"]: r for r in results["rows"]}
    assert set(rows) == {f"{c}-x" for c in corpora}  # every split is called x: named by its DEST
    for c in corpora:
        folds = tmp_path / c / "x.folds"
        expect = ("official folds", len(list(folds.iterdir()))) if folds.is_dir() else ("leave-one-group-out", 2)
        assert (rows[f"{c}-x"]["scheme"], rows[f"{c}-x"]["folds"]) == expect, c
    assert rows["mead-x"]["scheme"] == "leave-one-group-out" and rows["meld-x"]["scheme"] == "official folds"
    assert rows["msppodcast-x"]["utterances"] == 5  # Test2 is in the main split, in no fold
    assert "| meld-x | export | official folds | 1 | 8 |" in (out / "results.md").read_text()
