"""Plant deliberate bugs in the training objective one at a time and report which the test suite catches.

Works on a throwaway copy of the repository (``git archive HEAD`` by default, ``--worktree`` to copy
the working tree instead, both without ``.git`` and ``.venv``), never on the repository itself. For
each bug it applies one exact text substitution to the copy, runs the README's test suite there
(``python -m pytest -x -q``: first the fast tests, ``-m "not slow"``, then, if they all pass, the
slow ones; ``-x`` stops at the first failure), records the first failing test, and restores the
file. ``PYTHONPATH`` points at the copy, so the copy's plugin is imported instead of the editable
install, and the tests locate the plugin folder from their own path (hydra runs use the copy);
the copy's ``.venv`` is a symlink to the repository's (recipes/demo.sh calls ``.venv/bin/...``).

A substitution target that is not found exactly once is an error (the code changed: update the
bug list), not a silently "caught" bug. The unplanted copy is tested first (``--no-baseline``
skips that); a failing baseline stops the script.

    OMP_NUM_THREADS=1 .venv/bin/python recipes/dev/plant_bugs.py [--only NAME ...] [--list]

Exit status 0 if every planted bug was caught, 1 if any survived, 2 on a stale substitution or a
failing baseline.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]


class Bug(NamedTuple):
    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    source: str  # "issue 12" or "added"


BUGS: List[Bug] = [
    # ------------------------------------------------------------------ the bugs listed in issue 12
    Bug("teacher targets from block outputs, not FFN outputs", "emotion2vec_plugin/models/emotion2vec_model.py",
        "[t[:, n:] for _, t in results]", "[x[:, n:] for x, _ in results]", "issue 12"),
    Bug("utterance tokens stripped from the wrong end of the teacher output",
        "emotion2vec_plugin/models/emotion2vec_model.py",
        "[t[:, n:] for _, t in results]", "[t[:, : t.size(1) - n] for _, t in results]", "issue 12"),
    Bug("utt_target with repeat instead of repeat_interleave", "emotion2vec_plugin/models/emotion2vec_model.py",
        '"utt_target": utt_y.repeat_interleave(clones, dim=0)', '"utt_target": utt_y.repeat(clones, 1)',
        "issue 12"),
    Bug("utterance_mode=token silently runs as chunk", "emotion2vec_plugin/models/emotion2vec_model.py",
        '"utt_pred": utterance_prediction(str(self.cfg.utterance_mode),',
        '"utt_pred": utterance_prediction({"token": "chunk"}.get(str(self.cfg.utterance_mode), '
        'str(self.cfg.utterance_mode)),', "issue 12"),
    Bug("utterance term not multiplied by sample_size (logging consistent)",
        "emotion2vec_plugin/criterions/emotion2vec_criterion.py",
        "        loss = frame_sum + self.alpha * utt * n\n", "        loss = frame_sum + self.alpha * utt\n"
        "        utt = utt / n  # logged as utt * n below: consistent with the loss\n", "issue 12"),
    Bug("mask_seed ignores the utterance ids", "emotion2vec_plugin/models/emotion2vec_model.py",
        "(tuple(int(i) for i in ids.tolist()) if ids is not None else ())", "()", "issue 12"),
    Bug("loss halved in the criterion", "emotion2vec_plugin/criterions/emotion2vec_criterion.py",
        "        loss = frame_sum + self.alpha * utt * n\n", "        loss = 0.5 * (frame_sum + self.alpha * utt * n)\n",
        "issue 12"),
    Bug("loss halved only under DDP (a gradient normalisation bug)", "emotion2vec_plugin/tasks/base.py",
        "        optimizer.backward(loss)\n",
        "        optimizer.backward(loss * (0.5 if dist.is_initialized() and dist.get_world_size() > 1 else 1.0))\n",
        "issue 12"),
    Bug("RAVDESS emotion codes 03 and 04 swapped", "manifests/labels.py",
        '"03": "happy", "04": "sad"', '"03": "sad", "04": "happy"', "issue 12"),
    Bug("(1 + mask_prob_adjust) dropped from the span-start probability", "emotion2vec_plugin/modules/masking.py",
        "start_p = mask_prob / mask_length * (1 + mask_prob_adjust)", "start_p = mask_prob / mask_length", "issue 12"),
    # ------------------------------------------------------------------ added here
    Bug("ALiBi scale not clamped at 0", "emotion2vec_plugin/modules/encoder.py",
        "audio.alibi_scale.clamp_min(0).view(-1)", "audio.alibi_scale.view(-1)", "added"),
    Bug("masked frames not zeroed before the positional conv", "emotion2vec_plugin/modules/encoder.py",
        "            x = x * (~mask_info.mask).unsqueeze(-1).to(x.dtype)\n", "            pass\n", "added"),
    Bug("bottom K layers averaged instead of the top K", "emotion2vec_plugin/modules/targets.py",
        "top = layer_outputs[-k:]\n    y = instance_norm_over_time(", "top = layer_outputs[:k]\n    y = instance_norm_over_time(",
        "added"),
    Bug("EMA weights swapped (teacher moves by tau, not 1 - tau)", "emotion2vec_plugin/modules/ema.py",
        "torch._foreach_mul_(teacher, decay)\n        torch._foreach_add_(teacher, student, alpha=1.0 - decay)",
        "torch._foreach_mul_(teacher, 1.0 - decay)\n        torch._foreach_add_(teacher, student, alpha=decay)", "added"),
    Bug("criterion ignores alpha", "emotion2vec_plugin/criterions/emotion2vec_criterion.py",
        "        loss = frame_sum + self.alpha * utt * n\n", "        loss = frame_sum + utt * n\n", "added"),
    Bug("non-finite-loss skip not agreed across ranks", "emotion2vec_plugin/tasks/base.py",
        "            dist.all_reduce(flags)\n", "            pass\n", "added"),
    Bug("ESD 'Sad' folder not read", "manifests/labels.py",
        'ESD_EMOTIONS = ("Angry", "Happy", "Neutral", "Sad", "Surprise")',
        'ESD_EMOTIONS = ("Angry", "Happy", "Neutral", "Surprise")', "added"),
    Bug("instance norm replaced by a per-frame layer norm in the targets", "emotion2vec_plugin/modules/targets.py",
        "return F.instance_norm(x.transpose(1, 2), eps=eps).transpose(1, 2)", "return F.layer_norm(x, x.shape[-1:], eps=eps)",
        "added"),
    Bug("frame loss on the unmasked frames", "emotion2vec_plugin/models/emotion2vec_model.py",
        "        masked = mask_info.mask  # [B', T]\n", "        masked = ~mask_info.mask  # [B', T]\n", "added"),
    Bug("frame targets of clone row r read utterance r % B instead of r // clone_batch",
        "emotion2vec_plugin/models/emotion2vec_model.py",
        '"frame_target": y[rows // clones, frames]', '"frame_target": y[rows % y.size(0), frames]', "added"),
]


def make_copy(dest: Path, worktree: bool) -> None:
    """The repository without .git and .venv: HEAD (git archive) or the working tree as it is."""
    if worktree:
        ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", "demo_work", "work")
        shutil.copytree(REPO, dest, ignore=ignore)
        return
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def check_targets(copy: Path, bugs: List[Bug]) -> List[str]:
    problems = []
    for bug in bugs:
        text = (copy / bug.path).read_text()
        n = text.count(bug.old)
        if n != 1:
            problems.append(f"{bug.name}: {bug.path} contains the substitution target {n} times (expected 1): {bug.old!r}")
    return problems


def run_suite(copy: Path, python: str, timeout: int) -> Tuple[bool, str, float]:
    """README's suite on the copy: fast tests, then slow ones, each stopping at the first failure.
    Returns (passed, first failing test or '', seconds)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.time()
    for marker in ("not slow", "slow"):
        cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", marker]
        try:
            proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"TIMEOUT after {timeout} s ({marker})", time.time() - t0
        if proc.returncode not in (0, 5):  # 5: no tests collected for the marker
            failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
            return False, failed[0] if failed else proc.stdout[-500:], time.time() - t0
    return True, "", time.time() - t0


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", help="run only bugs whose name contains one of these strings")
    p.add_argument("--list", action="store_true", help="list the bugs and check their targets, run nothing")
    p.add_argument("--worktree", action="store_true", help="copy the working tree instead of HEAD")
    p.add_argument("--no-baseline", action="store_true", help="skip the run of the unplanted copy")
    p.add_argument("--python", default=sys.executable, help="interpreter with the project's dependencies")
    p.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    p.add_argument("--keep", action="store_true", help="keep the copy (its path is printed)")
    return p


def main(args: argparse.Namespace) -> int:
    bugs = [b for b in BUGS if not args.only or any(s in b.name for s in args.only)]
    tmp = Path(tempfile.mkdtemp(prefix="plant_bugs_"))
    copy = tmp / "repo"
    make_copy(copy, args.worktree)
    # recipes/demo.sh calls REPO/.venv/bin/...: the same interpreter and console scripts, which
    # import the copy's code because PYTHONPATH (set for every run) comes before the editable install
    (copy / ".venv").symlink_to(REPO / ".venv")
    print(f"copy of {'the working tree' if args.worktree else 'HEAD'} at {copy}", flush=True)
    try:
        problems = check_targets(copy, bugs)
        if problems:
            print("stale substitutions (the code changed; update recipes/dev/plant_bugs.py):\n  " + "\n  ".join(problems))
            return 2
        if args.list:
            for b in bugs:
                print(f"  [{b.source}] {b.name}  ({b.path})")
            return 0
        if not args.no_baseline:
            ok, first, secs = run_suite(copy, args.python, args.timeout)
            print(f"baseline (nothing planted): {'pass' if ok else 'FAIL: ' + first} in {secs:.0f} s", flush=True)
            if not ok:
                return 2
        rows: List[Tuple[Bug, Optional[str], float]] = []
        for bug in bugs:
            path = copy / bug.path
            original = path.read_text()
            path.write_text(original.replace(bug.old, bug.new, 1))
            try:
                ok, first, secs = run_suite(copy, args.python, args.timeout)
            finally:
                path.write_text(original)
            rows.append((bug, None if ok else first, secs))
            print(f"  {'caught ' if not ok else 'SURVIVED'} {bug.name}: {first or 'all tests pass'} ({secs:.0f} s)",
                  flush=True)
        print("\n| bug | source | result |\n|---|---|---|")
        for bug, first, _ in rows:
            print(f"| {bug.name} | {bug.source} | {'caught by `' + first + '`' if first else '**survived**'} |")
        survived = [b for b, first, _ in rows if first is None]
        print(f"\n{len(rows) - len(survived)} of {len(rows)} bugs caught")
        return 1 if survived else 0
    finally:
        if args.keep:
            print(f"kept {copy}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
