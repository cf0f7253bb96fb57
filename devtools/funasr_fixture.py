"""The tiny seeded model and input of ``tests/data/funasr_tiny_reference.npz``.

``recipes/benchmark/compare_funasr.py --write-fixture`` ran FunASR's ``Emotion2vec`` with these
weights on this waveform and stored its features; ``tests/test_funasr_reference.py`` rebuilds the
same weights and waveform here (numpy PCG64 draws keyed by seed and parameter name, so they do not
depend on torch's generator) and runs our encoder on them, in CI without FunASR.
"""

from typing import Dict, Tuple

import numpy as np

from emotion2vec_plugin.modules.config import StudentConfig

SR = 16000
FIXTURE_SAMPLES = 4000  # 0.25 s -> 12 frames


def fixture_config() -> StudentConfig:
    """recipes/pretrain/arch/tiny.yaml's shape: 1 prenet + 2 main blocks of width 64, 4 heads, 2 tokens."""
    return StudentConfig(
        conv_feature_layers="[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2", embed_dim=64, num_heads=4,
        mlp_ratio=2.0, prenet_depth=1, depth=2, conv_pos_depth=2, conv_pos_width=10, conv_pos_groups=4,
        num_utterance_tokens=2, decoder_dim=32, decoder_kernel=3, decoder_layers=2, decoder_groups=4,
    )


def fixture_weights(shapes: Dict[str, Tuple[int, ...]], seed: int) -> Dict[str, np.ndarray]:
    """float64 weights for every parameter name, from uniform draws of PCG64 keyed by (seed, name):
    matrices and convs U(+-sqrt(3 / fan_in)), LayerNorm weights U(0.5, 1.5), biases U(+-0.2), ALiBi
    scales U(0.1, 2) with head 3 at -0.5 (clamped to 0), utterance tokens U(+-1.7) (token 0 too)."""
    import zlib

    out = {}
    for name, shape in sorted(shapes.items()):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        norm = "norm" in name or ".2.1." in name or "project_features.1." in name
        if name.endswith("alibi_scale"):
            w = rng.uniform(0.1, 2.0, size=shape)
            w.reshape(-1)[3] = -0.5
        elif name.endswith("extra_tokens"):
            w = rng.uniform(-1.7, 1.7, size=shape)
        elif norm and name.endswith("weight"):
            w = rng.uniform(0.5, 1.5, size=shape)
        elif name.endswith("bias"):
            w = rng.uniform(-0.2, 0.2, size=shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            w = rng.uniform(-1.0, 1.0, size=shape) * np.sqrt(3.0 / fan_in)
        out[name] = w
    return out


def fixture_audio(seed: int) -> np.ndarray:
    """[FIXTURE_SAMPLES] float64: two glides plus uniform noise, normalised like FunASR's inference."""
    rng = np.random.default_rng([seed, 7])
    t = np.arange(FIXTURE_SAMPLES) / SR
    wav = np.sin(2 * np.pi * (120 + 400 * t) * t) + 0.5 * np.sin(2 * np.pi * 310 * t) + rng.uniform(-0.3, 0.3, FIXTURE_SAMPLES)
    return (wav - wav.mean()) / np.sqrt(wav.var() + 1e-5)
