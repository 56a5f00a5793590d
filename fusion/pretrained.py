"""Start a model from trained weights instead of random ones.

* :func:`init_from_checkpoint`: from an admn_ros checkpoint (a shipped default or your own run),
  copy every encoder the new model shares with it - same modality, every tensor of the same shape -
  with its adapter and modality embedding, and the fusion transformer when its shapes match. The
  task head is never copied: the new classes get a fresh one. What was copied, and why anything was
  not, comes back as an :class:`InitReport`.
* :func:`init_model_config`: the model a run with ``init`` builds: the checkpoint's encoder for each
  modality the two share (so the weights fit), the run's own config for the others (at the
  checkpoint's depth: all encoders share one), the checkpoint's fusion and the dataset's class count.
* :func:`freeze_blocks`: the patch embedding, CLS token, position embedding and lowest ``n`` blocks
  of every copied encoder stop learning, as ADMN fine-tunes its pretrained backbones.
* :func:`load_timm_encoder`: a ViT state dict in timm's layout (``blocks.N.attn.qkv``,
  ``blocks.N.norm1``, ``blocks.N.mlp.fc1``, ...) into one encoder of the same shape through a key
  map (:data:`TIMM_RENAMES`). The two layouts differ only in the MLP's names; the classifier
  (``head``, ``fc_norm``) is left out. A 3-channel patch projection loads into a 1-channel encoder
  (depth, audio) summed over its colour channels. The files load with ``weights_only``.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from admn_ros.fusion.checkpoint import CheckpointError, load_weights, load_weights_only, read_checkpoint
from admn_ros.fusion.config import EncoderConfig, ModelConfig

#: Names ``--init`` accepts for the shipped defaults (``default`` is the synthetic RGB-D-audio model,
#: the one with an encoder for every modality).
SHIPPED_NAMES = {'default': 'synthetic', 'synthetic': 'synthetic', 'avdigits': 'avdigits'}
#: Shipped encoder-only checkpoints (``admn pretrain`` output): ``encoders`` is the rgb and audio
#: encoders pretrained on real unlabelled images and speech (docs/model.md, "Pretraining").
SHIPPED_ENCODERS = {'encoders': 'encoders_real'}

#: timm's ViT key -> this project's encoder key (regular expressions, applied in order).
TIMM_RENAMES: Tuple[Tuple[str, str], ...] = ((r'^blocks\.(\d+)\.mlp\.fc1\.', r'blocks.\1.mlp.0.'),
                                             (r'^blocks\.(\d+)\.mlp\.fc2\.', r'blocks.\1.mlp.2.'))
#: timm keys of the classifier, which an encoder does not have: left out when loading.
TIMM_CLASSIFIER = ('head.', 'fc_norm.', 'head_drop.')


def resolve_init(spec: str) -> Path:
    """``default`` / ``synthetic`` / ``avdigits`` (a shipped default), ``encoders`` (the shipped
    pretrained encoders) or a checkpoint path -> path."""
    key = str(spec).strip().lower()
    if key in SHIPPED_ENCODERS:
        from admn_ros.fusion.default_models import shipped_checkpoint
        return shipped_checkpoint(SHIPPED_ENCODERS[key])
    name = SHIPPED_NAMES.get(key)
    if name is not None:
        from admn_ros.fusion.default_models import default_checkpoint
        return default_checkpoint(name)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f'--init {spec}: no such checkpoint file (or use one of '
                                f'{", ".join([*SHIPPED_NAMES, *SHIPPED_ENCODERS])})')
    return path


# ------------------------------------------------------------------------------ admn checkpoints

@dataclass
class InitReport:
    """What :func:`init_from_checkpoint` copied (tensor names per part) and left fresh (why)."""

    source: str
    copied: Dict[str, List[str]] = field(default_factory=dict)
    fresh: Dict[str, str] = field(default_factory=dict)

    @property
    def copied_modalities(self) -> List[str]:
        return [p.split(':', 1)[1] for p in self.copied if p.startswith('encoder:')]

    def describe(self) -> str:
        parts = [f'{p} ({len(names)} tensors)' for p, names in self.copied.items()]
        lines = [f'init from {self.source}: copied {", ".join(parts) or "nothing"}']
        lines += [f'  fresh: {p}: {why}' for p, why in self.fresh.items()]
        return '\n'.join(lines)


def _group(key: str) -> str:
    """The unit a tensor is copied with: one modality's encoder, adapter, fusion, or head."""
    head, _, rest = key.partition('.')
    if head in ('encoders', 'adapters', 'modality_embed'):
        return f'{"encoder" if head == "encoders" else "adapter"}:{rest.split(".")[0]}'
    if head in ('fusion', 'fusion_norm', 'null_token'):
        return 'fusion'
    return head   # 'head'


def init_from_checkpoint(model: torch.nn.Module, source, *,
                         parts: Sequence[str] = ('encoder', 'adapter', 'fusion')) -> InitReport:
    """Copy the weights of ``source`` (a checkpoint path or a :func:`read_checkpoint` payload) that
    fit ``model``: a group (one modality's encoder; that modality's adapter and embedding; the
    fusion transformer) is copied whole when every tensor in it has the same name and shape, else
    left fresh. An adapter is copied only with its encoder. The head is never copied."""
    payload = read_checkpoint(source) if not isinstance(source, Mapping) else source
    theirs: Dict[str, torch.Tensor] = payload['state_dict']
    own = model.state_dict()
    report = InitReport(source=str(source) if not isinstance(source, Mapping) else 'checkpoint')
    groups: Dict[str, List[str]] = {}
    for key in own:
        groups.setdefault(_group(key), []).append(key)
    for group in sorted(groups, key=lambda g: ('encoder' not in g, g)):   # encoders first
        kind = group.split(':')[0]
        if kind == 'head':
            report.fresh['head'] = 'new classes'
            continue
        if kind not in parts:
            report.fresh[group] = 'not asked for'
            continue
        if kind == 'adapter' and f'encoder:{group.split(":")[1]}' not in report.copied:
            report.fresh[group] = 'its encoder was not copied'
            continue
        why = _mismatch(groups[group], own, theirs)
        if why:
            report.fresh[group] = why
            continue
        report.copied[group] = groups[group]
    merged = dict(own)
    for names in report.copied.values():
        for k in names:
            merged[k] = theirs[k].to(own[k].dtype)
    load_weights(model, merged, f'init from {report.source}')
    return report


def _mismatch(keys: List[str], own, theirs) -> str:
    absent = [k for k in keys if k not in theirs]
    if len(absent) == len(keys):
        return 'not in the checkpoint'
    if absent:
        return f'{len(absent)} tensor(s) not in the checkpoint (first: {absent[0]})'
    for k in keys:
        if tuple(theirs[k].shape) != tuple(own[k].shape):
            return f'{k} is {list(theirs[k].shape)} there, {list(own[k].shape)} here'
    return ''


def init_model_config(cfg: ModelConfig, source_cfg: ModelConfig, modalities: Sequence[str],
                      num_classes: int) -> Tuple[ModelConfig, List[str]]:
    """The model config of a run initialised from a checkpoint with config ``source_cfg`` (module
    docstring), and notes on where the run's own config was overridden."""
    depth = source_cfg.depth
    encoders: Dict[str, EncoderConfig] = {}
    notes = []
    for m in modalities:
        if m in source_cfg.encoders:
            encoders[m] = source_cfg.encoders[m]
            if m in cfg.encoders and cfg.encoders[m] != source_cfg.encoders[m]:
                notes.append(f'{m} encoder as in the init checkpoint, not as configured')
        elif m in cfg.encoders:
            encoders[m] = dataclasses.replace(cfg.encoders[m], depth=depth)
            notes.append(f'{m} encoder new (the init checkpoint has none), depth {depth}')
        else:
            raise ValueError(f'the dataset has modality {m}, which neither the model config nor '
                             'the init checkpoint has an encoder for')
    fused = {k: getattr(source_cfg, k) for k in ('adapter_hidden', 'fusion_dim', 'fusion_depth',
                                                  'fusion_heads', 'head')}
    return ModelConfig(**{**cfg.__dict__, **fused, 'encoders': encoders,
                          'num_classes': int(num_classes)}), notes


def freeze_blocks(model: torch.nn.Module, n: int, modalities: Sequence[str]) -> int:
    """Stop training the input end (patch embedding, CLS and position embeddings) and the lowest
    ``n`` blocks of the encoders of ``modalities``; returns the number of frozen tensors."""
    if n <= 0:
        return 0
    frozen = 0
    for m in modalities:
        enc = model.encoders[m]
        if n > enc.depth:
            raise ValueError(f'freeze_blocks = {n}, but the {m} encoder has {enc.depth} blocks')
        params = [*enc.patch_embed.parameters(), enc.cls_token, enc.pos_embed]
        for block in enc.blocks[:n]:
            params += list(block.parameters())
        for p in params:
            p.requires_grad_(False)
            frozen += 1
    return frozen


@dataclass
class StartingPoint:
    """Where a stage-1 run's weights start (its ``init``, ``init_encoders`` and ``freeze_blocks``):
    made by :func:`plan_init` before the model exists, applied to it by :meth:`apply`."""

    model_config: ModelConfig
    payload: Optional[Dict[str, Any]] = None      # the init checkpoint, read and verified
    source: str = ''
    timm_encoders: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def apply(self, model: torch.nn.Module, freeze: int = 0) -> str:
        """Copy the weights into ``model``, freeze the lowest ``freeze`` blocks of every encoder
        that got weights; returns what was done, for the run's log."""
        lines = [f'  note: {n}' for n in self.notes]
        started: List[str] = []
        if self.payload is not None:
            report = init_from_checkpoint(model, self.payload)
            report.source = self.source
            lines.insert(0, report.describe())
            started += report.copied_modalities
        for m, path in self.timm_encoders.items():
            left_out = load_timm_encoder(model.encoders[m], path)
            lines.append(f'init {m} encoder from timm ViT {path}'
                         + (f' ({len(left_out)} classifier tensors left out)' if left_out else ''))
            started.append(m)
        if freeze:
            frozen = freeze_blocks(model, freeze, sorted(set(started)))
            lines.append(f'frozen: input end and blocks 0..{freeze - 1} of '
                         f'{", ".join(sorted(set(started)))} ({frozen} tensors)')
        return '\n'.join(lines)


def plan_init(cfg, model_cfg: ModelConfig) -> Optional[StartingPoint]:
    """The :class:`StartingPoint` of stage-1 config ``cfg`` (None when it starts from random
    weights); ``model_cfg``: the run's own model config, fitted to the dataset."""
    init, timm, freeze = cfg.init, dict(cfg.init_encoders or {}), int(cfg.freeze_blocks or 0)
    if not init and not timm:
        if freeze:
            raise ValueError('freeze_blocks needs init or init_encoders: freezing random '
                             'weights would only stop them learning')
        return None
    unknown = sorted(set(timm) - set(model_cfg.encoders))
    if unknown:
        raise ValueError(f'init_encoders names {unknown}, which the dataset does not have '
                         f'(it has {list(model_cfg.encoders)})')
    start = StartingPoint(model_config=model_cfg, timm_encoders=timm)
    if init:
        path = resolve_init(init)
        start.payload, start.source = read_checkpoint(path), str(path)
        try:
            source_cfg = ModelConfig.from_dict(start.payload['model_config'])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f'{path}: bad model config: {exc}') from None
        start.model_config, start.notes = init_model_config(
            model_cfg, source_cfg, list(model_cfg.encoders), model_cfg.num_classes)
        theirs = (start.payload.get('extra') or {}).get('preprocess')
        ours = dataclasses.asdict(cfg.preprocess)
        if theirs:
            differ = sorted(k for k in ours if k in theirs and theirs[k] != ours[k])
            if differ:
                start.notes.append('preprocess differs from the init checkpoint\'s in '
                                   + ', '.join(f'{k} ({ours[k]} here, {theirs[k]} there)' for k in differ)
                                   + ': its encoders learned other input scales')
    return start


# ----------------------------------------------------------------------------------------- timm

def timm_to_encoder(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm ViT keys -> encoder keys (classifier left out)."""
    out = {}
    for key, value in state.items():
        if key.startswith(TIMM_CLASSIFIER):
            continue
        for pattern, repl in TIMM_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def encoder_to_timm(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Encoder keys -> timm ViT keys (the inverse of :func:`timm_to_encoder` on encoder keys)."""
    back = ((r'^blocks\.(\d+)\.mlp\.0\.', r'blocks.\1.mlp.fc1.'),
            (r'^blocks\.(\d+)\.mlp\.2\.', r'blocks.\1.mlp.fc2.'))
    out = {}
    for key, value in state.items():
        for pattern, repl in back:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def read_state_dict(path) -> Dict[str, torch.Tensor]:
    """A plain state-dict file (``torch.save(model.state_dict())``, or timm's ``{'model': ...}``
    / ``{'state_dict': ...}`` wrappers), loaded with ``weights_only``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such state-dict file')
    obj = load_weights_only(path)
    for wrapper in ('model', 'state_dict'):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f'{path}: expected a mapping of tensor names to tensors')
    return obj


def load_timm_encoder(encoder: torch.nn.Module, state: Any) -> List[str]:
    """Load a timm-layout ViT state dict (or a file of one) into ``encoder`` strictly; returns
    the classifier keys that were left out. Shapes must match, except a 3-channel patch
    projection for a 1-channel encoder (summed over channels)."""
    if not isinstance(state, Mapping):
        state = read_state_dict(state)
    ignored = [k for k in state if k.startswith(TIMM_CLASSIFIER)]
    mapped = timm_to_encoder(state)
    key = 'patch_embed.proj.weight'
    own = encoder.state_dict()
    if key in mapped and key in own and mapped[key].shape[1] == 3 and own[key].shape[1] == 1:
        mapped[key] = mapped[key].sum(1, keepdim=True)
    mapped = {k: (v.to(own[k].dtype) if k in own else v) for k, v in mapped.items()}
    load_weights(encoder, mapped, 'timm ViT state dict')
    return ignored
