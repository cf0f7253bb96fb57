"""fairseq's own data2vec 2.0 (``fairseq/examples/data2vec`` inside the installed wheel) made importable
on Python 3.11, for reference tests and benchmarks (devtools/: the plugin never imports it).

The shipped code does not import as is: it imports itself as the top-level package ``examples``
(absent from a pip install), its config dataclasses use dataclass instances as defaults (an error
since Python 3.11: "mutable default ... use default_factory"), its blocks and image modality need ``timm`` (not a dependency: the FFN is replaced by a
stand-in with timm's structure),
its data package imports torchvision, and importing it registers the name ``data2vec_multi`` in fairseq's global model registry.
:func:`patch_data2vec` copies the folder to ``dest`` under a private package name and applies
exactly these textual fixes, each of which must match (a changed fairseq fails loudly here rather
than comparing against something else). No model code is changed.

Usage::

    d2v = load_data2vec(tmp_dir)            # the module examples/data2vec/models/data2vec2.py
    model = d2v.Data2VecMultiModel(cfg, [d2v.Modality.AUDIO])
"""

import importlib
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Tuple

PACKAGE = "e2v_reference_data2vec"  # private top-level name of the patched copy

# (file relative to the data2vec folder, exact text, replacement); each must occur at least once
EDITS: List[Tuple[str, str, str]] = [
    # the model must not claim fairseq's registry name (and importing twice would raise)
    ("models/data2vec2.py", '@register_model("data2vec_multi", dataclass=Data2VecMultiConfig)\n', ""),
    # the image modality needs timm; the audio reference never builds it, so it is left out
    ("models/data2vec2.py",
     "from examples.data2vec.models.modalities.images import (\n    D2vImageConfig,\n    ImageEncoder,\n)\n",
     "@dataclass\nclass D2vImageConfig:  # image modality left out of the reference copy (needs timm)\n    pass\n\n\n"
     "ImageEncoder = None\n"),
    # AltBlock takes its FFN from timm (not a project dependency): a stand-in with timm's
    # Mlp structure and parameter names (fc1 -> act -> dropout -> fc2 -> dropout) is written below
    ("models/modalities/modules.py", "from timm.models.vision_transformer import DropPath, Mlp\n",
     "from ._timm_stand_in import DropPath, Mlp\n"),
    # the data package imports the image datasets (torchvision); only data/modality.py is needed
    ("data/__init__.py", "from .image_dataset import ImageDataset\n", ""),
    ("data/__init__.py", "from .path_dataset import PathDataset\n", ""),
    ("data/__init__.py", "from .mae_image_dataset import MaeImageDataset\n", ""),
    ("data/__init__.py", "from .mae_finetuning_image_dataset import MaeFinetuningImageDataset\n", ""),
]
TIMM_STAND_IN = '''"""Stand-in for the two timm classes AltBlock uses (written by devtools/reference_data2vec.py)."""
import torch.nn as nn


class Mlp(nn.Module):
    """timm.models.vision_transformer.Mlp: fc1 -> act -> dropout -> fc2 -> dropout."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features or in_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features or in_features, out_features or in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    def __init__(self, p):
        raise NotImplementedError("drop path is not part of the emotion2vec reference (rate 0)")
'''
# `name: SomeConfig = SomeConfig()` (optionally Optional[...]) -> field(default_factory=SomeConfig)
DATACLASS_DEFAULT = re.compile(r"^(\s+\w+: (?:Optional\[)?(\w+)\]?) = \2\(\)\s*$", re.M)


def fairseq_data2vec_dir() -> Path:
    import fairseq

    path = Path(fairseq.__file__).resolve().parent / "examples" / "data2vec"
    if not (path / "models" / "data2vec2.py").exists():
        raise FileNotFoundError(f"{path}/models/data2vec2.py not found: this fairseq distribution does not ship "
                                f"examples/data2vec (ve-fairseq 0.12.3 does)")
    return path


def patch_data2vec(dest: Path) -> Path:
    """Copy fairseq's examples/data2vec to ``dest/<PACKAGE>`` and patch it; returns ``dest`` (to put on sys.path)."""
    dest = Path(dest)
    pkg = dest / PACKAGE
    if pkg.exists():
        shutil.rmtree(pkg)
    shutil.copytree(fairseq_data2vec_dir(), pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for rel, old, replacement in EDITS:
        path = pkg / rel
        text = path.read_text()
        if old not in text:
            raise RuntimeError(f"{path}: expected text {old.strip()!r} not found; fairseq's data2vec code changed, "
                               f"update devtools/reference_data2vec.py")
        path.write_text(text.replace(old, replacement))
    (pkg / "models" / "modalities" / "_timm_stand_in.py").write_text(TIMM_STAND_IN)
    counts: Dict[str, int] = {}
    for path in sorted(pkg.rglob("*.py")):
        text = path.read_text()
        new = text.replace("from examples.data2vec", f"from {PACKAGE}").replace("import examples.data2vec", f"import {PACKAGE}")
        new, n = DATACLASS_DEFAULT.subn(r"\1 = field(default_factory=\2)", new)
        if n and not re.search(r"^from dataclasses import .*\bfield\b", new, re.M):
            new = "from dataclasses import field\n" + new
        counts[str(path.relative_to(pkg))] = n
        if new != text:
            path.write_text(new)
    # the nested config defaults that break on Python 3.11 must all have been found
    for rel, want in (("models/data2vec2.py", 3), ("models/modalities/base.py", 1)):
        if counts.get(rel, 0) < want:
            raise RuntimeError(f"{pkg / rel}: {counts.get(rel, 0)} dataclass-instance defaults rewritten, expected "
                               f">= {want}; update devtools/reference_data2vec.py")
    return dest


def load_data2vec(dest: Path) -> ModuleType:
    """Patch into ``dest`` (if not done yet in this process) and import ``models/data2vec2.py`` from there."""
    name = f"{PACKAGE}.models.data2vec2"
    if name in sys.modules:
        return sys.modules[name]
    root = str(patch_data2vec(dest))
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(name)
    module.Modality = importlib.import_module(f"{PACKAGE}.data.modality").Modality
    return module


def data2vec_config(d2v: ModuleType, cfg, max_update: int = 100000):
    """data2vec 2.0's ``Data2VecMultiConfig`` in the shape of our ``Emotion2vecConfig`` ``cfg``, with
    the released emotion2vec training settings that have no counterpart in ours: FFN targets,
    instance-normalised target layers, EMA of everything but the CNN and decoder, zero-initialised
    extra token 0, per-head learned ALiBi scale, ``cls_loss = d2v_loss = 1`` (the utterance loss
    reads the last extra token, our ``utterance_mode=token``)."""
    base = importlib.import_module(f"{PACKAGE}.models.modalities.base")
    audio = importlib.import_module(f"{PACKAGE}.models.modalities.audio")
    modules = importlib.import_module(f"{PACKAGE}.models.modalities.modules")
    decoder = modules.D2vDecoderConfig(
        decoder_dim=cfg.decoder_dim, decoder_groups=cfg.decoder_groups, decoder_kernel=cfg.decoder_kernel,
        decoder_layers=cfg.decoder_layers, input_dropout=cfg.decoder_input_dropout, decoder_residual=True,
        projection_layers=1,
    )
    audio_cfg = audio.D2vAudioConfig(
        prenet_depth=cfg.prenet_depth, prenet_layerdrop=cfg.prenet_layerdrop, prenet_dropout=cfg.prenet_dropout,
        num_extra_tokens=cfg.num_utterance_tokens, init_extra_token_zero=True, mask_noise_std=cfg.mask_noise_std,
        mask_prob=cfg.mask_prob, mask_length=cfg.mask_length, mask_prob_adjust=cfg.mask_prob_adjust,
        inverse_mask=False, encoder_zero_mask=True, ema_local_encoder=False, use_alibi_encoder=True,
        learned_alibi_scale=True, learned_alibi_scale_per_head=True, learned_alibi_scale_per_layer=False,
        num_alibi_heads=cfg.num_heads, model_depth=cfg.depth, extractor_mode="layer_norm",
        feature_encoder_spec=cfg.conv_feature_layers, conv_pos_width=cfg.conv_pos_width,
        conv_pos_groups=cfg.conv_pos_groups, conv_pos_depth=cfg.conv_pos_depth, conv_pos_pre_ln=False,
        decoder=decoder,
    )
    assert isinstance(audio_cfg, base.D2vModalityConfig)
    return d2v.Data2VecMultiConfig(
        depth=cfg.depth, num_heads=cfg.num_heads, embed_dim=cfg.embed_dim, mlp_ratio=cfg.mlp_ratio,
        norm_eps=cfg.norm_eps, norm_affine=True, encoder_dropout=cfg.encoder_dropout,
        post_mlp_drop=cfg.post_mlp_drop, attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout, dropout_input=0.0, layerdrop=cfg.layerdrop,
        layer_norm_first=False, average_top_k_layers=cfg.average_top_k_layers, end_of_block_targets=False,
        clone_batch=cfg.clone_batch, instance_norm_target_layer=True, layer_norm_target_layer=False,
        batch_norm_target_layer=False, instance_norm_targets=False, layer_norm_targets=False,
        ema_decay=cfg.ema_decay, ema_end_decay=cfg.ema_end_decay, ema_anneal_end_step=cfg.ema_anneal_end_step,
        ema_same_dtype=True, log_norms=False, ema_encoder_only=False, max_update=max_update,
        modalities=d2v.D2vModalitiesConfig(audio=audio_cfg), supported_modality=d2v.Modality.AUDIO,
        seed=int(cfg.seed), skip_ema=False, cls_loss=1.0, recon_loss=0.0, d2v_loss=1.0, loss_beta=0.0,
        loss_scale=None,
    )


def data2vec_state(state: Dict[str, "torch.Tensor"]) -> Dict[str, object]:  # noqa: F821
    """Our model's state dict (student + ``_ema.*`` teacher) in data2vec 2.0's layout (teacher as
    one ``_ema`` dict), for a strict ``Data2VecMultiModel.load_state_dict``."""
    student = {k: v for k, v in state.items() if not k.startswith("_ema")}
    teacher = {k[len("_ema."):]: v for k, v in state.items() if k.startswith("_ema.")}
    return {**student, "_ema": teacher}
