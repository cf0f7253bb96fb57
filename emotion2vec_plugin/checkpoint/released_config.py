"""The released emotion2vec architecture record and our fields, both ways (docs/design.md §5).

Released emotion2vec checkpoints (``cfg.model``, ``_name = data2vec_multi``) and FunASR's
``config.yaml`` (``model_conf``) describe the model with data2vec 2.0's names and nesting
(``modalities.audio.*``, ``num_extra_tokens``, ``feature_encoder_spec`` ...). These two functions
are the only translation between that record and :class:`~emotion2vec_plugin.modules.config.StudentConfig`;
the ``emotion2vec`` and ``funasr`` export formats write it, every reader of those layouts reads it.
"""

from typing import Any, Dict

from ..modules.config import StudentConfig


def plain(obj: Any) -> Any:
    """omegaconf containers -> plain dicts (without importing omegaconf when absent)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(obj, DictConfig):
            return OmegaConf.to_container(obj, resolve=False)
    except ImportError:
        pass
    return obj


def released_to_encoder_fields(model_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Map a released ``data2vec_multi`` / FunASR ``model_conf`` dict to StudentConfig fields
    (only the fields the record states)."""
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


def encoder_to_released_config(cfg: StudentConfig, training: Dict[str, Any]) -> Dict[str, Any]:
    """The released emotion2vec ``model`` config (data2vec_multi / FunASR model_conf) for our settings.

    ``training``: the self-distillation settings the record also carries (``ema_decay``,
    ``mask_prob`` ...; released values where absent) and ``normalize``. Field names and the
    constants we do not model follow the released ``config.yaml`` (docs/design.md §5).
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
