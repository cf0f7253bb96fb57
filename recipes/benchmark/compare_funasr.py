"""Numerical equivalence of our ``Emotion2vecEncoder`` forward with FunASR's fairseq-free ``Emotion2vec``.

1. FunASR's ``Emotion2vec(model_conf=...)`` is built from its ``template.yaml`` config (``--template``,
   or the installed ``funasr`` package's copy if it ships one; PyPI funasr 1.4.16 does not, and then
   the released model_conf that ``e2v-export --format funasr`` writes is used) with a fixed seed and
   random init; nothing is downloaded.
   With perturbation (default; ``--no-perturb`` keeps plain init) the parameters that plain init
   leaves at trivial values are randomised: LayerNorm weights/biases, the per-head ALiBi scales
   (one head negative, to exercise the clamp) and utterance token 0, so that swapped norms, a
   missing clamp or token mix-ups cannot hide behind 1/0 values.
2. Its ``state_dict`` is loaded strictly into ``Emotion2vecEncoder(StudentConfig())``; missing,
   unexpected or mis-shaped keys are listed and the script exits 2. The architecture fields of
   the template are checked against ``StudentConfig()`` first.
3. Both in eval mode, on synthetic audio of several lengths, normalised the same way for both
   (``F.layer_norm(wav, wav.shape)``, what FunASR's ``inference`` does when ``normalize``):
   outputs of the shared stages (CNN, projection, positional conv, prenet), of every block (its
   output ``x`` and FFN output ``t``), the last-layer frame features and their utterance mean are
   compared (max abs, max abs / max |ref|, relative L2, tolerance ratio). FunASR's own
   ``inference()`` is also checked against ours. This runs in fp32 and again in fp64.
4. A padded batch of two utterances: FunASR batched (``extract_features`` with a padding mask),
   FunASR one by one, ours batched, ours one by one, compared on valid frames.
5. ``--negative-controls``: copies of ours with one small deliberate bug each (GELU tanh, ALiBi
   slopes, LayerNorm eps, dropout on, ...) to show the tolerances catch real differences.
6. ``--throughput``: both one by one on ``--num`` utterances of 2-10 s, audio-seconds/second.
7. ``--write-fixture PATH``: instead of all the above, FunASR's model in a tiny shape
   (``devtools/funasr_fixture.py``, shared with the test: :func:`fixture_config`) with weights drawn
   by :func:`fixture_weights` (every parameter off its
   plain init: LayerNorms, ALiBi scales with one head negative, utterance token 0) runs in float64 on
   the waveform of :func:`fixture_audio`; its last-layer features are saved (a few KB) for
   ``tests/test_funasr_reference.py``, which rebuilds the same weights and input in our encoder and
   compares, so CI checks FunASR forward equality without FunASR. Weights and audio come from
   numpy's PCG64 uniform draws, keyed by seed and parameter name, and are checksummed in the file.

Pass criterion, elementwise as ``torch.allclose``: ``|ours - FunASR| <= atol + rtol * |FunASR|``
for every compared tensor ("tol ratio" = the largest ``|ours - FunASR| / (atol + rtol |FunASR|)``,
pass if <= 1). Exit status 0 if all single-utterance comparisons (fp32 and fp64) and ours-batched
vs one-by-one pass, 1 otherwise, 2 on a config or state-dict mismatch.

* fp32 (``--atol 3e-4 --rtol 1e-4``): the outputs are LayerNorm-scaled, |x| up to ~20 with the
  perturbed LayerNorm weights. Float32 rounding accumulated over a 7-layer CNN and 12 blocks,
  with different kernels on each side (SDPA vs explicit softmax, channels-last ``conv2d`` vs
  ``conv1d``), measured here: relative L2 1-3e-6, max abs up to 1.2e-4 (both sides deviate from
  an fp64 run by that order; ours about 2-3x more, from the channels-last CNN convs). 3e-4 keeps a
  >2.5x margin over that, while the smallest realistic semantic bug tried (tanh GELU) gives 1.6e-3.
* fp64 (``--atol64 1e-5``, rtol 0): both models in float64, so rounding drops by ~1e9 except where
  either side computes in fp32 on purpose (the CNN's Fp32LayerNorm in both, FunASR's ALiBi bias
  and attention logits); measured max abs ~5e-7. Any difference above 1e-5 is not rounding; this
  catches even a LayerNorm eps of 1e-6 instead of 1e-5 (2.5e-4), which fp32 noise could hide.

FunASR is not a project dependency; run this from a separate venv that has it::

    python3 -m venv /work/funasr-venv
    /work/funasr-venv/bin/pip install torch==2.9.1 torchaudio==2.9.1 funasr soundfile
    /work/funasr-venv/bin/pip install -e . --no-deps
    /work/funasr-venv/bin/python recipes/benchmark/compare_funasr.py [--verbose] [--negative-controls] \\
        [--throughput --num 20]
    /work/funasr-venv/bin/python recipes/benchmark/compare_funasr.py --write-fixture tests/data/funasr_tiny_reference.npz
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's devtools/ (not installed)

from devtools.funasr_fixture import fixture_audio, fixture_config, fixture_weights  # noqa: E402
from emotion2vec_plugin.modules import transformer  # noqa: E402
from emotion2vec_plugin.checkpoint.released_config import encoder_to_released_config  # noqa: E402
from emotion2vec_plugin.modules.config import StudentConfig, parse_conv_layers  # noqa: E402
from emotion2vec_plugin.modules.encoder import Emotion2vecEncoder  # noqa: E402

SR = 16000


STAGES = [  # module paths present in both models, compared on their outputs
    "modality_encoders.AUDIO.local_encoder",
    "modality_encoders.AUDIO.project_features",
    "modality_encoders.AUDIO.relative_positional_encoder",
    "modality_encoders.AUDIO.context_encoder",
]


def parse_yaml(text: str) -> dict:
    """YAML as FunASR reads it: OmegaConf's loader, which (unlike yaml.safe_load) takes 1e-05 as a float."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.create(text))


def load_template(path: str = None) -> Tuple[dict, str]:
    if path is None:
        import funasr

        candidate = os.path.join(os.path.dirname(funasr.__file__), "models", "emotion2vec", "template.yaml")
        if os.path.exists(candidate):
            path = candidate
    if path is not None:
        with open(path) as f:
            return parse_yaml(f.read())["model_conf"], path
    # no template file at hand: the released model_conf as e2v-export --format funasr writes it
    return encoder_to_released_config(StudentConfig(), {}), "e2v-export's released config (docs/design.md §5 values)"


def check_config(conf: dict, cfg: StudentConfig) -> List[str]:
    """Architecture fields of FunASR's model_conf vs our StudentConfig (names differ, values must not)."""
    audio = conf["modalities"]["audio"]
    pairs = [
        ("embed_dim", conf["embed_dim"], cfg.embed_dim),
        ("num_heads", conf["num_heads"], cfg.num_heads),
        ("num_alibi_heads", audio["num_alibi_heads"], cfg.num_heads),
        ("mlp_ratio", conf["mlp_ratio"], cfg.mlp_ratio),
        ("depth", conf["depth"], cfg.depth),
        ("prenet_depth", audio["prenet_depth"], cfg.prenet_depth),
        ("num_extra_tokens", audio["num_extra_tokens"], cfg.num_utterance_tokens),
        ("conv_pos_width", audio["conv_pos_width"], cfg.conv_pos_width),
        ("conv_pos_depth", audio["conv_pos_depth"], cfg.conv_pos_depth),
        ("conv_pos_groups", audio["conv_pos_groups"], cfg.conv_pos_groups),
        ("norm_eps", float(conf["norm_eps"]), cfg.norm_eps),
        ("feature_encoder_spec", parse_conv_layers(audio["feature_encoder_spec"]),
         parse_conv_layers(cfg.conv_feature_layers)),
        ("decoder_dim", audio["decoder"]["decoder_dim"], cfg.decoder_dim),
        ("decoder_layers", audio["decoder"]["decoder_layers"], cfg.decoder_layers),
        ("decoder_kernel", audio["decoder"]["decoder_kernel"], cfg.decoder_kernel),
    ]
    problems = [f"{name}: FunASR {a} vs ours {b}" for name, a, b in pairs if a != b]
    # settings our encoder does not implement; the template must have the value we hard-wire
    for name, want, have in [("layer_norm_first", False, conf["layer_norm_first"]),
                             ("norm_affine", True, conf["norm_affine"]),
                             ("use_alibi_encoder", True, audio["use_alibi_encoder"]),
                             ("learned_alibi", False, audio["learned_alibi"]),
                             ("learned_alibi_scale_per_head", True, audio["learned_alibi_scale_per_head"]),
                             ("learned_alibi_scale_per_layer", False, audio["learned_alibi_scale_per_layer"]),
                             ("conv_pos_pre_ln", False, audio["conv_pos_pre_ln"]),
                             ("extractor_mode", "layer_norm", audio["extractor_mode"]),
                             ("end_of_block_targets", False, conf["end_of_block_targets"])]:
        if have != want:
            problems.append(f"{name}={have} (ours implements {want})")
    return problems


def build_funasr(conf: dict, seed: int, perturb: bool):
    from funasr.models.emotion2vec.model import Emotion2vec

    torch.manual_seed(seed)
    model = Emotion2vec(model_conf=conf)
    if perturb:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, torch.nn.LayerNorm) and mod.weight is not None:
                    mod.weight.copy_(torch.empty_like(mod.weight).uniform_(0.5, 1.5, generator=g))
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            audio = model.modality_encoders["AUDIO"]
            scale = torch.empty_like(audio.alibi_scale).uniform_(0.1, 2.0, generator=g)
            scale.view(-1)[3] = -0.5  # clamped to 0 in both: head 3 gets no ALiBi bias
            audio.alibi_scale.copy_(scale)
            audio.extra_tokens.copy_(torch.randn(audio.extra_tokens.shape, generator=g))
    return model.eval()


def load_into_ours(state: Dict[str, torch.Tensor]) -> Emotion2vecEncoder:
    ours = Emotion2vecEncoder(StudentConfig())
    mine = ours.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    shapes = [f"{k}: FunASR {tuple(state[k].shape)} vs ours {tuple(mine[k].shape)}"
              for k in sorted(set(mine) & set(state)) if state[k].shape != mine[k].shape]
    if missing or unexpected or shapes:
        print("state_dict mismatch (FunASR -> ours):")
        for title, items in (("missing in FunASR", missing), ("unexpected from FunASR", unexpected),
                             ("shape mismatch", shapes)):
            for item in items:
                print(f"  {title}: {item}")
        sys.exit(2)
    ours.load_state_dict(state, strict=True)
    print(f"state_dict: {len(state)} tensors, {sum(v.numel() for v in state.values()) / 1e6:.2f} M values, "
          "strict load OK (no missing / unexpected / mis-shaped keys)")
    return ours.eval()


class Tol(NamedTuple):
    atol: float
    rtol: float


def diff(a: torch.Tensor, b: torch.Tensor, tol: Tol) -> Tuple[float, float, float, float]:
    """b is the reference (FunASR). Returns (max |a - b|, max |a - b| / max |b|, ||a - b|| / ||b||,
    tol ratio = max |a - b| / (atol + rtol |b|), elementwise as torch.allclose: <= 1 passes)."""
    a, b = a.double(), b.double()
    d = (a - b).abs()
    ratio = float((d / (tol.atol + tol.rtol * b.abs())).max())
    return (float(d.max()), float(d.max() / b.abs().max().clamp_min(1e-30)),
            float(d.norm() / b.norm().clamp_min(1e-30)), ratio)


class Recorder:
    """Forward hooks storing the outputs of the shared stages and of every block ((x, t) pairs)."""

    def __init__(self, model: torch.nn.Module):
        self.out: Dict[str, torch.Tensor] = {}
        mods = dict(model.named_modules())
        names = STAGES + [f"modality_encoders.AUDIO.context_encoder.blocks.{i}"
                          for i in range(len(model.modality_encoders["AUDIO"].context_encoder.blocks))]
        names += [f"blocks.{i}" for i in range(len(model.blocks))]
        self.block_names = names[len(STAGES):]
        self.handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(_mod, _inp, output):
            if isinstance(output, tuple):
                self.out[name + " x"], self.out[name + " t"] = output[0].detach().clone(), output[1].detach().clone()
            else:
                self.out[name] = output.detach().clone()
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def short(name: str) -> str:
    return name.replace("modality_encoders.AUDIO.", "AUDIO.").replace("context_encoder.blocks.", "prenet.")


def make_audio(seconds: float, rng: np.random.Generator) -> torch.Tensor:
    """Speech-like synthetic audio (harmonics + glide + noise) mixed with white noise."""
    from emotion2vec_plugin.data.synthetic import synth_utterance

    n = int(round(seconds * SR))
    return torch.from_numpy(synth_utterance(n, rng) + 0.05 * rng.standard_normal(n).astype(np.float32))


def compare_single(funasr_model, ours, wav: torch.Tensor, tol: Tol, verbose: bool) -> float:
    """One utterance through both; prints a summary line (and the per-stage table when asked or when
    something is over tolerance). Returns the worst tol ratio over all compared tensors."""
    dtype = next(ours.parameters()).dtype
    src = F.layer_norm(wav, wav.shape).view(1, -1).to(dtype)
    rf, ro = Recorder(funasr_model), Recorder(ours)
    theirs = funasr_model.extract_features(src, padding_mask=None)
    mine = ours.extract_features(src, padding_mask=None)
    rf.remove()
    ro.remove()
    x_f, x_o = theirs["x"], mine["x"]
    if x_o.shape != x_f.shape:
        print(f"  {wav.numel() / SR:.2f} s: output shapes differ, ours {tuple(x_o.shape)} vs FunASR {tuple(x_f.shape)}")
        return float("inf")
    rows = [(short(name), diff(ro.out[name], rf.out[name], tol)) for name in STAGES]
    for name in rf.block_names:  # every block: its output x and its FFN output t, utterance tokens included
        rows += [(short(name) + part, diff(ro.out[name + part], rf.out[name + part], tol)) for part in (" x", " t")]
    d_last = diff(x_o, x_f, tol)
    d_mean = diff(x_o.mean(1), x_f.mean(1), tol)
    # FunASR's layer_results are the FFN outputs t of the 8 main blocks (extra tokens kept);
    # ours are the outputs of all 12 blocks without tokens, the last one being x itself
    d_lr = max((diff(ro.out[f"blocks.{i} t"], t, tol) for i, t in enumerate(theirs["layer_results"])),
               key=lambda d: d[3])
    same_x = bool(torch.equal(mine["layer_results"][-1], x_o))
    worst_row = max(rows, key=lambda r: r[1][3])
    worst = max([d_last[3], d_mean[3], d_lr[3]] + [r[1][3] for r in rows])
    print(f"  {wav.numel() / SR:.2f} s, {x_f.size(1):3d} frames (|x| <= {float(x_f.abs().max()):4.1f}): last layer "
          f"max abs {d_last[0]:.2e} rel {d_last[1]:.1e} relL2 {d_last[2]:.1e}; utt. mean {d_mean[0]:.2e}; "
          f"all stages/blocks max abs {max(r[1][0] for r in rows):.2e}; tol ratio {worst:.2f} ({worst_row[0]})")
    if verbose or worst > 1:
        print(f"    {'stage':36s} {'max abs':>9s} {'rel':>9s} {'rel L2':>9s} {'tol ratio':>9s}")
        for name, (a, r, l2, q) in rows + [("last layer x", d_last), ("utterance mean", d_mean)]:
            flag = "  <-- over tolerance" if q > 1 else ""
            print(f"    {name:36s} {a:9.2e} {r:9.2e} {l2:9.2e} {q:9.2f}{flag}")
    if not same_x:
        print("    our layer_results[-1] is not x")
        worst = float("inf")
    return worst


def compare_inference_api(funasr_model, ours, wav: torch.Tensor, tol: Tol) -> Tuple[float, float]:
    """FunASR's user-facing ``inference`` (loads, normalises, one by one) vs ours on F.layer_norm(wav)."""
    res, _ = funasr_model.inference([wav], key=["u0"], device="cpu", granularity="frame")
    mine = ours.extract_features(F.layer_norm(wav, wav.shape).view(1, -1))["x"][0]
    d = diff(mine, torch.from_numpy(res[0]["feats"]), tol)
    return d[0], d[3]


def compare_padded(funasr_model, ours, wavs: List[torch.Tensor], tol: Tol) -> Dict[str, Tuple[float, float]]:
    """Batched with a padding mask vs one by one, for both; {name: (max abs, tol ratio)} on valid frames."""
    lengths = [w.numel() for w in wavs]
    src = torch.zeros(len(wavs), max(lengths))
    pad = torch.ones(len(wavs), max(lengths), dtype=torch.bool)
    for i, w in enumerate(wavs):
        src[i, : w.numel()] = F.layer_norm(w, w.shape)  # each utterance normalised on its own
        pad[i, : w.numel()] = False
    frames = ours.audio.local_encoder.output_lengths(torch.tensor(lengths)).tolist()
    f_batch = funasr_model.extract_features(src, padding_mask=pad)["x"]
    o_batch = ours.extract_features(src, padding_mask=pad)["x"]
    f_single = [funasr_model.extract_features(src[i: i + 1, :n])["x"][0] for i, n in enumerate(lengths)]
    o_single = [ours.extract_features(src[i: i + 1, :n])["x"][0] for i, n in enumerate(lengths)]

    def worst(outs, refs, mean=False):
        ds = [diff(a.mean(0), b.mean(0), tol) if mean else diff(a, b, tol) for a, b in zip(outs, refs)]
        return max(d[0] for d in ds), max(d[3] for d in ds)

    f_b = [f_batch[i, :T] for i, T in enumerate(frames)]
    o_b = [o_batch[i, :T] for i, T in enumerate(frames)]
    return {
        "FunASR batched vs FunASR one-by-one": worst(f_b, f_single),
        "FunASR batched vs FunASR one-by-one (utt. mean)": worst(f_b, f_single, True),
        "ours batched vs ours one-by-one": worst(o_b, o_single),
        "ours batched vs FunASR one-by-one": worst(o_b, f_single),
        "ours batched vs FunASR one-by-one (utt. mean)": worst(o_b, f_single, True),
        "ours one-by-one vs FunASR one-by-one": worst(o_single, f_single),
    }


def negative_controls(pairs, wav: torch.Tensor) -> None:
    """Deliberate small deviations applied to a copy of our model, to show the tolerances catch them.
    ``pairs``: [(label, funasr_model, ours, tol)] per precision."""
    import copy

    from emotion2vec_plugin.modules.transformer import Mlp, alibi_slopes

    def gelu_tanh(m):
        for mod in m.modules():
            if isinstance(mod, Mlp):
                mod.act.approximate = "tanh"

    def slopes_pow2(m):  # 12 heads with the power-of-two formula instead of Press et al.'s interleave
        m.audio.alibi_slopes.copy_(torch.tensor([2 ** (-8 * (i + 1) / 12) for i in range(12)]))

    def slopes_reversed(m):
        m.audio.alibi_slopes.copy_(torch.tensor(alibi_slopes(12)[::-1]))

    def eps_1e6(m):
        for mod in m.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.eps = 1e-6

    def dropout_on(m):
        m.encoder_cfg.layerdrop = 0.0
        m.audio.context_encoder.layerdrop = 0.0
        m.train()

    def token0_zero(m):
        m.audio.extra_tokens[:, 0].zero_()

    def no_pos_conv(m):
        m.audio.relative_positional_encoder.forward = lambda x, padding_mask=None: torch.zeros_like(x)

    controls = [("GELU tanh approximation in the FFNs", gelu_tanh),
                ("ALiBi slopes 2^(-8(i+1)/12), no interleave", slopes_pow2),
                ("ALiBi slopes in reverse head order", slopes_reversed),
                ("LayerNorm eps 1e-6 instead of 1e-5", eps_1e6),
                ("dropout left on (train mode, no layerdrop)", dropout_on),
                ("utterance token 0 zeroed", token0_zero),
                ("positional conv skipped", no_pos_conv)]
    print(f"\nnegative controls ({wav.numel() / SR:.2f} s; a copy of ours with one deviation each, vs FunASR; "
          "last-layer max abs, caught = tol ratio > 1):")
    refs = []
    for label, funasr_model, ours, tol in pairs:
        dtype = next(ours.parameters()).dtype
        src = F.layer_norm(wav, wav.shape).view(1, -1).to(dtype)
        refs.append((label, src, funasr_model.extract_features(src)["x"], ours, tol))
    for name, fn in controls:
        cells = []
        for label, src, ref, ours, tol in refs:
            m = copy.deepcopy(ours)
            fn(m)
            torch.manual_seed(0)
            d = diff(m.extract_features(src)["x"], ref, tol)
            cells.append(f"{label} {d[0]:8.2e} {'caught' if d[3] > 1 else 'NOT caught':10s}")
        print(f"  {name:44s} " + "   ".join(cells))


def throughput(funasr_model, ours, args) -> None:
    """One by one, interleaved per utterance (FunASR extract_features, FunASR inference(), ours, in
    rotating order) so that background load and cache state hit all three alike; per utterance the
    best of ``--repeats`` is summed."""
    rng = np.random.default_rng(args.seed + 7)
    wavs = [make_audio(rng.uniform(args.min_seconds, args.max_seconds), rng) for _ in range(args.num)]
    seconds = sum(w.numel() for w in wavs) / SR

    def features(model, w):
        return model.extract_features(F.layer_norm(w, w.shape).view(1, -1))["x"].mean(1)

    def funasr_inference(w):
        return funasr_model.inference([w], key=["u"], device="cpu", granularity="utterance")

    methods = {"FunASR extract_features": lambda w: features(funasr_model, w),
               "FunASR inference()": funasr_inference,
               f"ours extract_features ({transformer.AltAttention.impl})": lambda w: features(ours, w)}
    for fn in methods.values():  # warm-up at the longest length (allocator, FunASR's ALiBi cache)
        fn(max(wavs, key=len))
    best = {name: [float("inf")] * len(wavs) for name in methods}
    for _ in range(args.repeats):
        for i, w in enumerate(wavs):
            names = list(methods)
            for name in names[i % len(names):] + names[: i % len(names)]:  # rotate who goes first
                fn = methods[name]
                t = time.perf_counter()
                fn(w)
                best[name][i] = min(best[name][i], time.perf_counter() - t)
    print(f"\nthroughput, one by one, {args.num} utterances of {args.min_seconds:g}-{args.max_seconds:g} s "
          f"({seconds:.1f} s of audio), fp32 CPU, {torch.get_num_threads()} threads, interleaved in rotating order, "
          f"best of {args.repeats} per utterance:")
    ref = sum(best["FunASR extract_features"])
    for name, times in best.items():
        t = sum(times)
        print(f"  {name:34s} {t:7.2f} s  {seconds / t:7.2f} audio-s/s  ({ref / t:.2f}x FunASR extract_features)")


def write_fixture(path: str, seed: int) -> int:
    """FunASR's Emotion2vec in fixture_config()'s shape, fp64, on fixture_audio(): save its features."""
    import json
    from dataclasses import asdict

    import funasr
    from funasr.models.emotion2vec.model import Emotion2vec

    cfg = fixture_config()
    conf = encoder_to_released_config(cfg, {})
    problems = check_config(conf, cfg)
    if problems:
        print("config differences:\n  " + "\n  ".join(problems))
        return 2
    model = Emotion2vec(model_conf=conf)
    weights = fixture_weights({k: tuple(v.shape) for k, v in model.state_dict().items()}, seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    model = model.double().eval()
    wav = fixture_audio(seed)
    with torch.no_grad():
        res = model.extract_features(torch.from_numpy(wav)[None], padding_mask=None)
    x = res["x"][0].numpy()  # [T, D], utterance tokens removed
    np.savez_compressed(
        path, x=x, utt_mean=x.mean(0), seed=seed, config=json.dumps(asdict(cfg), sort_keys=True),
        audio_checksum=float(np.abs(wav).sum()), weights_checksum=float(sum(np.abs(w).sum() for w in weights.values())),
        producer=f"FunASR {funasr.__version__} Emotion2vec.extract_features, torch {torch.__version__}, float64",
    )
    print(f"wrote {path}: x {x.shape} ({os.path.getsize(path)} bytes), FunASR {funasr.__version__}, "
          f"{len(weights)} tensors, |x| <= {np.abs(x).max():.2f}")
    return 0


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, nargs="+", default=[1.0, 2.37, 5.0],
                   help="single-utterance lengths to compare")
    p.add_argument("--pad-seconds", type=float, nargs=2, default=[2.37, 5.0],
                   help="lengths of the two utterances of the padded batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=3e-4, help="fp32 absolute tolerance (see the header)")
    p.add_argument("--rtol", type=float, default=1e-4, help="fp32 relative tolerance, elementwise as torch.allclose")
    p.add_argument("--atol64", type=float, default=1e-5, help="fp64 absolute tolerance (rtol 0)")
    p.add_argument("--no-fp64", dest="fp64", action="store_false", help="skip the float64 comparison")
    p.add_argument("--no-perturb", dest="perturb", action="store_false",
                   help="keep plain init (LayerNorm 1/0, ALiBi scale 1, token 0 zero)")
    p.add_argument("--template",
                   help="FunASR template.yaml to build from (default: the installed package's, else the embedded copy)")
    p.add_argument("--attn-impl", choices=["sdpa", "eager"], default="sdpa", help="our AltAttention kernel")
    p.add_argument("--verbose", action="store_true", help="per-stage / per-block table for every length")
    p.add_argument("--negative-controls", action="store_true",
                   help="also run copies of ours with deliberate small bugs to show the tolerances catch them")
    p.add_argument("--throughput", action="store_true", help="also time both one by one")
    p.add_argument("--num", type=int, default=20, help="utterances for --throughput")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=1, help="timed passes per model (best is reported)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write-fixture", metavar="PATH",
                   help="only write the fp64 reference features of the tiny fixture model to PATH (.npz)")
    return p


@torch.inference_mode()
def main(args) -> int:
    import copy

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.write_fixture:
        return write_fixture(args.write_fixture, args.seed)
    transformer.AltAttention.impl = args.attn_impl
    conf, source = load_template(args.template)
    problems = check_config(conf, StudentConfig())
    print(f"FunASR config: {source}")
    if problems:
        print("config differences (ours cannot represent these):\n  " + "\n  ".join(problems))
        return 2
    print("config: architecture fields of template.yaml equal StudentConfig() defaults")
    funasr_model = build_funasr(conf, args.seed, args.perturb)
    ours = load_into_ours(funasr_model.state_dict())
    tol32, tol64 = Tol(args.atol, args.rtol), Tol(args.atol64, 0.0)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, perturbed init: {args.perturb}, "
          f"our attention: {args.attn_impl}; pass if |ours - FunASR| <= atol + rtol |FunASR| elementwise "
          f"(tol ratio <= 1): fp32 atol {tol32.atol:g} rtol {tol32.rtol:g}, fp64 atol {tol64.atol:g}")

    rng = np.random.default_rng(args.seed)
    wavs = [make_audio(s, rng) for s in args.seconds]
    print("\nfp32, single utterances (both fed F.layer_norm(wav, wav.shape)); ours - FunASR:")
    worst32 = max(compare_single(funasr_model, ours, w, tol32, args.verbose) for w in wavs)
    api_abs, api_ratio = compare_inference_api(funasr_model, ours, wavs[0], tol32)
    print(f"  FunASR inference() (its own loading + normalisation) vs ours, {wavs[0].numel() / SR:.2f} s: "
          f"max abs {api_abs:.2e}, tol ratio {api_ratio:.2f}")
    worst32 = max(worst32, api_ratio)

    print(f"\nfp32, padded batch of {args.pad_seconds[0]:g} s + {args.pad_seconds[1]:g} s (valid frames only):")
    pads = compare_padded(funasr_model, ours, [make_audio(s, rng) for s in args.pad_seconds], tol32)
    for name, (a, q) in pads.items():
        print(f"  {name:48s} max abs {a:9.2e}  tol ratio {q:10.2f}")
    pad_worst = max(pads["ours batched vs ours one-by-one"][1], pads["ours batched vs FunASR one-by-one"][1])

    pairs = [("fp32", funasr_model, ours, tol32)]
    worst64 = 0.0
    if args.fp64:
        f64, o64 = copy.deepcopy(funasr_model).double(), copy.deepcopy(ours).double()
        pairs.append(("fp64", f64, o64, tol64))
        print("\nfp64, single utterances (both models in float64; ours - FunASR):")
        worst64 = max(compare_single(f64, o64, w, tol64, args.verbose) for w in wavs)

    if args.negative_controls:
        negative_controls(pairs, wavs[0])
    if args.throughput:
        throughput(funasr_model, ours, args)

    ok = worst32 <= 1 and worst64 <= 1
    pad_ok = pad_worst <= 1
    print(f"\nRESULT: single-utterance ours == FunASR: {'YES' if ok else 'NO'} (worst tol ratio fp32 {worst32:.2f}"
          + (f", fp64 {worst64:.2f}" if args.fp64 else "") + f"); ours batched == ours one-by-one == FunASR "
          f"one-by-one: {'YES' if pad_ok else 'NO'} (tol ratio {pad_worst:.2f})")
    return 0 if ok and pad_ok else 1


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
