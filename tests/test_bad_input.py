"""Bad input, tried as a new user would: every console script and the training task's start-up
answer with one line naming the input and a non-zero exit, never a traceback.

The table runs each script's ``cli_main(argv)`` in-process (the console scripts call exactly
that); a few cases also run as real console scripts, and the training cases as real
``fairseq-hydra-train`` runs, all started at once.
"""

import os
import subprocess

import numpy as np
import pytest
import torch

from manifests import synth_corpus
from emotion2vec_plugin.data.feature_store import save_stacked
from emotion2vec_plugin.demo import corpus, report
from emotion2vec_plugin.formats import export_cli as export
from emotion2vec_plugin.inference import extract_cli as extract
from emotion2vec_plugin.evaluation import benchmark, probe_cli
from manifests import audio_manifest, labels, validate
from tests.helpers import PLUGIN_DIR, RECIPES, venv_bin, write_corpus
from tests.test_checkpoint_init import student_state
from tests.test_untrusted_checkpoints import WritesAFile, released_cfg

SCRIPTS = {
    "e2v-manifest": audio_manifest.cli_main, "e2v-validate-manifest": validate.cli_main,
    "e2v-labels": labels.cli_main, "e2v-probe": probe_cli.cli_main, "e2v-export": export.cli_main,
    "e2v-extract": extract.cli_main, "e2v-demo-corpus": corpus.cli_main, "e2v-demo-report": report.cli_main,
    "e2v-synth-corpus": synth_corpus.cli_main, "e2v-benchmark": benchmark.cli_main,
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict:
    """One file or folder per kind of bad input, plus the good inputs they are combined with."""
    root = tmp_path_factory.mktemp("bad")
    p = {name: root / name for name in ("random.bin", "empty.txt", "a_folder", "utf16.tsv", "latin1.tsv",
                                        "truncated.pt", "other_model.pt", "labels_2.emo", "groups_3.group",
                                        "random.npy", "out", "work")}
    rng = np.random.default_rng(0)
    p["random.bin"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    p["random.npy"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    p["empty.txt"].write_bytes(b"")
    p["a_folder"].mkdir()
    data = write_corpus(root / "data", splits=(("train", 3),))
    text = (data / "train.tsv").read_text()
    p["utf16.tsv"].write_text(text, encoding="utf-16")
    p["latin1.tsv"].write_bytes(text.replace("train_001", "tr\u00e9in_001").encode("latin-1"))
    good = root / "good.pt"
    torch.save({"cfg": released_cfg(), "model": student_state(seed=1)}, good)
    p["truncated.pt"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save({"cfg": {"model": {"_name": "wav2vec2"}}, "model": {"w2v_encoder.proj.weight": torch.zeros(2, 2)}},
               p["other_model.pt"])
    save_stacked([np.zeros((4, 8)), np.ones((5, 8)), np.ones((2, 8))], str(root / "feats"))
    p["feats"] = root / "feats"
    p["labels_2.emo"].write_text("hap\nsad\n")  # 2 lines for 3 utterances
    p["groups_3.group"].write_text("a\nb\nc\n")
    (p["work"] / "probe").mkdir(parents=True)
    (p["work"] / "probe" / "pretrained.json").write_bytes(b"\x00\x01{not json")
    p["train.tsv"] = data / "train.tsv"
    p["data"] = data
    return {k: str(v) for k, v in p.items()}


# (script, arguments, the input the message must name); {name} is a path from the `bad` fixture
CASES = [
    ("e2v-manifest", ["{random.bin}", "--dest", "{out}/m"], "random.bin"),  # a file where a folder is expected
    ("e2v-manifest", ["{a_folder}", "--dest", "{out}/m"], "a_folder"),  # no audio at all
    ("e2v-manifest", ["{data}", "--dest", "{random.bin}"], "random.bin"),  # --dest is a file
    ("e2v-validate-manifest", ["{random.bin}", "--quiet"], "random.bin"),
    ("e2v-validate-manifest", ["{empty.txt}", "--quiet"], "empty.txt"),
    ("e2v-validate-manifest", ["{a_folder}", "--quiet"], "a_folder"),  # a folder where a file is expected
    ("e2v-validate-manifest", ["{utf16.tsv}", "--quiet"], "utf16.tsv:1"),
    ("e2v-validate-manifest", ["{latin1.tsv}", "--quiet"], "latin1.tsv:3"),
    ("e2v-labels", ["csv", "{random.bin}", "--dest", "{out}/l"], "random.bin:1"),
    ("e2v-labels", ["csv", "{empty.txt}", "--dest", "{out}/l"], "empty.txt:1"),
    ("e2v-labels", ["csv", "{a_folder}", "--dest", "{out}/l"], "a_folder"),
    ("e2v-labels", ["csv", "{utf16.tsv}", "--dest", "{out}/l"], "utf16.tsv:1"),
    ("e2v-labels", ["iemocap", "{random.bin}", "--dest", "{out}/l"], "random.bin"),
    ("e2v-probe", ["{feats}", "{labels_2.emo}", "--groups", "{groups_3.group}", "--quiet"], "labels_2.emo"),
    ("e2v-probe", ["{feats}", "{random.bin}", "--groups", "{groups_3.group}", "--quiet"], "random.bin:"),
    ("e2v-probe", ["{feats}", "{a_folder}", "--groups", "{groups_3.group}", "--quiet"], "a_folder"),
    ("e2v-probe", ["{feats}", "{groups_3.group}", "--groups", "{empty.txt}", "--quiet"], "empty.txt"),
    ("e2v-probe", ["{random.npy}", "{groups_3.group}", "--groups", "{groups_3.group}", "--quiet"], "random.npy"),
    ("e2v-export", ["{random.bin}", "--out", "{out}/e"], "random.bin"),
    ("e2v-export", ["{empty.txt}", "--out", "{out}/e"], "empty.txt"),
    ("e2v-export", ["{a_folder}", "--out", "{out}/e"], "a_folder"),
    ("e2v-export", ["{truncated.pt}", "--out", "{out}/e"], "truncated.pt"),
    ("e2v-export", ["{other_model.pt}", "--out", "{out}/e"], "other_model.pt"),
    ("e2v-extract", ["{random.bin}", "{train.tsv}", "--out", "{out}/x", "--quiet"], "random.bin"),
    ("e2v-extract", ["{truncated.pt}", "{train.tsv}", "--out", "{out}/x", "--quiet"], "truncated.pt"),
    ("e2v-extract", ["{a_folder}", "{train.tsv}", "--out", "{out}/x", "--quiet"], "a_folder"),
    ("e2v-extract", ["{other_model.pt}", "{train.tsv}", "--out", "{out}/x", "--quiet"], "other_model.pt"),
    ("e2v-extract", ["fbank", "{utf16.tsv}", "--out", "{out}/x", "--quiet"], "utf16.tsv:1"),
    ("e2v-extract", ["fbank", "{a_folder}", "--out", "{out}/x", "--quiet"], "a_folder"),
    ("e2v-extract", ["fbank", "{random.bin}", "--out", "{out}/x", "--quiet"], "random.bin:1"),
    ("e2v-demo-corpus", ["{random.bin}", "--quiet"], "random.bin"),
    ("e2v-demo-report", ["{random.bin}"], "random.bin"),
    ("e2v-demo-report", ["{work}"], "pretrained.json"),
    ("e2v-synth-corpus", ["{random.bin}"], "random.bin"),
    ("e2v-probe", ["{feats}", "{groups_3.group}", "--folds", "{a_folder}", "--quiet"], "groups_3.tsv"),
    ("e2v-benchmark", ["fbank", "{data}/train", "--out", "{out}/b", "--quiet"], "train.emo"),
    ("e2v-benchmark", ["fbank", "{a_folder}/x", "--out", "{out}/b", "--quiet"], "x.tsv"),
]


def fill(args, paths):
    """Substitute ``{name}`` (names contain dots, which str.format would read as attributes)."""
    out = []
    for a in args:
        for name, value in paths.items():
            a = a.replace("{" + name + "}", value)
        out.append(a)
    return out


def check_answer(script: str, code, err: str, names: str) -> None:
    """Non-zero exit, no traceback, and a line saying what is wrong with the named input."""
    assert code not in (0, None), f"{script} exited 0:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if names in line]
    assert lines, f"{script}: no line names {names}:\n{err}"
    if code == 2:  # cli.run_main: exactly one error line
        assert sum(line.startswith(f"{script}: error: ") for line in err.splitlines()) == 1, err


@pytest.mark.parametrize("script,args,names", CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_console_script_answers_bad_input_with_one_line(bad, capsys, script, args, names):
    code = 0
    try:
        result = SCRIPTS[script](fill(args, bad))
        code = result if isinstance(result, int) else 0
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    if isinstance(code, str):  # SystemExit("message"): Python prints it and exits 1
        err, code = err + code, 1
    check_answer(script, code, err, names)


# real console scripts (exit status and stderr as the shell sees them), started together
PROCESS_CASES = [CASES[6]] + [  # e2v-validate-manifest on UTF-16 (its own exit path), e2v-export (cli.run_main)
    ("e2v-export", ["{hub}", "--out", "{out}/p"], "hub.pt: refused to load"),
]


@pytest.mark.slow
def test_console_scripts_as_processes(bad, tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"model": {}, "x": WritesAFile(marker)}, tmp_path / "hub.pt")
    paths = dict(bad, hub=str(tmp_path / "hub.pt"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("E2V_TRACEBACK", None)
    procs = [subprocess.Popen([venv_bin(script), *fill(args, paths)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for script, args, _ in PROCESS_CASES]
    for (script, _, names), proc in zip(PROCESS_CASES, procs):
        _, err = proc.communicate(timeout=300)
        check_answer(script, proc.returncode, err, names)
        assert proc.returncode in (1, 2), (script, proc.returncode)
    assert not marker.exists()


# ------------------------------------------------------------------ training: start-up checks

TINY_CONV = "[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2"


def job_config(data: str = "/data", **sections):
    """The parts of a fairseq job config the checks read (tiny recipe values), with overrides
    given as ``section={key: value}``; fairseq hands the task ``cfg.task``, a node of it."""
    from omegaconf import OmegaConf

    cfg = {
        "task": {"data": data, "sample_rate": 16000, "normalize": True, "max_sample_size": 32000,
                 "min_sample_size": 4000, "check_files": True, "precompute_mask": False, "seed": 1,
                 "train_subset": "train", "conv_feature_layers": TINY_CONV},
        "optimization": {"max_update": 20},
        "lr_scheduler": {"_name": "cosine", "warmup_updates": 2, "lr_period_updates": -1},
        "optimizer": {"_name": "adam"},
        "dataset": {"max_tokens": 64000, "max_tokens_valid": 64000, "train_subset": "train"},
    }
    for section, values in sections.items():
        both = isinstance(cfg.get(section), dict) and isinstance(values, dict)
        cfg[section] = {**cfg[section], **values} if both else values
    return OmegaConf.create(cfg)


def paper_schedule():
    import yaml

    return yaml.safe_load((RECIPES / "schedule" / "paper.yaml").read_text())


@pytest.mark.parametrize("sections,message", [
    ({"optimization": {"max_update": 2}}, r"lr_scheduler\.warmup_updates=2 is not below optimization\.max_update=2.*"
                                           r"cosine schedule divides"),
    ({"optimization": {"max_update": 0}}, r"cosine schedule needs optimization\.max_update > 0"),
    ({**{k: v for k, v in paper_schedule().items() if k != "optimization"}, "optimization": {"max_update": 4000}},
     r"optimizer\.groups\.default\.lr_scheduler\.warmup_updates=5000 is not below optimization\.max_update=4000"),
    ({"task": {"max_sample_size": 500}}, r"task\.max_sample_size=500 samples gives the CNN .* 1 frame\(s\), expected "
                                         r"at least 2.* at least 720"),
    ({"task": {"max_sample_size": 100}}, r"gives the CNN .* 0 frame\(s\)"),
    ({"dataset": {"max_tokens": 3000}}, r"dataset\.max_tokens=3000 samples is below task\.min_sample_size=4000"),
], ids=["warmup", "cosine_without_max_update", "composite_warmup", "crop_1_frame", "crop_0_frames", "batch"])
def test_config_checks_refuse_settings_that_die_inside_fairseq(sections, message):
    from emotion2vec_plugin.tasks.startup_checks import TrainingInputError, check_training_config

    with pytest.raises(TrainingInputError, match=message):
        check_training_config(job_config(**sections).task)


@pytest.mark.parametrize("sections", [
    {},  # the tiny recipe
    {**paper_schedule(), "optimization": {"max_update": 100000},  # the paper's recipe (base)
     "task": {"max_sample_size": 320000, "min_sample_size": 32000}, "dataset": {"max_tokens": 1000000}},
    {"lr_scheduler": {"_name": "tri_stage", "warmup_steps": 50}, "optimization": {"max_update": 10}},  # no warmup_updates
    {"lr_scheduler": None},
    {"task": {"max_sample_size": 720}},  # exactly the 2 frames the CNN needs
], ids=["tiny", "paper", "tri_stage", "no_scheduler", "crop_2_frames"])
def test_config_checks_pass_working_settings(sections):
    from emotion2vec_plugin.tasks.startup_checks import check_training_config

    check_training_config(job_config(**sections).task)


def test_batch_budget_is_checked_against_the_longest_crop_of_each_subset(tmp_path):
    from emotion2vec_plugin.tasks.emotion2vec_pretraining import Emotion2vecPretrainingTask
    from emotion2vec_plugin.tasks.startup_checks import TrainingInputError

    data = write_corpus(tmp_path / "data", splits=(("train", 6), ("valid", 3)), min_len=8000, max_len=24000)
    sizes = [int(line.split("\t")[1]) for line in (data / "valid.tsv").read_text().splitlines()[1:]]
    longest = max(sizes)
    cfg = job_config(str(data), dataset={"max_tokens": 64000, "max_tokens_valid": longest - 1})
    task = Emotion2vecPretrainingTask.setup_task(cfg.task)
    task.load_dataset("train")  # fits
    with pytest.raises(TrainingInputError, match=rf"dataset\.max_tokens_valid={longest - 1} samples cannot hold one "
                                                 rf"utterance of subset 'valid': 1 utterance\(s\) .*longest {longest} "
                                                 rf"samples \(.*valid\.tsv:{sizes.index(longest) + 2}\)"):
        task.load_dataset("valid")
    Emotion2vecPretrainingTask.setup_task(job_config(str(data), dataset={"max_tokens_valid": longest}).task
                                          ).load_dataset("valid")  # exactly fits


# fairseq-hydra-train with the tiny recipe: each run must stop before training, ending on one line
TRAIN_CASES = {
    "warmup": (["optimization.max_update=2"],  # the example: ZeroDivisionError in the cosine schedule
               "lr_scheduler.warmup_updates=2 is not below optimization.max_update=2"),
    "batch_below_longest": (["dataset.max_tokens=10000"], "cannot hold one utterance of subset 'valid'"),
    "malicious_init_from": (["model.init_from={malicious}"], "hub.pt: refused to load: its pickle refers to "
                                                              "builtins.exec"),
}


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_runs")
    data = write_corpus(root / "data", splits=(("train", 8), ("valid", 2)))
    marker = root / "code_ran"
    torch.save({"cfg": released_cfg(), "model": student_state(seed=1), "x": WritesAFile(marker)}, root / "hub.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("HYDRA_FULL_ERROR", "E2V_TRACEBACK"):
        env.pop(var, None)
    procs = {}
    for name, (overrides, _) in TRAIN_CASES.items():
        work = root / name
        work.mkdir()
        procs[name] = (work, subprocess.Popen(
            [venv_bin("fairseq-hydra-train"), "--config-dir", str(RECIPES), "--config-name", "emotion2vec_tiny",
             f"task.data={data}", f"common.user_dir={PLUGIN_DIR}",
             *[o.format(malicious=root / "hub.pt") for o in overrides]],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    results = {name: (work, proc.communicate(timeout=300)[0], proc.returncode) for name, (work, proc) in procs.items()}
    return results, marker


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_training_stops_before_it_starts_with_one_line(train_runs, case):
    results, marker = train_runs
    work, log, code = results[case]
    assert code == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    last = [line for line in log.splitlines() if line.strip()][-1]
    assert last.startswith("emotion2vec: error: ") and TRAIN_CASES[case][1] in last, log[-3000:]
    assert "begin training epoch" not in log and not (work / "checkpoints" / "checkpoint_last.pt").exists()
    assert not marker.exists()
