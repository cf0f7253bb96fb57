"""fairseq model ``emotion2vec``: the student network plus the EMA teacher.

Contract with the criterion (``criterions/emotion2vec_criterion.py``): in training ``forward``
returns a dict with

* ``frame_pred`` / ``frame_target``  [N_masked, D]: student decoder output and teacher target Y_T
  on the masked frames of all ``clone_batch`` copies;
* ``utt_pred`` / ``utt_target``  [B * clone_batch, D]: Ū_S (per ``utterance_mode``) and Ȳ_T (per
  ``utterance_target``: by default the time mean of Y_T, zero up to rounding, docs/design.md §8),
  repeated to the clones;
* ``sample_size``: N_masked; ``stats``: detached scalars to log (target_var, pred_var, ema_decay,
  mask_frac, utt_target_norm).

The criterion turns these into ``L = L_frame + alpha * L_utt``.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from omegaconf import II

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model

from ..checkpoint.init_from import init_state, read_init_file
from ..modules.config import StudentConfig, student_config_from
from ..modules.ema import EMATeacher, ema_decay_at, teacher_keys
from ..modules.encoder import Emotion2vecEncoder
from ..modules.losses import UTTERANCE_MODES, feature_std, utterance_prediction
from ..modules.masking import MaskInfo, compute_span_mask
from ..modules.targets import UTTERANCE_TARGETS, average_top_k, utterance_target

logger = logging.getLogger(__name__)

UTTERANCE_MODE_CHOICES = ChoiceEnum(list(UTTERANCE_MODES))
UTTERANCE_TARGET_CHOICES = ChoiceEnum(list(UTTERANCE_TARGETS))


@dataclass
class Emotion2vecConfig(FairseqDataclass, StudentConfig):
    """The student's encoder and decoder settings (flat ``model.*`` fields, the names and order of
    released-compatible checkpoints) plus the self-distillation settings."""

    utterance_mode: UTTERANCE_MODE_CHOICES = field(
        default="chunk",
        metadata={
            "help": "utterance-level target (paper §3.2): token = one utterance token (N_u = 1, or the "
            "last of N_u as data2vec 2.0's cls_loss), chunk = mean of N_u > 1 tokens (released model), "
            "global = time mean of the frame predictions (set num_utterance_tokens=0)"
        },
    )
    clone_batch: int = field(default=8, metadata={"help": "masked copies of each utterance per step (data2vec 2.0 multi-mask)"})
    mask_prob: float = field(default=0.5, metadata={"help": "fraction of frames masked, exactly int(T * mask_prob) per row"})
    mask_length: int = field(default=5, metadata={"help": "span length in frames (20 ms each)"})
    mask_prob_adjust: float = field(default=0.05, metadata={"help": "relative boost of the span start probability to offset overlaps"})
    average_top_k_layers: int = field(
        default=8,
        metadata={"help": "K: the teacher target averages the FFN outputs of the top K main blocks (at most "
                          "model.depth: data2vec 2.0 never averages prenet blocks in)"},
    )
    utterance_target: UTTERANCE_TARGET_CHOICES = field(
        default="instance_norm",
        metadata={
            "help": "utterance target Ȳ_T (docs/design.md §8): instance_norm = time mean of the frame targets, as released "
            "and in data2vec 2.0, which is zero up to rounding because each target layer is instance-normalised "
            "over time (the utterance loss then only shrinks the tokens); layer_norm = time mean of the top-K FFN "
            "outputs layer-normalised per frame over channels (row norm <= sqrt(D)); raw = time mean of the top-K "
            "FFN average before any normalisation (unbounded scale)"
        },
    )
    utterance_after_decoder_dropout: bool = field(
        default=True,
        metadata={
            "help": "the utterance prediction reads the utterance tokens after the decoder's input dropout, as "
            "data2vec 2.0 (its in-place dropout precedes cls_pred) and the released training; false: before it"
        },
    )
    ema_decay: float = field(default=0.999, metadata={"help": "τ at update 0 (teacher EMA decay)"})
    ema_end_decay: float = field(default=0.99999, metadata={"help": "τ at and after ema_anneal_end_step"})
    ema_anneal_end_step: int = field(default=20000, metadata={"help": "updates over which τ anneals linearly"})
    min_target_var: float = field(default=0.1, metadata={"help": "collapse guard: stop if target std falls below"})
    min_pred_var: float = field(default=0.01, metadata={"help": "collapse guard: stop if prediction std falls below"})
    collapse_check_after: int = field(
        default=5000, metadata={"help": "updates before the collapse guard is armed (data2vec 2.0: 5000)"}
    )
    init_from: Optional[str] = field(
        default=None,
        metadata={
            "help": "checkpoint to initialise the student (and teacher) from: a released emotion2vec or "
            "data2vec 2.0 audio checkpoint, or one of ours; keys are mapped explicitly (checkpoint/convert.py)"
        },
    )
    trust_checkpoint: bool = field(
        default=False,
        metadata={"help": "read init_from with a full unpickle (runs any code the file holds) instead of "
                          "weights_only with fairseq's config classes allowed (checkpoint/safe_load.py); only for "
                          "files from a source you trust"},
    )
    compile: bool = field(
        default=False,
        metadata={"help": "torch.compile (dynamic lengths) every Transformer block and the conv decoder of the "
                          "student and the teacher; the first steps pay the compile time (minutes on CPU). Equal to "
                          "eager up to fp32 rounding without dropout (tests/test_speed_equivalence.py); with dropout "
                          "the compiled kernels draw their own random masks"},
    )
    seed: int = II("common.seed")


def validate_training_config(cfg: Emotion2vecConfig, num_layers: int) -> None:
    """Cross-field checks of the training settings (ValueError showing the values)."""
    mode = str(cfg.utterance_mode)
    if mode not in UTTERANCE_MODES:
        raise ValueError(f"model.utterance_mode={mode!r}; expected one of {UTTERANCE_MODES}")
    if mode == "token" and cfg.num_utterance_tokens < 1:
        raise ValueError("model.utterance_mode=token needs model.num_utterance_tokens >= 1 (the paper uses 1)")
    if mode == "chunk" and cfg.num_utterance_tokens < 2:
        raise ValueError(
            f"model.utterance_mode=chunk averages several tokens but num_utterance_tokens={cfg.num_utterance_tokens}; "
            f"use >= 2 (released: 10) or utterance_mode=token"
        )
    if not 1 <= cfg.average_top_k_layers <= cfg.depth:
        raise ValueError(
            f"model.average_top_k_layers={cfg.average_top_k_layers} must be in [1, {cfg.depth}]: the targets average "
            f"the top main blocks (model.depth={cfg.depth}); data2vec 2.0 never averages the "
            f"prenet_depth={cfg.prenet_depth} prenet blocks in"
        )
    if str(cfg.utterance_target) not in UTTERANCE_TARGETS:
        raise ValueError(f"model.utterance_target={cfg.utterance_target!r}; expected one of {UTTERANCE_TARGETS}")
    for name in ("ema_decay", "ema_end_decay"):
        v = getattr(cfg, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"model.{name}={v} must be in [0, 1]")
    if not 0.0 < cfg.mask_prob < 1.0:
        raise ValueError(f"model.mask_prob={cfg.mask_prob} must be in (0, 1)")
    if cfg.mask_length < 1 or cfg.clone_batch < 1:
        raise ValueError(f"model.mask_length={cfg.mask_length} and model.clone_batch={cfg.clone_batch} must be >= 1")
    if cfg.decoder_layers < 1:
        raise ValueError("pretraining needs the decoder: model.decoder_layers must be >= 1")


@register_model("emotion2vec", dataclass=Emotion2vecConfig)
class Emotion2vecModel(Emotion2vecEncoder, BaseFairseqModel):
    """emotion2vec student (released parameter names) with an fp32 EMA teacher kept outside the
    module tree (so the optimizer, DDP and fp16/bf16 casts never touch it)."""

    def __init__(self, cfg: Emotion2vecConfig):
        super().__init__(student_config_from(cfg))
        validate_training_config(cfg, self.num_layers)
        self.cfg = cfg
        self.num_updates = 0
        teacher = Emotion2vecEncoder(self.encoder_cfg, with_local_encoder=False, with_decoder=False)
        # a plain object attribute: nn.Module does not register it (see EMATeacher)
        self.teacher = EMATeacher(teacher)
        self.teacher.copy_from(dict(self.named_parameters()))
        tag_no_decay_parameters(self)
        if cfg.compile:
            compile_blocks(self)
            compile_blocks(self.teacher.module)
        if cfg.init_from:
            self.load_state_dict(init_state(self, read_init_file(cfg.init_from, cfg.trust_checkpoint)), strict=True)

    @classmethod
    def build_model(cls, cfg: Emotion2vecConfig, task=None) -> "Emotion2vecModel":
        return cls(cfg)

    # ------------------------------------------------------------------ teacher bookkeeping
    def ema_decay(self) -> float:
        return ema_decay_at(self.num_updates, self.cfg.ema_decay, self.cfg.ema_end_decay, self.cfg.ema_anneal_end_step)

    def set_num_updates(self, num_updates: int) -> None:
        """EMA hook: fairseq calls this before every forward with the number of finished updates
        (several times per update with update_freq > 1). The teacher folds in the student once per
        new update, with τ(num_updates); ``teacher.step`` makes this idempotent and resumable."""
        super().set_num_updates(num_updates)
        self.num_updates = num_updates
        if not self.training:
            return
        if num_updates > self.teacher.step:
            device = next(self.parameters()).device
            self.teacher.to(device)
            self.teacher.update(dict(self.named_parameters()), self.ema_decay())
            self.teacher.step = num_updates
        elif num_updates < self.teacher.step:  # the trainer reset its counter (reset_optimizer ...)
            self.teacher.step = num_updates

    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False) -> Dict[str, torch.Tensor]:
        state = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        state.update(self.teacher.state_dict(prefix + "_ema."))
        return state

    def load_state_dict(self, state_dict, strict: bool = True, model_cfg=None, args=None):
        state = dict(state_dict)
        ema_state = {k: state.pop(k) for k in teacher_keys(list(state))}
        result = super().load_state_dict(state, strict=strict, model_cfg=model_cfg, args=args)
        if ema_state:
            self.teacher.load_state_dict(ema_state)
        else:
            logger.info("checkpoint has no teacher: the teacher starts as a copy of the loaded student")
            self.teacher.copy_from(dict(self.named_parameters()))
            self.teacher.step = self.num_updates
        return result

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        source: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        precomputed_mask: Optional[torch.Tensor] = None,
        id: Optional[torch.Tensor] = None,
        features_only: bool = False,
        **unused,
    ) -> Dict[str, Any]:
        """Args: source [B, S] (normalised waveform, equal lengths in training), precomputed_mask
        [B * clone_batch, T] from the data loader (optional), id [B] utterance ids (seed the masks)."""
        if features_only:
            return self.extract_features(source, padding_mask)
        if padding_mask is not None and padding_mask.any():
            raise ValueError("emotion2vec pretraining expects equal-length crops; set task.pad=false")
        feats, _ = self.local_features(source)  # [B, T, D]
        mask_info = self.make_masks(feats.size(0), feats.size(1), precomputed_mask, id, feats.device)
        encoder_out, frame_pred = self.student_forward(feats, mask_info, id)
        y, utt_y = self.teacher_targets(feats, with_utterance=True)  # [B, T, D], [B, D] fp32
        return self.pair_outputs(encoder_out, frame_pred, y, mask_info, utt_y)

    def make_masks(self, B: int, T: int, precomputed: Optional[torch.Tensor], ids: Optional[torch.Tensor],
                   device: torch.device) -> MaskInfo:
        """Masks for the B * clone_batch rows; a pure function of (seed, update, utterance ids) so
        that resumed runs and every rank draw reproducible, distinct masks. In eval mode the
        update is left out: every validation masks an utterance the same way, so the losses of
        different checkpoints compare."""
        rows = B * self.cfg.clone_batch
        if precomputed is not None:
            if tuple(precomputed.shape) != (rows, T):
                raise ValueError(
                    f"dataset-side mask has shape {tuple(precomputed.shape)}, expected ({rows}, {T}) = "
                    f"(batch {B} x clone_batch {self.cfg.clone_batch}, frames); task and model mask settings differ"
                )
            return MaskInfo.from_mask(precomputed.cpu().bool()).to(device)
        gen = torch.Generator().manual_seed(mask_seed(self.cfg.seed, self.num_updates if self.training else -1, ids))
        mask = compute_span_mask(rows, T, self.cfg.mask_prob, self.cfg.mask_length, self.cfg.mask_prob_adjust, gen)
        return MaskInfo.from_mask(mask).to(device)  # built on CPU: its counts need no GPU sync

    def student_forward(self, feats: torch.Tensor, mask_info: MaskInfo, ids: Optional[torch.Tensor] = None):
        """[B, T, D] -> encoder output [B', N_u + T_keep, D] and decoder output [B', T, D], B' = B * clone.

        In training the decoder's noise tokens come from torch's RNG (fairseq reseeds it every
        update); in eval mode from a generator seeded by the utterance ids, so validation does
        not depend on what drew random numbers before it."""
        x = feats.repeat_interleave(self.cfg.clone_batch, dim=0)
        encoder_out = self.contextualize(x, None, mask_info)
        decoder_in = self.decoder_input(encoder_out)
        noise_gen = None
        if not self.training:
            noise_gen = torch.Generator(device=feats.device).manual_seed(mask_seed(self.cfg.seed, -2, ids))
        frame_pred = self.decode(decoder_in, mask_info, noise_gen)
        return (decoder_in if self.cfg.utterance_after_decoder_dropout else encoder_out), frame_pred

    @torch.no_grad()
    def teacher_targets(self, feats: torch.Tensor, with_utterance: bool = False):
        """Y_T [B, T, D] (fp32): teacher on the unmasked features, top-K FFN outputs averaged;
        with ``with_utterance`` also Ȳ_T [B, D] per ``utterance_target`` (modules/targets.py)."""
        self.teacher.to(feats.device)
        results: List = []
        self.teacher.module.contextualize(feats.detach().float(), None, None, results)
        n = self.num_utterance_tokens
        ffn = [t[:, n:] for _, t in results]
        y = average_top_k(ffn, self.cfg.average_top_k_layers)
        if not with_utterance:
            return y
        return y, utterance_target(str(self.cfg.utterance_target), ffn, self.cfg.average_top_k_layers, y)

    def pair_outputs(self, encoder_out: torch.Tensor, frame_pred: torch.Tensor, y: torch.Tensor,
                     mask_info: MaskInfo, utt_y: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        """Pair predictions with targets (see the module docstring); ``utt_y`` [B, D] defaults to
        the time mean of ``y``."""
        clones = self.cfg.clone_batch
        masked = mask_info.mask  # [B', T]
        rows, frames = masked.nonzero(as_tuple=True)  # row-major, the order of frame_pred[masked]
        if utt_y is None:
            utt_y = y.mean(dim=1)
        out = {
            "frame_pred": frame_pred[masked],
            # clone row r reads utterance r // clones: y.repeat_interleave(clones)[masked] without the copy
            "frame_target": y[rows // clones, frames],
            "utt_pred": utterance_prediction(str(self.cfg.utterance_mode), encoder_out, self.num_utterance_tokens, frame_pred),
            "utt_target": utt_y.repeat_interleave(clones, dim=0),
            "sample_size": mask_info.num_masked,
        }
        stats = {
            "target_var": feature_std(y).detach(),
            "pred_var": feature_std(out["frame_pred"].detach()),
            "ema_decay": self.ema_decay(),
            "mask_frac": mask_info.num_masked / masked.numel(),
            # mean L2 norm of Ȳ_T rows: ~0 with the released instance_norm target (docs/design.md §8)
            "utt_target_norm": utt_y.detach().norm(dim=-1).mean(),
        }
        self.check_collapse(stats)
        out["stats"] = stats
        return out

    def check_collapse(self, stats: Dict[str, Any]) -> None:
        """data2vec 2.0's guard: after ``collapse_check_after`` updates, stop on collapsed targets or predictions."""
        if self.num_updates <= self.cfg.collapse_check_after or not self.training:
            return
        if stats["target_var"] < self.cfg.min_target_var:
            raise RuntimeError(
                f"representation collapse at update {self.num_updates}: target std {float(stats['target_var']):.4f} < "
                f"model.min_target_var={self.cfg.min_target_var}; lower the learning rate or raise model.ema_decay"
            )
        if stats["pred_var"] < self.cfg.min_pred_var:
            raise RuntimeError(
                f"representation collapse at update {self.num_updates}: prediction std {float(stats['pred_var']):.4f} < "
                f"model.min_pred_var={self.cfg.min_pred_var}; lower the learning rate or raise model.ema_decay"
            )


def compile_blocks(encoder: Emotion2vecEncoder) -> None:
    """``nn.Module.compile`` (in place: parameter names and checkpoints are unchanged) of the prenet and
    main blocks and the decoder, with dynamic shapes so that new crop lengths do not recompile."""
    modules = list(encoder.audio.context_encoder.blocks) + list(encoder.blocks)
    if encoder.audio.decoder is not None:
        modules.append(encoder.audio.decoder)
    for module in modules:
        module.compile(dynamic=True)


def tag_no_decay_parameters(model: torch.nn.Module) -> None:
    """Biases, norms and the ALiBi scale go to the optimizer group ``no_decay`` (paper §4.1: no
    weight decay on them); fairseq's composite optimizer reads ``param_group``, plain Adam ignores it."""
    for name, p in model.named_parameters():
        if p.dim() == 1 or name.endswith(".bias") or "alibi_scale" in name:
            p.param_group = "no_decay"


def mask_seed(seed: int, num_updates: int, ids: Optional[torch.Tensor]) -> int:
    """Deterministic 63-bit seed from the run seed, the update and the utterance ids of the batch."""
    key = (int(seed), int(num_updates)) + (tuple(int(i) for i in ids.tolist()) if ids is not None else ())
    return hash(key) & ((1 << 63) - 1)
