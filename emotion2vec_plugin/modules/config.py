"""Architecture settings of the emotion2vec network, as plain dataclasses.

* :class:`EncoderConfig`: the encoder (CNN, projection, positional convs, utterance tokens, prenet
  and main blocks) that inference, feature extraction and the classifier build;
* :class:`DecoderConfig`: the conv decoder and its noise tokens, used only by pretraining;
* :class:`StudentConfig`: both, as flat fields in this order: the pretraining student, and the
  architecture record of the released formats (checkpoint ``cfg.model``, FunASR ``model_conf``,
  the plugin export's ``config.json``), which always carry the decoder settings.

The fairseq model configs inherit these fields (``models/emotion2vec_model.py``: StudentConfig;
``models/emotion2vec_classifier.py``: EncoderConfig), so the same names are used in hydra yaml
(``model.decoder_dim=...``), in checkpoints and in exported plain configs loaded without fairseq.
Defaults are the released emotion2vec base model (docs/design.md §2); the released ``config.yaml`` names
are given in the help where ours differ.
"""

import ast
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Tuple, Type, TypeVar


@dataclass
class EncoderConfig:
    conv_feature_layers: str = field(
        default="[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2",
        metadata={
            "help": "CNN feature extractor as a python list of (dim, kernel, stride); the default "
            "downsamples 16 kHz audio by 320 (20 ms frames). Released name: feature_encoder_spec"
        },
    )
    embed_dim: int = field(default=768, metadata={"help": "Transformer width D"})
    num_heads: int = field(default=12, metadata={"help": "attention heads (also ALiBi heads)"})
    mlp_ratio: float = field(default=4.0, metadata={"help": "FFN width = mlp_ratio * embed_dim"})
    prenet_depth: int = field(
        default=4,
        metadata={"help": "blocks inside modality_encoders.AUDIO.context_encoder (the 'prenet')"},
    )
    depth: int = field(default=8, metadata={"help": "main blocks after the prenet (blocks.N)"})
    conv_pos_depth: int = field(default=5, metadata={"help": "positional conv layers"})
    conv_pos_width: int = field(
        default=95,
        metadata={"help": "total positional conv width; each layer has kernel max(3, width // depth)"},
    )
    conv_pos_groups: int = field(default=16, metadata={"help": "groups of the positional convs"})
    num_utterance_tokens: int = field(
        default=10,
        metadata={
            "help": "learned utterance tokens N_u prepended to the frames (0 for the 'global' "
            "utterance mode). Released name: num_extra_tokens"
        },
    )
    encoder_dropout: float = field(default=0.1, metadata={"help": "dropout after attention projection"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout inside the FFN"})
    post_mlp_drop: float = field(default=0.1, metadata={"help": "dropout on the FFN output before the residual"})
    prenet_dropout: float = field(default=0.1, metadata={"help": "dropout after the prenet input LayerNorm"})
    layerdrop: float = field(default=0.05, metadata={"help": "probability of skipping a main block in training"})
    prenet_layerdrop: float = field(default=0.05, metadata={"help": "probability of skipping a prenet block in training"})
    norm_eps: float = field(
        default=1e-5,
        metadata={"help": "LayerNorm epsilon of the Transformer blocks and the prenet norm (data2vec 2.0's "
                          "norm_eps); the CNN, projection, positional-conv and decoder norms use 1e-5 as there"},
    )


@dataclass
class DecoderConfig:
    """The conv decoder of pretraining (data2vec 2.0 ``Decoder1d``) and its noise tokens."""

    decoder_dim: int = field(default=384, metadata={"help": "conv decoder width (training only)"})
    decoder_kernel: int = field(default=7, metadata={"help": "conv decoder kernel"})
    decoder_layers: int = field(default=4, metadata={"help": "conv decoder layers"})
    decoder_groups: int = field(default=16, metadata={"help": "conv decoder groups"})
    decoder_input_dropout: float = field(default=0.1, metadata={"help": "dropout on the decoder input"})
    mask_noise_std: float = field(
        default=0.01, metadata={"help": "std of the noise tokens put back at masked positions for the decoder"}
    )


@dataclass
class StudentConfig(DecoderConfig, EncoderConfig):
    """Encoder and decoder settings as one flat record (EncoderConfig's fields first): the
    pretraining student and the architecture record of the released formats."""


C = TypeVar("C", EncoderConfig, StudentConfig)


def config_from(cls: Type[C], cfg: Any) -> C:
    """``cls`` built from the fields of any config object or dict that it has; other keys are
    ignored and absent or None ones keep ``cls``'s defaults."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    values: Dict[str, Any] = {}
    for f in fields(cls):
        v = get(f.name, None)
        if v is not None:
            values[f.name] = v
    return cls(**values)


def encoder_config_from(cfg: Any) -> EncoderConfig:
    """The encoder part of any config object or dict (a checkpoint's ``cfg.model``, a fairseq model config)."""
    return config_from(EncoderConfig, cfg)


def student_config_from(cfg: Any) -> StudentConfig:
    """Encoder and decoder settings of any config object or dict; DecoderConfig's defaults where it
    has none (a classifier's config)."""
    return config_from(StudentConfig, cfg)


def parse_conv_layers(spec: str) -> List[Tuple[int, int, int]]:
    """Parse ``conv_feature_layers`` safely (no ``eval``): a list expression of (dim, kernel,
    stride) tuples, optionally with ``+`` and ``* n``."""
    try:
        tree = ast.parse(spec, mode="eval")
        layers = _eval_layers(tree.body)
    except (SyntaxError, ValueError) as e:
        raise ValueError(
            f"conv_feature_layers={spec!r} is not a list of (dim, kernel, stride) tuples such as "
            f"'[(512, 10, 5)] + [(512, 3, 2)] * 4': {e}"
        ) from None
    if not layers:
        raise ValueError(f"conv_feature_layers={spec!r} has no layers")
    for layer in layers:
        if len(layer) != 3 or any((not isinstance(v, int)) or v <= 0 for v in layer):
            raise ValueError(f"conv_feature_layers={spec!r}: {layer} is not a (dim, kernel, stride) of positive ints")
    return [tuple(layer) for layer in layers]


def _eval_layers(node: ast.AST) -> list:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _eval_layers(node.left) + _eval_layers(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        if isinstance(node.right, ast.Constant) and isinstance(node.right.value, int):
            return _eval_layers(node.left) * node.right.value
        raise ValueError("only 'list * int' repetition is allowed")
    if isinstance(node, (ast.List, ast.Tuple)) and all(isinstance(e, ast.Tuple) for e in node.elts):
        return [tuple(ast.literal_eval(e)) for e in node.elts]
    raise ValueError(f"unexpected expression {ast.dump(node)[:60]}")


def validate_encoder_config(cfg: EncoderConfig) -> None:
    """Cross-field checks, once, at build time (raises ValueError showing the values); the decoder's
    too when ``cfg`` has them (a StudentConfig)."""
    decoder = isinstance(cfg, DecoderConfig)
    parse_conv_layers(cfg.conv_feature_layers)
    if cfg.embed_dim % cfg.num_heads != 0:
        raise ValueError(f"embed_dim={cfg.embed_dim} must be divisible by num_heads={cfg.num_heads}")
    if cfg.embed_dim % cfg.conv_pos_groups != 0:
        raise ValueError(f"embed_dim={cfg.embed_dim} must be divisible by conv_pos_groups={cfg.conv_pos_groups}")
    if decoder and cfg.decoder_layers > 0 and (
            cfg.embed_dim % cfg.decoder_groups or cfg.decoder_dim % cfg.decoder_groups):
        raise ValueError(
            f"embed_dim={cfg.embed_dim} and decoder_dim={cfg.decoder_dim} must be divisible by "
            f"decoder_groups={cfg.decoder_groups}"
        )
    if cfg.prenet_depth < 0 or cfg.depth < 0 or cfg.prenet_depth + cfg.depth == 0:
        raise ValueError(f"need at least one block: prenet_depth={cfg.prenet_depth}, depth={cfg.depth}")
    if cfg.num_utterance_tokens < 0:
        raise ValueError(f"num_utterance_tokens={cfg.num_utterance_tokens} must be >= 0")
    for name in ("encoder_dropout", "attention_dropout", "activation_dropout", "post_mlp_drop",
                 "prenet_dropout", "layerdrop", "prenet_layerdrop") + (("decoder_input_dropout",) if decoder else ()):
        v = getattr(cfg, name)
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name}={v} must be in [0, 1)")
