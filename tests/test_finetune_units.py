"""Fine-tuning pieces in process: labelled data checks, batches, pooling, the classifier network,
metrics from summed counts, class weights, layer-wise lr decay, freezing and initialisation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from emotion2vec_plugin.checkpoint.convert import CheckpointMismatchError
from emotion2vec_plugin.criterions.emotion2vec_classification import (Emotion2vecClassificationCriterion,
                                                                       Emotion2vecClassificationCriterionConfig)
from emotion2vec_plugin.data.labelled_split import LabelledDataError
from emotion2vec_plugin.data.padding import crop_and_pad
from emotion2vec_plugin.evaluation.metrics import class_counts, scores_from_counts
from emotion2vec_plugin.models.emotion2vec_classifier import Emotion2vecClassifierConfig, Emotion2vecClassifierModel
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from emotion2vec_plugin.modules.pooling import masked_mean
from emotion2vec_plugin.tasks.emotion2vec_classification import Emotion2vecClassificationTask
from tests.finetune_corpus import write_labelled_corpus
from tests.helpers import REPO, tiny_model_cfg

TINY_CONV = "[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2"


def task_cfg(data, **overrides):
    cfg = {"data": str(data), "labels": None, "sample_rate": 16000, "normalize": True, "max_sample_size": 8000,
           "min_sample_size": 0, "check_files": True, "class_balanced_sampling": False,
           "conv_feature_layers": TINY_CONV, "seed": 1, "train_subset": "train", "save_dir": None, "restore_file": "x"}
    return OmegaConf.create({**cfg, **overrides})


def classifier_cfg(**overrides) -> Emotion2vecClassifierConfig:
    """The fine-tuning settings of recipes/finetune/emotion2vec_finetune_tiny.yaml on the tiny encoder
    shape of recipes/pretrain/arch/tiny.yaml (what its model.init_from gives), dropouts off."""
    import yaml

    from emotion2vec_plugin.checkpoint.init_from import SHAPE_FIELDS

    shape = yaml.safe_load((REPO / "recipes" / "pretrain" / "arch" / "tiny.yaml").read_text())["model"]
    fields = yaml.safe_load((REPO / "recipes" / "finetune" / "emotion2vec_finetune_tiny.yaml").read_text())["model"]
    fields.update({k: shape[k] for k in SHAPE_FIELDS if k in shape}, init_from=None)
    fields.pop("_name")
    fields.update(seed=1, encoder_dropout=0.0, attention_dropout=0.0, post_mlp_drop=0.0, prenet_dropout=0.0,
                  head_dropout=0.0, mask_prob=0.0)
    fields.update(overrides)
    return Emotion2vecClassifierConfig(**fields)


@pytest.fixture
def labelled(tmp_path):
    return write_labelled_corpus(tmp_path / "data", (("train", 2), ("valid", 1)))


# ------------------------------------------------------------------ data and task


def test_label_set_is_sorted_or_explicit_and_written(tmp_path, labelled):
    task = Emotion2vecClassificationTask.setup_task(task_cfg(labelled, save_dir=str(tmp_path / "ckpt")))
    assert task.labels == ["high", "low", "mid"] and task.label_counts == [2, 2, 2]
    assert (tmp_path / "ckpt" / "labels.txt").read_text() == "high\nlow\nmid\n"
    assert task.state_dict() == {"labels": ["high", "low", "mid"]}
    explicit = Emotion2vecClassificationTask.setup_task(task_cfg(labelled, labels="mid,low,high"))
    assert explicit.labels == ["mid", "low", "high"]
    with pytest.raises(LabelledDataError, match=r"trained on classes \['a', 'b'\]"):
        explicit.load_state_dict({"labels": ["a", "b"]})


def test_label_errors_name_file_and_line(labelled):
    lines = (labelled / "valid.emo").read_text().splitlines()
    lines[1] = "surprised"
    (labelled / "valid.emo").write_text("\n".join(lines) + "\n")
    task = Emotion2vecClassificationTask.setup_task(task_cfg(labelled))
    with pytest.raises(LabelledDataError, match=r"valid\.emo:2: label 'surprised' never occurs in the training"):
        task.load_dataset("valid")
    (labelled / "valid.emo").write_text("\n".join(lines[:-1]) + "\n")  # one label short
    with pytest.raises(LabelledDataError, match=r"valid\.emo has 2 labels but .*valid\.tsv lists 3 .*valid\.tsv:4 has no label"):
        task.load_dataset("valid")
    with pytest.raises(LabelledDataError, match=r"class\(es\) \['angry'\] of task.labels have no training utterance"):
        Emotion2vecClassificationTask.setup_task(task_cfg(labelled, labels="high,low,mid,angry"))
    with pytest.raises(LabelledDataError, match=r"train\.emo:\d+: label '\w+' is not in task.labels"):
        Emotion2vecClassificationTask.setup_task(task_cfg(labelled, labels="high,low"))
    # a class whose every training utterance is filtered out is an empty class (lengths come from the manifest)
    rows = (labelled / "train.tsv").read_text().splitlines()
    labels = (labelled / "train.emo").read_text().split()
    rows[1:] = [f"{r.split(chr(9))[0]}\t{500 if lab == 'high' else 5000}" for r, lab in zip(rows[1:], labels)]
    (labelled / "train.tsv").write_text("\n".join(rows) + "\n")
    task = Emotion2vecClassificationTask.setup_task(task_cfg(labelled, min_sample_size=1000))
    with pytest.raises(LabelledDataError, match=r"train\.emo: class\(es\) \['high'\] have no training utterance"):
        task.load_dataset("train")


def test_training_batches_crop_and_evaluation_batches_pad_exactly(labelled):
    task = Emotion2vecClassificationTask.setup_task(task_cfg(labelled, max_sample_size=7000))
    task.load_dataset("train")
    task.load_dataset("valid")
    train, valid = task.datasets["train"], task.datasets["valid"]
    batch = train.collater([train[i] for i in range(len(train))])
    src, pad = batch["net_input"]["source"], batch["net_input"]["padding_mask"]
    lengths = np.minimum(train.sizes, 7000)
    assert src.shape == (len(train), lengths.max())
    assert (~pad).sum(1).tolist() == lengths.tolist()
    assert torch.all(src[pad] == 0)
    assert batch["target"].tolist() == train.targets.tolist()
    vb = valid.collater([valid[i] for i in range(len(valid))])
    assert (~vb["net_input"]["padding_mask"]).sum(1).tolist() == valid.sizes.tolist()  # whole utterances
    # a crop is a contiguous window of the normalised utterance
    wav = train[0]["source"]
    i = int(np.argmax(train.sizes))
    windows = np.lib.stride_tricks.sliding_window_view(train[i]["source"].numpy(), 7000)
    assert len(wav) > 0 and int((windows == src[i].numpy()).all(axis=1).sum()) == 1


def test_crop_and_pad_by_hand():
    a, b = torch.arange(5.0), torch.arange(3.0) + 10
    out, pad = crop_and_pad([a, b], None, None)
    assert out.tolist() == [[0, 1, 2, 3, 4], [10, 11, 12, 0, 0]]
    assert pad.tolist() == [[False] * 5, [False] * 3 + [True] * 2]


# ------------------------------------------------------------------ modules


def test_masked_mean_by_hand():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    pad = torch.tensor([[False, False, True], [False, False, False]])
    assert masked_mean(x, pad).tolist() == [[2.0, 3.0], [7.0, 8.0]]
    assert masked_mean(x).tolist()[1] == [7.0, 8.0]


def test_classifier_batched_equals_one_by_one():
    torch.manual_seed(0)
    model = Emotion2vecClassifierModel(classifier_cfg(), num_classes=3).eval()
    wavs = [torch.randn(n) for n in (5000, 3000, 4100)]
    batch, pad = crop_and_pad(wavs, None, None)
    with torch.no_grad():
        batched = model(batch, pad)["logits"]
        single = torch.cat([model(w[None], None)["logits"] for w in wavs])
    assert batched.shape == (3, 3)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)  # fp32 rounding only


def test_metrics_from_summed_counts_equal_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 50)
    p = np.where(rng.random(50) < 0.6, y, rng.integers(0, 4, 50))
    p[p == 3] = 2  # class 3 is never predicted
    parts = [class_counts(torch.tensor(p[s]), torch.tensor(y[s]), 4) for s in (slice(0, 17), slice(17, 50))]
    summed = {k: (parts[0][k] + parts[1][k]).tolist() for k in ("tp", "true", "pred")}
    got = scores_from_counts(summed["tp"], summed["true"], summed["pred"])
    assert got["WA"] == pytest.approx(accuracy_score(y, p))
    assert got["UA"] == pytest.approx(balanced_accuracy_score(y, p))
    assert got["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert got["weighted_f1"] == pytest.approx(f1_score(y, p, average="weighted"))


def test_criterion_weighted_smoothed_loss_by_hand(labelled):
    task = Emotion2vecClassificationTask.setup_task(task_cfg(labelled))
    task.label_counts = [1, 2, 5]
    crit = Emotion2vecClassificationCriterion(
        Emotion2vecClassificationCriterionConfig(label_smoothing=0.1, class_weights="balanced"), task)
    w = np.array([8 / 3, 8 / 6, 8 / 15])  # N / (C * n_c)
    logits = torch.randn(4, 3)
    target = torch.tensor([0, 2, 1, 2])

    class Fixed(torch.nn.Module):
        def forward(self, **kw):
            return {"logits": logits}

    loss, n, log = crit(Fixed(), {"net_input": {}, "target": target})
    logp = F.log_softmax(logits, -1).numpy()
    # torch's weighted label smoothing: (1-e) * w_y * -log p_y + e/C * sum_c w_c * -log p_c
    by_hand = sum(0.9 * w[t] * -logp[i, t] + 0.1 / 3 * sum(w[c] * -logp[i, c] for c in range(3))
                  for i, t in enumerate(target.tolist()))
    assert n == 4 and float(loss) == pytest.approx(by_hand, rel=1e-5)
    pred = logits.argmax(-1)
    assert [log[f"true_{c}"] for c in range(3)] == [1, 1, 2]
    assert sum(log[f"tp_{c}"] for c in range(3)) == int((pred == target).sum())
    with pytest.raises(ValueError, match="need 3 non-negative numbers"):
        Emotion2vecClassificationCriterion(Emotion2vecClassificationCriterionConfig(class_weights="1,2"), task)


# ------------------------------------------------------------------ model options


def test_layer_decay_reaches_fairseq_composite_optimizer():
    from fairseq.optim.composite import FairseqCompositeOptimizer

    model = Emotion2vecClassifierModel(classifier_cfg(layer_decay=0.5, optimizer_name="composite"), num_classes=3)
    # the recipe's optimizer section as fairseq reads it (OmegaConf parses 2e-3 as a float)
    recipe = OmegaConf.load(REPO / "recipes" / "finetune" / "schedule" / "smoke.yaml")
    # the root fields fairseq's optimizer/scheduler configs interpolate
    cfg = OmegaConf.merge({"common": {"tpu": False}}, recipe).optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    opt = FairseqCompositeOptimizer(cfg, params)
    # peak lr of each parameter's optimizer (param_groups hold the warm-up's current lr)
    lr_of = {id(p): opt.optimizers_config[g].lr[0] for g, o in opt.optimizers.items()
             for group in o.param_groups for p in group["params"]}
    L = 3  # 1 prenet + 2 main blocks
    named = dict(model.named_parameters())
    expect = {"proj.weight": 1.0, "blocks.1.mlp.fc1.weight": 0.5, "blocks.0.mlp.fc1.weight": 0.25,
              "modality_encoders.AUDIO.context_encoder.blocks.0.attn.qkv.weight": 0.125,
              "modality_encoders.AUDIO.project_features.2.weight": 0.5 ** (L + 1)}
    for name, scale in expect.items():
        assert lr_of[id(named[name])] == pytest.approx(2e-3 * scale), name
    # no weight decay on biases and norms, 0.01 elsewhere
    wd_of = {id(p): group["weight_decay"] for group in opt.param_groups for p in group["params"]}
    assert wd_of[id(named["blocks.0.norm1.weight"])] == 0.0 and wd_of[id(named["blocks.0.mlp.fc1.weight"])] == 0.01
    with pytest.raises(ValueError, match="needs optimizer=composite"):
        Emotion2vecClassifierModel(classifier_cfg(layer_decay=0.5, optimizer_name="adam"), num_classes=3)


def test_frozen_cnn_and_head_only_warmup():
    model = Emotion2vecClassifierModel(classifier_cfg(feature_grad_mult=0.0, freeze_finetune_updates=2), 3).train()
    cnn = [p for n, p in model.named_parameters() if ".local_encoder." in n]
    assert cnn and not any(p.requires_grad for p in cnn)
    source = torch.randn(2, 3000)
    model.set_num_updates(1)  # still inside freeze_finetune_updates: only the head learns
    model(source)["logits"].sum().backward()
    assert model.proj.weight.grad is not None
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("proj."))
    model.zero_grad(set_to_none=True)
    model.set_num_updates(2)
    model(source)["logits"].sum().backward()
    assert model.blocks[0].mlp.fc1.weight.grad is not None
    assert all(p.grad is None for p in cnn)
    # a gradient multiplier in (0, 1) scales the CNN's gradient only
    torch.manual_seed(0)
    full = Emotion2vecClassifierModel(classifier_cfg(feature_grad_mult=1.0), 3).train()
    half = Emotion2vecClassifierModel(classifier_cfg(feature_grad_mult=0.25), 3).train()
    half.load_state_dict(full.state_dict())
    for m in (full, half):
        torch.manual_seed(1)
        m(source)["logits"].sum().backward()
    w = "modality_encoders.AUDIO.local_encoder.conv_layers.0.0.weight"
    torch.testing.assert_close(dict(half.named_parameters())[w].grad, 0.25 * dict(full.named_parameters())[w].grad)
    torch.testing.assert_close(half.proj.weight.grad, full.proj.weight.grad)


def test_training_masks_stay_inside_valid_frames_and_are_reproducible():
    model = Emotion2vecClassifierModel(classifier_cfg(mask_prob=0.5, mask_length=2, mask_channel_prob=0.25,
                                                      mask_channel_length=4), 3).train()
    source = torch.randn(2, 16000)
    pad = torch.zeros(2, 16000, dtype=torch.bool)
    pad[1, 8000:] = True
    ids = torch.tensor([3, 7])
    tm, cm = model.training_masks(source, pad, ids)
    T1 = int(model.audio.local_encoder.output_lengths(torch.tensor([8000])))
    assert tm.shape == (2, 49) and tm[0].sum() == int(49 * 0.5) and tm[1].sum() == int(T1 * 0.5)
    assert not tm[1, T1:].any()
    assert cm.shape == (2, 64) and (cm.sum(1) == 16).all()
    tm2, cm2 = model.training_masks(source, pad, ids)
    assert torch.equal(tm, tm2) and torch.equal(cm, cm2)
    model.set_num_updates(5)
    assert not torch.equal(model.training_masks(source, pad, ids)[0], tm)


def test_init_from_pretraining_checkpoint_and_bad_layouts(tmp_path):
    pre = Emotion2vecModel(tiny_model_cfg())
    path = tmp_path / "pretrain.pt"
    torch.save({"model": pre.state_dict()}, path)  # with decoder and _ema.* teacher
    model = Emotion2vecClassifierModel(classifier_cfg(init_from=str(path)), 3)
    ours, theirs = model.state_dict(), pre.state_dict()
    for k in ours:
        if not k.startswith("proj."):
            assert torch.equal(ours[k], theirs[k]), k
    # an e2v-export folder (plugin format: no decoder, no teacher) initialises the same way
    from emotion2vec_plugin.checkpoint.model_record import InferenceSettings, ModelRecord
    from emotion2vec_plugin.formats import plugin
    from emotion2vec_plugin.modules.config import encoder_config_from

    student = {k: v for k, v in theirs.items() if not k.startswith("_ema")}
    plugin.write(ModelRecord(student, encoder_config_from(tiny_model_cfg()), InferenceSettings(), "student"),
                 str(tmp_path / "ex"))
    from_folder = Emotion2vecClassifierModel(classifier_cfg(init_from=str(tmp_path / "ex")), 3).state_dict()
    assert all(torch.equal(from_folder[k], ours[k]) for k in ours if not k.startswith("proj."))
    # a data2vec 2.0 audio checkpoint: one flat stack of blocks, no utterance tokens, an _ema entry
    prenet = "modality_encoders.AUDIO.context_encoder.blocks."
    d2v = {}
    for k, v in student.items():
        if k.startswith(prenet):
            k = "blocks." + k[len(prenet):]  # tiny: 1 prenet block -> blocks.0
        elif k.startswith("blocks."):
            i, rest = k[len("blocks."):].split(".", 1)
            k = f"blocks.{int(i) + 1}.{rest}"
        if not k.endswith("extra_tokens"):
            d2v[k] = v
    torch.save({"model": {**d2v, "_ema": {"x": torch.zeros(1)}}}, tmp_path / "d2v.pt")
    from_d2v = Emotion2vecClassifierModel(classifier_cfg(init_from=str(tmp_path / "d2v.pt")), 3).state_dict()
    assert all(torch.equal(from_d2v[k], ours[k]) for k in ours if not k.startswith("proj.") and "extra_tokens" not in k)
    bad = tmp_path / "wav2vec.pt"
    torch.save({"model": {"w2v_encoder.w2v_model.mask_emb": torch.zeros(768)}}, bad)
    with pytest.raises(CheckpointMismatchError, match=r"wav2vec\.pt: cannot map weights .*unexpected \['w2v_encoder"):
        Emotion2vecClassifierModel(classifier_cfg(init_from=str(bad)), 3)
    with pytest.raises(CheckpointMismatchError, match=r"pretrain\.pt"):
        Emotion2vecClassifierModel(classifier_cfg(init_from=str(path), depth=3), 3)
    with pytest.raises(ValueError, match="head has 3 classes but the task's label set has 4"):
        Emotion2vecClassifierModel(classifier_cfg(), 4).load_state_dict(model.state_dict())


def test_encoder_shape_comes_from_init_from_and_a_contrary_override_fails(tmp_path):
    """As fairseq's wav2vec 2.0 fine-tuning reads the shape from w2v_path: unset model.* shape fields
    are filled from init_from's own config (checkpoint cfg or export config), into the config itself
    (so checkpoints carry it); an explicit value that disagrees is an error naming field, values and file."""
    from dataclasses import fields as dc_fields

    from emotion2vec_plugin.checkpoint.init_from import SHAPE_FIELDS
    from emotion2vec_plugin.checkpoint.model_record import InferenceSettings, ModelRecord
    from emotion2vec_plugin.formats import plugin
    from emotion2vec_plugin.formats.init_source import encoder_shape_from_init
    from emotion2vec_plugin.modules.config import student_config_from

    pre_cfg = tiny_model_cfg()
    pre = Emotion2vecModel(pre_cfg)
    ckpt = tmp_path / "checkpoint_last.pt"
    model_cfg = {f.name: getattr(pre_cfg, f.name) for f in dc_fields(pre_cfg) if not f.name.startswith("_")}
    torch.save({"cfg": {"model": {**model_cfg, "_name": "emotion2vec"}}, "model": pre.state_dict()}, ckpt)
    student = {k: v for k, v in pre.state_dict().items() if not k.startswith("_ema")}
    plugin.write(ModelRecord(student, student_config_from(pre_cfg), InferenceSettings(), "s"), str(tmp_path / "ex"))

    def unshaped(**overrides):
        cfg = classifier_cfg(**overrides)
        for name in SHAPE_FIELDS:
            if name not in overrides:
                setattr(cfg, name, None)
        return cfg

    for source in (ckpt, tmp_path / "ex"):
        cfg = unshaped(init_from=str(source))
        model = Emotion2vecClassifierModel(cfg, 3)
        assert (cfg.embed_dim, cfg.depth, cfg.prenet_depth, cfg.num_utterance_tokens) == (64, 2, 1, 2)
        assert cfg.conv_feature_layers == pre_cfg.conv_feature_layers and model.proj.weight.shape == (3, 64)
        assert torch.equal(model.state_dict()["blocks.1.mlp.fc1.weight"], student["blocks.1.mlp.fc1.weight"])
    agreeing = unshaped(init_from=str(ckpt), embed_dim=64, conv_feature_layers=pre_cfg.conv_feature_layers.replace(" ", ""))
    Emotion2vecClassifierModel(agreeing, 3)  # the same values, spelled differently, are no override
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint_last\.pt: the encoder shape comes from "
                                                      r"model\.init_from.*model\.depth=3 \(init_from has 2\)"):
        Emotion2vecClassifierModel(unshaped(init_from=str(ckpt), depth=3), 3)
    with pytest.raises(CheckpointMismatchError, match=r"ex: .*model\.embed_dim=768 \(init_from has 64\)"):
        encoder_shape_from_init(unshaped(init_from=str(tmp_path / "ex"), embed_dim=768))
    # what the key map bridges is allowed: fresh utterance tokens, and a flat data2vec 2.0 stack split
    from emotion2vec_plugin.checkpoint.released_config import encoder_to_released_config

    flat_cfg = student_config_from(tiny_model_cfg(prenet_depth=0, depth=3, num_utterance_tokens=0))
    flat = {"_name": "data2vec_multi", **encoder_to_released_config(flat_cfg, {})}
    d2v = tmp_path / "d2v.pt"
    torch.save({"cfg": {"model": flat}, "model": {"w": torch.zeros(1)}}, d2v)
    split = unshaped(init_from=str(d2v), prenet_depth=1, depth=2, num_utterance_tokens=2)
    with pytest.raises(CheckpointMismatchError, match=r"d2v\.pt: cannot map weights"):  # past the shape check
        Emotion2vecClassifierModel(split, 3)
    # without init_from: the base model's shape
    base = unshaped()
    encoder_shape_from_init(base)
    assert (base.embed_dim, base.depth, base.prenet_depth) == (768, 8, 4)


def test_predict_with_an_encoder_export_gives_embeddings_and_asks_for_a_head(tmp_path):
    import soundfile as sf

    from emotion2vec_plugin.checkpoint.model_record import InferenceSettings, ModelRecord
    from emotion2vec_plugin.formats import plugin
    from emotion2vec_plugin.formats.load import load_pretrained
    from emotion2vec_plugin.inference import predict_cli as predict
    from emotion2vec_plugin.modules.config import encoder_config_from

    cfg = tiny_model_cfg()
    state = {k: v for k, v in Emotion2vecModel(cfg).state_dict().items() if not k.startswith("_ema")}
    plugin.write(ModelRecord(state, encoder_config_from(cfg), InferenceSettings(), "state"), str(tmp_path / "enc"))
    rng = np.random.default_rng(0)
    for n in (7000, 12000):
        sf.write(tmp_path / f"u{n}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
    args = [str(tmp_path / "enc"), str(tmp_path / "u7000.wav"), str(tmp_path / "u12000.wav"), "--quiet",
            "--batch-size", "2"]
    res = predict.main(predict.get_parser().parse_args([*args, "--out", str(tmp_path / "e.json")]))
    assert res["classes"] is None and [len(e["embedding"]) for e in res["embeddings"]] == [64, 64]
    encoder, _ = load_pretrained(str(tmp_path / "enc"))
    wav = torch.from_numpy(sf.read(tmp_path / "u7000.wav", dtype="float32")[0])[None]
    with torch.no_grad():
        alone = encoder.extract_features(F.layer_norm(wav, wav.shape))["x"].mean(1)[0]
    got = next(e["embedding"] for e in res["embeddings"] if e["key"].endswith("u7000.wav"))
    torch.testing.assert_close(torch.tensor(got), alone, rtol=0, atol=1e-5)  # batched with the longer file
    (tmp_path / "x.emo").write_text("a\nb\n")
    with pytest.raises(predict.PredictInputError, match="encoder export without a classifier head"):
        predict.main(predict.get_parser().parse_args([*args, "--labels", str(tmp_path / "x.emo")]))


def test_class_balanced_sampling_gives_every_class_the_same_share(labelled):
    from fairseq.data import ResamplingDataset

    rows = (labelled / "train.emo").read_text().split()
    skewed = ["low"] * (len(rows) - 2) + ["mid", "high"]  # 4 low, 1 mid, 1 high
    (labelled / "train.emo").write_text("\n".join(skewed) + "\n")
    task = Emotion2vecClassificationTask.setup_task(task_cfg(labelled, class_balanced_sampling=True))
    task.load_dataset("train")
    ds = task.datasets["train"]
    assert isinstance(ds, ResamplingDataset) and len(ds) == len(skewed)
    weights = ds.weights.array
    targets = ds.dataset.targets
    shares = [weights[targets == c].sum() for c in range(3)]
    np.testing.assert_allclose(shares, [1 / 3] * 3)  # probability mass per class, not per utterance
    drawn = []
    for epoch in range(1, 51):  # what the epochs actually draw: 300 utterances, std of a share ~0.03
        ds.set_epoch(epoch)
        drawn += targets[ds._cur_indices.array].tolist()
    np.testing.assert_allclose(np.bincount(drawn, minlength=3) / len(drawn), [1 / 3] * 3, atol=0.1)


def test_split_labels_by_group_and_at_random(tmp_path):
    from manifests import split_labels

    src = write_labelled_corpus(tmp_path / "all", (("all", 4),))  # 12 utterances, groups spk0 / spk1
    groups = (src / "all.group").read_text().split()
    labels = (src / "all.emo").read_text().split()
    out = tmp_path / "by_group"
    summary = split_labels.main(split_labels.get_parser().parse_args(
        [str(src / "all"), "--dest", str(out), "--valid-groups", "spk1"]))
    assert summary["valid"] == {c: sum(1 for g, lab in zip(groups, labels) if (lab, g) == (c, "spk1"))
                                for c in ("high", "low", "mid")}
    assert set((out / "valid.group").read_text().split()) == {"spk1"}
    assert set((out / "train.group").read_text().split()) == {"spk0"}
    # the outputs are what the fine-tuning task reads
    task = Emotion2vecClassificationTask.setup_task(task_cfg(out))
    task.load_dataset("valid")
    assert len(task.datasets["valid"]) == groups.count("spk1")
    rand = split_labels.main(split_labels.get_parser().parse_args(
        [str(src / "all"), "--dest", str(tmp_path / "rand"), "--valid-fraction", "0.25"]))
    assert rand["valid"] == {"high": 1, "low": 1, "mid": 1} and rand["train"] == {"high": 3, "low": 3, "mid": 3}
    with pytest.raises(LabelledDataError, match=r"group 'spk9' does not occur in .*all\.group"):
        split_labels.main(split_labels.get_parser().parse_args(
            [str(src / "all"), "--dest", str(out), "--valid-groups", "spk9"]))


def test_bad_files_are_left_out_of_their_batch_and_counted(labelled):
    task = Emotion2vecClassificationTask.setup_task(task_cfg(labelled))
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    broken = ds.manifest.full_path(int(ds.indices[1]))
    with open(broken, "wb") as f:
        f.write(b"RIFF\x00\x00garbage")
    batch = ds.collater([ds[i] for i in range(len(ds))])
    assert batch["bad_files"] == 1 and len(batch["target"]) == len(ds) - 1
    assert batch["id"].tolist() == [0, 2]
    assert batch["target"].tolist() == [int(ds.targets[0]), int(ds.targets[2])]  # labels stay with their audio
