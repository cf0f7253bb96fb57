"""e2v-curves: parses fairseq's training log (simple and json formats) and probe.jsonl into the
series it plots, and writes the figure."""

import json

from emotion2vec_plugin.evaluation import curves, curves_cli

SIMPLE = """\
[2026-11-25 22:28:34,501][train_inner][INFO] - epoch 001:      1 / 5 loss=36.8581, loss_frame=6.7942, target_var=0.7155, pred_var=0.2743, num_updates=1, lr=0.00025, wall=1
[2026-11-25 22:28:34,559][train_inner][INFO] - epoch 001:      2 / 5 loss=59.5108, loss_frame=7.0042, target_var=0.7065, pred_var=0.3082, num_updates=2, lr=0.0005, wall=1
[2026-11-25 22:28:34,742][valid][INFO] - epoch 001 | valid on 'valid' subset | loss 21.3478 | target_var 0.7108 | probe_ua 0.6389 | probe_s 0.1352 | num_updates 2
[2026-11-25 22:28:35,091][train][INFO] - epoch 001 | loss 33.6748 | num_updates 4 | wall 2
[2026-11-25 22:29:00,000][train_inner][INFO] - epoch 001:      2 / 5 loss=50.0, target_var=0.70, pred_var=0.31, num_updates=2, wall=9
"""
JSON_LINE = ('[2026-11-25 22:30:00,000][train_inner][INFO] - {"epoch": 1, "update": 0.6, "loss": "12.5", '
             '"target_var": "0.69", "pred_var": "0.33", "num_updates": "3", "lr": "0.0004"}\n')


def test_log_and_probe_records_become_series(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "hydra_train.log").write_text(SIMPLE + JSON_LINE)
    records = [
        {"update": 0, "features": "student", "results": {"last": {"UA": 0.5}, "last_gnorm": {"UA": 0.55}}},
        {"update": 0, "features": "fbank", "results": {"fbank": {"UA": 0.7}, "fbank_gnorm": {"UA": 0.75}}},
        {"update": 2, "features": "student", "results": {"last": {"UA": 0.6}, "last_gnorm": {"UA": 0.65}}},
        {"update": 2, "features": "student", "results": {"last": {"UA": 0.64}, "last_gnorm": {"UA": 0.66}}},  # resumed
    ]
    (run / "checkpoints" / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "garbage\n")
    args = curves_cli.get_parser().parse_args([str(run), "--json", str(tmp_path / "c.json")])
    got = curves_cli.main(args)
    # update 2 was logged twice (a resumed run appends): the later line wins; the json line is read too
    assert sorted(got["train"]) == [1, 2, 3]
    assert got["train"][1]["loss"] == 36.8581 and got["train"][1]["pred_var"] == 0.2743
    assert got["train"][2]["loss"] == 50.0 and got["train"][3]["target_var"] == 0.69
    assert got["valid"][2]["probe_ua"] == 0.6389 and got["valid"][2]["loss"] == 21.3478
    assert 4 not in got["train"]  # the end-of-epoch [train] summary is not a point
    assert curves.probe_series(got["probe"]) == {"last": {0: 0.5, 2: 0.64}, "last_gnorm": {0: 0.55, 2: 0.66}}
    assert curves.reference_lines(got["probe"]) == {"fbank": 0.7, "fbank_gnorm": 0.75}
    written = json.loads((tmp_path / "c.json").read_text())
    assert written["log_mel"] == {"fbank": 0.7, "fbank_gnorm": 0.75} and written["probe_ua"]["last"]["2"] == 0.64
    assert (run / "curves.png").stat().st_size > 10000


def test_checkpoint_names_give_their_updates(tmp_path):
    for name in ("checkpoint_1_200.pt", "checkpoint_3_1000.pt", "checkpoint_50.pt", "checkpoint_best.pt",
                 "checkpoint_last.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [u for u, _ in curves_cli.checkpoint_updates(str(tmp_path))] == [50, 200, 1000]
