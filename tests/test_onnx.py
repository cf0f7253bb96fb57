"""ONNX export: the graph's interface, onnxruntime against the torch path (single clips from the
shortest the CNN accepts to 60 s, padded batches, layer averages, classifier scores), e2v-extract
and e2v-predict on an ONNX folder, int8, and each bad input as one line naming the file."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from emotion2vec_plugin.checkpoint.model_record import ExportFormatError, InferenceSettings, ModelRecord
from emotion2vec_plugin.cli import InputErrorExit, run_main
from emotion2vec_plugin.formats import detect_folder, onnx as onnx_format, plugin
from emotion2vec_plugin.formats import export_cli
from emotion2vec_plugin.formats.load import load_classifier, read_model
from emotion2vec_plugin.inference import extract_cli, predict_cli
from emotion2vec_plugin.inference.featurizer import extract_batch, predict_batch
from emotion2vec_plugin.inference.onnx_runtime import OnnxExportError, OnnxRunner
from emotion2vec_plugin.modules.classifier import Emotion2vecClassifierNet
from emotion2vec_plugin.modules.config import encoder_config_from, student_config_from
from tests.helpers import tiny_model_cfg, write_corpus

LABELS = ["angry", "happy", "neutral"]
TOL = 1e-4  # the bound: max |onnx - torch| <= 1e-4 * max |torch|


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random classifier (head scaled so scores are far from uniform) as plugin and onnx exports."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    net = Emotion2vecClassifierNet(encoder_config_from(tiny_model_cfg()), len(LABELS)).eval()
    with torch.no_grad():
        net.proj.weight.mul_(20)
    record = ModelRecord(net.state_dict(), student_config_from(tiny_model_cfg()), InferenceSettings(), "tiny",
                         list(LABELS))
    plugin.write(record, str(root / "plugin"))
    export_cli.main(argparse.Namespace(checkpoint=str(root / "plugin"), out=str(root / "onnx"), format="onnx",
                                       random_init=None, layers=None, quantize=None, opset=17))
    return root, net


def test_interface_dynamic_axes_opset_and_config(exported):
    root, _ = exported
    folder = str(root / "onnx")
    assert detect_folder(folder) is onnx_format
    sess = ort.InferenceSession(os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [
        ("source", "tensor(float)", ["batch", "samples"]), ("padding_mask", "tensor(bool)", ["batch", "samples"])]
    outs = {o.name: (o.type, o.shape) for o in sess.get_outputs()}
    assert outs == {"frames": ("tensor(float)", ["batch", "frames", 64]),
                    "frame_padding_mask": ("tensor(bool)", ["batch", "frames"]),
                    "embedding": ("tensor(float)", ["batch", 64]),
                    "logits": ("tensor(float)", ["batch", 3]), "scores": ("tensor(float)", ["batch", 3])}
    opsets = {o.domain or "ai.onnx": o.version for o in onnx.load(os.path.join(folder, "model.onnx")).opset_import}
    assert opsets["ai.onnx"] >= 17
    conf = json.loads((root / "onnx" / "config.json").read_text())
    assert conf["format"] == "emotion2vec_onnx" and conf["classifier"]["labels"] == LABELS
    assert conf["layers"] == [3] and conf["opset"] == 17 and conf["quantize"] is None
    with pytest.raises(ExportFormatError, match="is an ONNX export"):  # a graph, not torch weights: says what to do
        read_model(folder)


def test_onnx_equals_torch_single_and_padded_batch(exported):
    """Clips from 400 samples (one CNN frame, the shortest accepted) to 60 s: each alone against the
    torch path (frames, embedding, scores), and the padded batch against each item alone."""
    root, net = exported
    runner = OnnxRunner(str(root / "onnx"), threads=1)
    model, _, settings = load_classifier(str(root / "plugin"))
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.3 for n in (400, 719, 16000, 33333, 60 * 16000)]
    last = [model.num_layers - 1]
    for w in wavs:
        got = runner.run([w])
        frames = extract_batch(model, [w], last, settings.normalize)[0]  # [T, D]
        assert got["frames"].shape[1:] == frames.shape and not got["frame_padding_mask"].any()
        assert rel_err(got["frames"][0], frames) <= TOL
        emb = extract_batch(model, [w], last, settings.normalize, "utterance")[0]
        assert rel_err(got["embedding"][0], emb) <= TOL
        assert rel_err(got["scores"][0], predict_batch(model, [w], settings.normalize)[0]) <= TOL
        np.testing.assert_allclose(got["scores"].sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(got["scores"], torch.softmax(torch.from_numpy(got["logits"]), -1).numpy(),
                                   rtol=1e-6)
    short = wavs[:4]  # a padded batch of mixed lengths (60 s alone above keeps the test quick)
    batch = runner.run(short)
    lengths = (~batch["frame_padding_mask"]).sum(1)
    assert lengths.tolist() == [1, 1, 49, 103]
    assert batch["frame_padding_mask"].shape[1] == 103
    for i, w in enumerate(short):
        one = runner.run([w])
        assert rel_err(batch["frames"][i, :lengths[i]], one["frames"][0]) <= TOL
        for key in ("embedding", "logits", "scores"):
            assert rel_err(batch[key][i], one[key][0]) <= TOL, key


def test_layer_average_encoder_export_from_a_folder(exported, tmp_path):
    root, _ = exported
    out = tmp_path / "enc"
    record = read_model(str(root / "plugin"))
    record.labels = None  # the encoder part only
    onnx_format.write(record, str(out), layers=[0, 2])
    runner = OnnxRunner(str(out))
    assert runner.labels is None and [o.name for o in runner.session.get_outputs()] == [
        "frames", "frame_padding_mask", "embedding"]
    model, _, settings = load_classifier(str(root / "plugin"))
    wavs = [np.random.default_rng(1).standard_normal(n).astype(np.float32) for n in (9000, 4000)]
    want = extract_batch(model, wavs, [0, 2], settings.normalize)
    got = runner.extract(wavs)
    assert [g.shape for g in got] == [w.shape for w in want]
    assert max(rel_err(g, w) for g, w in zip(got, want)) <= TOL
    assert json.loads((out / "config.json").read_text())["layers"] == [1, 3]


def test_extract_and_predict_on_onnx_match_torch_and_skip_torch_import(exported, tmp_path):
    root, _ = exported
    data = write_corpus(tmp_path / "data", splits=(("valid", 5),))
    manifest = str(data / "valid.tsv")
    common = dict(granularity="frame", layers=None, batch_size=2, max_batch_seconds=160.0, format="stacked",
                  prefix=None, device="cpu", dtype="fp32", quiet=True, threads=1)
    res = {}
    for kind in ("plugin", "onnx"):
        res[kind] = extract_cli.main(argparse.Namespace(model=str(root / kind), manifest=manifest,
                                                        out=str(tmp_path / f"x_{kind}"), **common))
    drop = lambda r: {k: v for k, v in r.items() if k != "stacked"}  # noqa: E731
    assert drop(res["onnx"]) == drop(res["plugin"]) == {"utterances": 5, "extracted": 5, "layers": [3]}
    for name in ("valid.lengths", "index.tsv"):
        assert (tmp_path / "x_onnx" / name).read_text() == (tmp_path / "x_plugin" / name).read_text()
    a, b = np.load(tmp_path / "x_onnx" / "valid.npy"), np.load(tmp_path / "x_plugin" / "valid.npy")
    assert a.shape == b.shape and rel_err(a, b) <= TOL
    with pytest.raises(OnnxExportError, match=r"averages blocks \[3\].*--layers 1"):
        extract_cli.main(argparse.Namespace(model=str(root / "onnx"), manifest=manifest, out=str(tmp_path / "y"),
                                            **{**common, "layers": [1]}))
    preds = {}
    for kind in ("plugin", "onnx"):
        out = tmp_path / f"p_{kind}.json"
        predict_cli.main(predict_cli.get_parser().parse_args(
            [str(root / kind), manifest, "--out", str(out), "--quiet", "--threads", "1", "--batch-size", "3"]))
        preds[kind] = json.loads(out.read_text())
    assert preds["onnx"]["classes"] == LABELS and preds["onnx"]["predicted"] == 5
    for p, q in zip(preds["onnx"]["predictions"], preds["plugin"]["predictions"]):
        assert p["key"] == q["key"] and p["label"] == q["label"]
        assert max(abs(p["scores"][c] - q["scores"][c]) for c in LABELS) <= TOL
    # the ONNX path of e2v-predict never imports torch
    code = ("import sys; from emotion2vec_plugin.inference import predict_cli as p; "
            f"p.main(p.get_parser().parse_args([{str(root / 'onnx')!r}, {manifest!r}, '--quiet', '--out', "
            f"{str(tmp_path / 'p.tsv')!r}])); assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "p.tsv").read_text().splitlines()[0] == "key\tlabel\tscore_angry\tscore_happy\tscore_neutral"


def test_int8_is_smaller_and_close(exported, tmp_path):
    root, _ = exported
    export_cli.main(argparse.Namespace(checkpoint=str(root / "plugin"), out=str(tmp_path / "q"), format="onnx",
                                       random_init=None, layers=None, quantize="int8", opset=17))
    graph = onnx.load(str(tmp_path / "q" / "model.onnx"))
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in graph.graph.node}
    int8 = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert len(int8) >= 3 * 4  # the qkv, proj, fc1 and fc2 weights of the 3 blocks
    # the tiny model's conv weights stay fp32; the base model shrinks 3.5x (recipes/RESULTS.md)
    assert os.path.getsize(tmp_path / "q" / "model.onnx") < 0.8 * os.path.getsize(root / "onnx" / "model.onnx")
    wavs = [np.random.default_rng(2).standard_normal(n).astype(np.float32) for n in (8000, 20000)]
    fp32, int8 = OnnxRunner(str(root / "onnx")).run(wavs), OnnxRunner(str(tmp_path / "q")).run(wavs)
    a, b = fp32["embedding"], int8["embedding"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(a, b)
    assert json.loads((tmp_path / "q" / "config.json").read_text())["quantize"] == "int8"


def one_line(folder) -> str:
    """The e2v-predict line for ``folder`` (what the console script prints)."""
    args = predict_cli.get_parser().parse_args([str(folder), "x.wav"])
    with pytest.raises(InputErrorExit) as e:
        run_main("e2v-predict", predict_cli.main, args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_onnx_files_end_in_one_line_naming_the_file(exported, tmp_path):
    root, _ = exported
    src = root / "onnx"
    path = lambda d: str(d / "model.onnx")  # noqa: E731

    bad = tmp_path / "truncated"
    shutil.copytree(src, bad)
    data = (src / "model.onnx").read_bytes()
    (bad / "model.onnx").write_bytes(data[: len(data) // 2])
    assert one_line(bad).startswith(f"e2v-predict: error: {path(bad)}: not a complete ONNX file")

    bad = tmp_path / "external"
    shutil.copytree(src, bad)
    model = onnx.load(path(src))
    onnx.save_model(model, path(bad), save_as_external_data=True, location="weights.bin", size_threshold=0)
    os.remove(bad / "weights.bin")
    line = one_line(bad)
    assert f"{path(bad)}: its weights are stored as external data in {bad / 'weights.bin'}, which is missing" in line

    bad = tmp_path / "opset"
    shutil.copytree(src, bad)
    model = onnx.load(path(src))
    model.opset_import[0].version = 99
    onnx.save_model(model, path(bad))
    line = one_line(bad)
    assert f"{path(bad)}: opset 99" in line and "--opset 17" in line

    bad = tmp_path / "interface"
    shutil.copytree(src, bad)
    model = onnx.load(path(src))
    model.graph.input[0].name = "wav"
    for node in model.graph.node:
        node.input[:] = ["wav" if n == "source" else n for n in node.input]
    onnx.save_model(model, path(bad))
    line = one_line(bad)
    assert f"{path(bad)}: the graph's inputs" in line and "do not match the emotion2vec ONNX interface" in line
    assert "e2v-export" in line

    bad = tmp_path / "encoder_graph"  # a classifier config.json beside an encoder graph
    shutil.copytree(src, bad)
    record = read_model(str(root / "plugin"))
    record.labels = None
    onnx_format.write(record, str(tmp_path / "enc"))
    shutil.copy(tmp_path / "enc" / "model.onnx", bad / "model.onnx")
    line = one_line(bad)
    assert f"{path(bad)}: the graph's outputs" in line and "of a classifier" in line

    with pytest.raises(ExportFormatError, match="--opset 16: the graph needs opset 17"):
        onnx_format.write(record, str(tmp_path / "o16"), opset=16)


def test_demo_report_section_shows_torch_and_onnx_rows():
    from emotion2vec_plugin.demo.finetune_stage import format_section

    m = lambda ua: {"WA": ua, "UA": ua, "macro_f1": ua, "weighted_f1": ua, "n_test": 16}  # noqa: E731
    onnx = {"fp32": {**m(0.5625), "MiB": 6.2, "max_abs_score_diff_vs_torch": 3e-7, "labels_equal_torch": True},
            "int8": {**m(0.5), "MiB": 2.1, "max_abs_score_diff_vs_torch": 2e-3, "labels_equal_torch": False}}
    result = {"held_out": "spk5", "train_utterances": 240, "held_out_utterances": 16, "train_seconds": 30.0,
              "finetuned": m(0.5625), "linear_probe": m(0.4375), "onnx": onnx}
    text = format_section(result)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "WA" not in line]
    assert [r.split(" | ")[-2:] for r in rows] == [["56.2", "56.2 |"], ["56.2", "56.2 |"], ["50.0", "50.0 |"],
                                                   ["43.8", "43.8 |"]]
    assert "onnxruntime fp32" in rows[1] and "int8" in rows[2]
    assert "int8 UA change -6.25 points" in text and "6.20 MiB; int8 2.10 MiB" in text
    assert "ONNX" not in format_section({**result, "onnx": None})  # results from before the ONNX stage


def test_onnx_only_options_are_refused_for_other_formats(exported, tmp_path):
    root, _ = exported
    args = dict(checkpoint=str(root / "plugin"), out=str(tmp_path / "p"), format="plugin", random_init=None, opset=17)
    with pytest.raises(ExportFormatError, match="--quantize apply to --format onnx only"):
        export_cli.main(argparse.Namespace(**args, layers=None, quantize="int8"))
    with pytest.raises(Exception, match=r"--layers 9: the model has blocks 1\.\.3"):
        export_cli.main(argparse.Namespace(**{**args, "format": "onnx"}, layers=[9], quantize=None))
    assert not (tmp_path / "p").exists()
