"""Load a trained emotion2vec student for inference, without fairseq.

Accepted sources (all end up as an :class:`Emotion2vecEncoder` in eval mode, no decoder):

* a ``plugin`` export folder (``config.json`` + ``model.safetensors``), written by ``e2v-export``;
* a ``funasr`` export folder or a FunASR model folder (``config.yaml`` + ``model.pt``);
* a checkpoint file: ours (``checkpoint_last.pt``), an ``emotion2vec``-format export or a released
  emotion2vec checkpoint (``cfg.model._name = data2vec_multi``).

Required keys are checked: a missing or unexpected weight is an error naming the file and the key.
Checkpoint files are read by :func:`emotion2vec_plugin.checkpoint.safe_load.load_checkpoint`
(``weights_only=True``, fairseq's config classes allowed; ``trust=True`` to unpickle anything).
"""

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple

import torch

from ..checkpoint.safe_load import load_checkpoint
from ..modules.config import EncoderConfig, encoder_config_from
from ..modules.encoder import Emotion2vecEncoder

logger = logging.getLogger(__name__)

PLUGIN_CONFIG = "config.json"
PLUGIN_WEIGHTS = "model.safetensors"


class ExportFormatError(ValueError):
    """An export or checkpoint that cannot be loaded; names the file and the key."""


@dataclass
class InferenceSettings:
    """What feature extraction needs besides the weights."""

    normalize: bool = True
    sample_rate: int = 16000


def released_to_encoder_fields(model_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Map a released ``data2vec_multi`` / FunASR ``model_conf`` dict to EncoderConfig fields."""
    audio = dict(model_cfg.get("modalities", {}).get("audio", {}))
    dec = dict(audio.get("decoder", {}) or {})
    pairs = {
        "conv_feature_layers": audio.get("feature_encoder_spec"),
        "embed_dim": model_cfg.get("embed_dim"),
        "num_heads": model_cfg.get("num_heads"),
        "mlp_ratio": model_cfg.get("mlp_ratio"),
        "prenet_depth": audio.get("prenet_depth"),
        "depth": model_cfg.get("depth"),
        "conv_pos_depth": audio.get("conv_pos_depth"),
        "conv_pos_width": audio.get("conv_pos_width"),
        "conv_pos_groups": audio.get("conv_pos_groups"),
        "num_utterance_tokens": audio.get("num_extra_tokens"),
        "encoder_dropout": model_cfg.get("encoder_dropout"),
        "attention_dropout": model_cfg.get("attention_dropout"),
        "activation_dropout": model_cfg.get("activation_dropout"),
        "post_mlp_drop": model_cfg.get("post_mlp_drop"),
        "prenet_dropout": audio.get("prenet_dropout"),
        "layerdrop": model_cfg.get("layerdrop"),
        "prenet_layerdrop": audio.get("prenet_layerdrop"),
        "norm_eps": model_cfg.get("norm_eps"),
        "decoder_dim": dec.get("decoder_dim"),
        "decoder_kernel": dec.get("decoder_kernel"),
        "decoder_layers": dec.get("decoder_layers"),
        "decoder_groups": dec.get("decoder_groups"),
        "decoder_input_dropout": dec.get("input_dropout"),
        "mask_noise_std": audio.get("mask_noise_std"),
    }
    return {k: v for k, v in pairs.items() if v is not None}


def encoder_to_released_config(cfg: EncoderConfig, training: Dict[str, Any]) -> Dict[str, Any]:
    """The released emotion2vec ``model`` config (data2vec_multi / FunASR model_conf) for our settings.

    Field names and the constants we do not model follow the released ``config.yaml`` (DESIGN §5).
    """
    return {
        "loss_beta": 0.0, "loss_scale": None, "depth": cfg.depth, "start_drop_path_rate": 0.0,
        "end_drop_path_rate": 0.0, "num_heads": cfg.num_heads, "norm_eps": cfg.norm_eps, "norm_affine": True,
        "encoder_dropout": cfg.encoder_dropout, "post_mlp_drop": cfg.post_mlp_drop,
        "attention_dropout": cfg.attention_dropout, "activation_dropout": cfg.activation_dropout,
        "dropout_input": 0.0, "layerdrop": cfg.layerdrop, "embed_dim": cfg.embed_dim, "mlp_ratio": cfg.mlp_ratio,
        "layer_norm_first": False, "average_top_k_layers": training.get("average_top_k_layers", 8),
        "end_of_block_targets": False, "clone_batch": training.get("clone_batch", 8),
        "layer_norm_target_layer": False, "batch_norm_target_layer": False, "instance_norm_target_layer": True,
        "instance_norm_targets": False, "layer_norm_targets": False,
        "ema_decay": training.get("ema_decay", 0.999), "ema_same_dtype": True, "log_norms": True,
        "ema_end_decay": training.get("ema_end_decay", 0.99999),
        "ema_anneal_end_step": training.get("ema_anneal_end_step", 20000), "ema_encoder_only": False,
        "max_update": training.get("max_update", 100000), "extractor_mode": "layer_norm", "shared_decoder": None,
        "min_target_var": training.get("min_target_var", 0.1), "min_pred_var": training.get("min_pred_var", 0.01),
        "supported_modality": "AUDIO", "mae_init": False, "seed": 1, "skip_ema": False,
        "cls_loss": 1.0, "recon_loss": 0.0, "d2v_loss": 1.0, "decoder_group": False,
        "adversarial_training": False, "adversarial_hidden_dim": 128, "adversarial_weight": 0.1,
        "cls_type": training.get("utterance_mode", "chunk"), "normalize": training.get("normalize", True),
        "modalities": {
            "audio": {
                "type": "AUDIO", "prenet_depth": cfg.prenet_depth, "prenet_layerdrop": cfg.prenet_layerdrop,
                "prenet_dropout": cfg.prenet_dropout, "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0,
                "num_extra_tokens": cfg.num_utterance_tokens, "init_extra_token_zero": True,
                "mask_noise_std": cfg.mask_noise_std, "mask_prob_min": None,
                "mask_prob": training.get("mask_prob", 0.5), "inverse_mask": False,
                "mask_prob_adjust": training.get("mask_prob_adjust", 0.05), "keep_masked_pct": 0.0,
                "mask_length": training.get("mask_length", 5), "add_masks": False, "remove_masks": False,
                "mask_dropout": 0.0, "encoder_zero_mask": True, "mask_channel_prob": 0.0, "mask_channel_length": 64,
                "ema_local_encoder": False, "local_grad_mult": 1.0, "use_alibi_encoder": True, "alibi_scale": 1.0,
                "learned_alibi": False, "alibi_max_pos": None, "learned_alibi_scale": True,
                "learned_alibi_scale_per_head": True, "learned_alibi_scale_per_layer": False,
                "num_alibi_heads": cfg.num_heads, "model_depth": cfg.depth,
                "decoder": {
                    "decoder_dim": cfg.decoder_dim, "decoder_groups": cfg.decoder_groups,
                    "decoder_kernel": cfg.decoder_kernel, "decoder_layers": cfg.decoder_layers,
                    "input_dropout": cfg.decoder_input_dropout, "add_positions_masked": False,
                    "add_positions_all": False, "decoder_residual": True, "projection_layers": 1,
                    "projection_ratio": 2.0,
                },
                "extractor_mode": "layer_norm", "feature_encoder_spec": cfg.conv_feature_layers,
                "conv_pos_width": cfg.conv_pos_width, "conv_pos_groups": cfg.conv_pos_groups,
                "conv_pos_depth": cfg.conv_pos_depth, "conv_pos_pre_ln": False,
            }
        },
    }


def build_encoder(cfg: EncoderConfig, state: Dict[str, torch.Tensor], origin: str) -> Emotion2vecEncoder:
    """Encoder without decoder, strictly loaded from ``state`` (decoder/teacher entries dropped)."""
    model = Emotion2vecEncoder(cfg, with_decoder=False)
    state = {k: v for k, v in state.items()
             if ".decoder." not in k and not k.startswith("_ema") and k not in ("proj.weight", "proj.bias")}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ExportFormatError(
            f"{origin}: weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ExportFormatError(f"{origin}: {k} has shape {tuple(v.shape)}, config expects {tuple(own[k].shape)}")
    model.load_state_dict(state)
    return model.eval()


def _plain(obj: Any) -> Any:
    """omegaconf containers -> plain dicts (without importing omegaconf when absent)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(obj, DictConfig):
            return OmegaConf.to_container(obj, resolve=False)
    except ImportError:
        pass
    return obj


def load_pretrained(path: str, device: str = "cpu", trust: bool = False) -> Tuple[Emotion2vecEncoder, InferenceSettings]:
    """Load any supported export or checkpoint (see module docstring) for feature extraction.

    ``trust``: unpickle checkpoint files without the weights-only restriction (see
    :func:`~emotion2vec_plugin.checkpoint.safe_load.load_checkpoint`).
    """
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, PLUGIN_CONFIG)):
            model, settings = _load_plugin_dir(path)
        elif os.path.isfile(os.path.join(path, "config.yaml")):
            model, settings = _load_funasr_dir(path, trust)
        else:
            raise ExportFormatError(f"{path}: a folder without {PLUGIN_CONFIG} (plugin export) or config.yaml (FunASR); "
                                    f"expected an e2v-export folder or a checkpoint file")
    elif os.path.isfile(path):
        model, settings = _load_checkpoint(path, trust)
    else:
        raise ExportFormatError(f"{path} does not exist; expected an e2v-export folder or a checkpoint file")
    return model.to(device), settings


def _load_plugin_dir(path: str) -> Tuple[Emotion2vecEncoder, InferenceSettings]:
    from safetensors.torch import load_file

    cfg_path = os.path.join(path, PLUGIN_CONFIG)
    meta = _read_config(cfg_path, lambda f: json.load(f), "JSON")
    for key in ("encoder", "inference"):
        if key not in meta:
            raise ExportFormatError(f"{cfg_path}: required key {key!r} missing")
    unknown = set(meta["encoder"]) - set(asdict(EncoderConfig()))
    if unknown:
        raise ExportFormatError(f"{cfg_path}: unknown encoder setting(s) {sorted(unknown)}")
    weights = os.path.join(path, PLUGIN_WEIGHTS)
    if not os.path.isfile(weights):
        raise ExportFormatError(f"{path}: {PLUGIN_WEIGHTS} missing")
    try:
        state = load_file(weights)
    except Exception as e:  # noqa: BLE001  safetensors raises its own SafetensorError (not an OSError/ValueError)
        raise ExportFormatError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e}); re-run "
                                f"e2v-export") from None
    model = build_encoder(EncoderConfig(**meta["encoder"]), state, weights)
    return model, InferenceSettings(**meta["inference"])


def _read_config(cfg_path: str, parse, kind: str) -> Dict[str, Any]:
    """A config file parsed by ``parse(file)`` as a dict; unreadable text or syntax is an error naming the file."""
    try:
        with open(cfg_path, encoding="utf-8") as f:
            conf = parse(f)
    except UnicodeDecodeError as e:
        raise ExportFormatError(f"{cfg_path}: not UTF-8 text (byte {e.start}: {e.reason}); expected the {kind} file "
                                f"e2v-export writes") from None
    except ValueError as e:  # json.JSONDecodeError and yaml.YAMLError (re-raised below) name line and column
        raise ExportFormatError(f"{cfg_path}: not valid {kind} ({e}); re-export or restore the file") from None
    if not isinstance(conf, dict):
        raise ExportFormatError(f"{cfg_path}: expected a {kind} mapping at the top, got {type(conf).__name__}")
    return conf


def _load_funasr_dir(path: str, trust: bool = False) -> Tuple[Emotion2vecEncoder, InferenceSettings]:
    import yaml

    def parse_yaml(f):
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(" ".join(str(e).split())) from None

    cfg_path = os.path.join(path, "config.yaml")
    conf = _read_config(cfg_path, parse_yaml, "YAML")
    if "model_conf" not in conf:
        raise ExportFormatError(f"{cfg_path}: required key 'model_conf' missing")
    weights = os.path.join(path, "model.pt")
    state = load_checkpoint(weights, trust)
    if not isinstance(state, dict):
        raise ExportFormatError(f"{weights}: expected a dict of weights, got {type(state).__name__}")
    state = state.get("model", state)
    cfg = EncoderConfig(**released_to_encoder_fields(conf["model_conf"]))
    return build_encoder(cfg, state, weights), InferenceSettings(normalize=bool(conf["model_conf"].get("normalize", True)))


def read_fairseq_checkpoint(path: str, trust: bool = False) -> Tuple[Dict[str, Any], Dict[str, Any], EncoderConfig]:
    """(checkpoint dict, plain cfg dict, encoder config) of one of ours or a released emotion2vec checkpoint.

    Read with :func:`~emotion2vec_plugin.checkpoint.safe_load.load_checkpoint` (``trust``: see there).
    """
    ckpt = load_checkpoint(path, trust)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        got = f"a dict with keys {sorted(map(str, ckpt))[:6]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ExportFormatError(f"{path}: not a fairseq checkpoint (expected a dict with a 'model' state dict and a "
                                f"'cfg', got {got})")
    cfg = _plain(ckpt.get("cfg")) or {}
    model_cfg = dict(_plain(cfg.get("model")) or {}) if isinstance(cfg, dict) else {}
    if model_cfg.get("_name") == "data2vec_multi" or "modalities" in model_cfg:
        enc = EncoderConfig(**released_to_encoder_fields(model_cfg))
    elif model_cfg.get("_name") == "emotion2vec":
        enc = encoder_config_from(model_cfg)
    else:
        raise ExportFormatError(f"{path}: a checkpoint of another model (cfg.model._name={model_cfg.get('_name')!r}); "
                                f"expected an emotion2vec training checkpoint or a released emotion2vec / data2vec 2.0 "
                                f"(data2vec_multi) checkpoint")
    return ckpt, cfg, enc


def _load_checkpoint(path: str, trust: bool = False) -> Tuple[Emotion2vecEncoder, InferenceSettings]:
    ckpt, cfg, enc = read_fairseq_checkpoint(path, trust)
    model_cfg, task_cfg = _plain(cfg.get("model")) or {}, _plain(cfg.get("task")) or {}
    settings = InferenceSettings(normalize=bool(task_cfg.get("normalize", model_cfg.get("normalize", True))),
                                 sample_rate=int(task_cfg.get("sample_rate", 16000)))
    return build_encoder(enc, ckpt["model"], path), settings
