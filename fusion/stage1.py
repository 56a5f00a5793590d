"""Stage 1: train the fusion model with multimodal LayerDrop so any subset of layers can run.

    admn train stage1 --config config/training/stage1_synthetic.yaml --out runs/stage1 [--resume]
    torchrun --nproc_per_node 2 -m admn_ros.cli train stage1 ...      # same code, DDP

Per batch: raw arrays -> corruption hook (any callable ``(batch, rng) -> batch``) -> the shared
preprocessing -> per-modality LayerDrop masks (really skipped) -> cross-entropy. Writes
``last.pt`` (weights + optimiser state, for ``--resume``), ``model.pt`` (weights + config + everything
evaluation and the ROS nodes need) and ``metrics.csv`` beside them.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from admn_ros.datasets.preprocess import PreprocessConfig, Preprocessor
from admn_ros.datasets.registry import LoadedDataset, load_dataset
from admn_ros.datasets.sample import RawBatch, take
from admn_ros.fusion.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from admn_ros.fusion.config import ModelConfig, from_dict
from admn_ros.fusion.device import autocast
from admn_ros.fusion.layerdrop import LayerDropConfig, evenly_spaced, sample_keep
from admn_ros.fusion.model import ADMNModel
from admn_ros.fusion.runtime import CsvLog, Runtime, init_runtime, load_yaml, seed_everything

Augment = Callable[[RawBatch, np.random.Generator], RawBatch]


@dataclass
class DataConfig:
    dataset: str = 'synthetic'
    train_split: str = 'train'
    val_split: str = 'val'
    train_size: Optional[int] = None
    val_size: Optional[int] = None
    data_root: Optional[str] = None
    seed: int = 0


@dataclass
class AugmentConfig:
    """Corruption augmentation through :class:`admn_ros.datasets.corruptions.CorruptionSampler`."""

    policy: str = 'independent'   # 'independent', 'one_at_a_time', or 'none'
    p_clean: float = 0.4
    start_epoch: int = 1          # train clean first, as ADMN does
    # Samples a dataset tags as degraded (recorded conditions) keep their data and tags instead of
    # getting a synthetic corruption on top; no effect on untagged data.
    keep_recorded: bool = True
    # Severities drawn from these levels (e.g. the evaluation mix 0.25/0.5/0.75/1.0) instead of
    # uniformly in [0.1, 1]: a controller then sees destroyed sensors often enough to learn them.
    severity_levels: Optional[Tuple[float, ...]] = None


@dataclass
class Stage1Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    layerdrop: LayerDropConfig = field(default_factory=LayerDropConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    eval_batch_size: int = 256
    # Inplace self-distillation (slimmable networks, OFA): each step also runs the full-depth model
    # on the batch; the LayerDrop sub-network learns from the labels (1 - distill) and from the full
    # model's detached output (distill). 0 = plain LayerDrop. Costs a second forward per step.
    distill: float = 0.0
    seed: int = 0
    device: str = 'auto'

    @classmethod
    def from_yaml(cls, path: Optional[str]) -> 'Stage1Config':
        return from_dict(cls, load_yaml(path))


def build_augment(cfg: AugmentConfig) -> Optional[Augment]:
    if cfg.policy == 'none':
        return None
    from admn_ros.datasets.corruptions import CorruptionSampler
    levels = tuple(cfg.severity_levels) if cfg.severity_levels else None
    return CorruptionSampler(policy=cfg.policy, p_clean=cfg.p_clean, keep_recorded=cfg.keep_recorded,
                             severity_levels=levels)


def fit_model_config(cfg: ModelConfig, data: LoadedDataset) -> ModelConfig:
    """Restrict the encoders to the dataset's modalities and size the head to its classes."""
    missing = [m for m in data.modalities if m not in cfg.encoders]
    if missing:
        raise ValueError(f'dataset {data.name} has modalities {missing} the model config lacks')
    encoders = {m: e for m, e in cfg.encoders.items() if m in data.modalities}
    return ModelConfig(**{**cfg.__dict__, 'encoders': encoders, 'num_classes': len(data.class_names)})


@torch.inference_mode()
def predict(model: ADMNModel, pre: Preprocessor, arrays: RawBatch, *, batch_size: int = 256,
            keep_fn: Optional[Callable[[RawBatch, int], Dict[str, torch.Tensor]]] = None,
            device=None) -> torch.Tensor:
    """Model outputs over ``arrays`` in batches; ``keep_fn(batch, n)`` gives each batch's masks."""
    model.eval()
    device = device or next(model.parameters()).device
    n = len(arrays['label'])
    outs = []
    for start in range(0, n, batch_size):
        raw = take(arrays, slice(start, start + batch_size))
        inputs = {m: x.to(device) for m, x in pre(raw).items() if m in model.modalities}
        keep = keep_fn(raw, len(raw['label'])) if keep_fn else None
        if keep is not None:
            keep = {m: k.to(device) for m, k in keep.items()}
        with autocast(device):
            outs.append(model(inputs, keep).float().cpu())
    return torch.cat(outs)


def accuracy(model, pre, arrays, *, layers: Optional[int] = None, batch_size: int = 256) -> float:
    """Accuracy with every modality at ``layers`` evenly spaced blocks (all blocks when None)."""
    depth = getattr(model, 'module', model).depth
    keep_fn = None
    if layers is not None:
        row = evenly_spaced(depth, layers)
        keep_fn = lambda raw, b: {m: row.expand(b, depth) for m in model.modalities}  # noqa: E731
    logits = predict(model, pre, arrays, batch_size=batch_size, keep_fn=keep_fn)
    return float((logits.argmax(-1) == torch.as_tensor(arrays['label'])).float().mean())


def _lr_at(step: int, total: int, cfg: Stage1Config) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_stage1(cfg: Stage1Config, out_dir, *, resume: bool = False, augment: Optional[Augment] = None,
                 progress: bool = True) -> Path:
    """Train and return the path of ``model.pt``. ``augment`` overrides ``cfg.augment`` when given."""
    out = Path(out_dir)
    rt = init_runtime(cfg.device)
    try:
        return _train(cfg, out, rt, resume, augment if augment is not None else build_augment(cfg.augment),
                      progress)
    finally:
        rt.close()


def _train(cfg: Stage1Config, out: Path, rt: Runtime, resume: bool, augment: Optional[Augment],
           progress: bool) -> Path:
    seed_everything(cfg.seed + rt.rank)
    d = cfg.data
    train = load_dataset(d.dataset, d.train_split, seed=d.seed, size=d.train_size, data_root=d.data_root)
    val = load_dataset(d.dataset, d.val_split, seed=d.seed, size=d.val_size, data_root=d.data_root)
    model_cfg = fit_model_config(cfg.model, train)
    pre = Preprocessor(cfg.preprocess)
    model = ADMNModel(model_cfg).to(rt.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    log = CsvLog(out / 'metrics.csv')
    start_epoch = 0
    if resume and (out / 'last.pt').exists():
        state = read_checkpoint(out / 'last.pt', map_location=rt.device)
        if state['model_config'] != model_cfg.to_dict():
            raise CheckpointError(f'{out / "last.pt"}: model config differs from --config; not resuming')
        check_same_config(out / 'last.pt', state['extra'].get('train_config', {}), cfg)
        model.load_state_dict(state['state_dict'])
        opt.load_state_dict(state['extra']['optimizer'])
        start_epoch = int(state['extra']['epoch']) + 1
        if rt.is_main:
            print(f'resuming from {out / "last.pt"} at epoch {start_epoch}')
    net = DistributedDataParallel(model, find_unused_parameters=True) if rt.distributed else model

    n = len(train.arrays['label'])
    steps_per_epoch = max(1, (n // rt.world_size) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    # Same mask stream on every rank (seeded by step): DDP ranks skip the same blocks.
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        net.train()
        order = np.random.default_rng(cfg.seed + epoch).permutation(n)[rt.rank::rt.world_size]
        rng = np.random.default_rng([cfg.seed, epoch, rt.rank])
        losses, correct, seen = 0.0, 0, 0
        bar = _progress(steps_per_epoch, f'epoch {epoch + 1}/{cfg.epochs}', progress and rt.is_main)
        for step in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + step
            raw = take(train.arrays, order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            if augment is not None and epoch >= cfg.augment.start_epoch:
                raw = augment(raw, rng)
            inputs = {m: x.to(rt.device) for m, x in pre(raw).items() if m in model.modalities}
            labels = torch.as_tensor(raw['label'], device=rt.device)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + global_step)
            keep = sample_keep(model.modalities, model.depth, len(labels), epoch + step / steps_per_epoch,
                               cfg.layerdrop, gen, rt.device)
            for group in opt.param_groups:
                group['lr'] = _lr_at(global_step, total_steps, cfg)
            with autocast(rt.device):
                if cfg.distill > 0:
                    logits, loss = _distilled_step(net, model.head, inputs, keep, labels, cfg.distill)
                else:
                    logits = net(inputs, keep)
                    loss = model.head.loss(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(-1) == labels).sum())
            seen += len(labels)
            if bar is not None:
                bar.set_postfix(loss=f'{losses / seen:.3f}', acc=f'{correct / seen:.3f}')
                bar.update()
        if bar is not None:
            bar.close()
        train_loss, train_acc = rt.all_reduce_mean([losses / max(seen, 1), correct / max(seen, 1)])
        if rt.is_main:
            row = {'epoch': epoch + 1, 'train_loss': round(float(train_loss), 5),
                   'train_acc': round(float(train_acc), 5),
                   'val_acc': round(accuracy(model, pre, val.arrays, batch_size=cfg.eval_batch_size), 5),
                   'val_acc_quarter': round(accuracy(model, pre, val.arrays, layers=max(1, model.depth // 4),
                                                     batch_size=cfg.eval_batch_size), 5),
                   'drop_rate': round(cfg.layerdrop.rate(epoch), 4), 'lr': f'{opt.param_groups[0]["lr"]:.2e}',
                   'seconds': round(time.time() - t0, 1)}
            log.write(row)
            print(' '.join(f'{k}={v}' for k, v in row.items()), flush=True)
            save_checkpoint(out / 'last.pt', model, epoch=epoch, optimizer=opt.state_dict(),
                            **_meta(cfg, train))
        rt.barrier()
    if rt.is_main:
        save_checkpoint(out / 'model.pt', model, **_meta(cfg, train))
    rt.barrier()
    return out / 'model.pt'


def _distilled_step(net, head, inputs, keep, labels, weight: float):
    """(sub-network logits, loss) of one inplace-distillation step: the full model and the sampled
    sub-network run as one doubled batch (per-sample masks), so DDP sees a single forward."""
    n = len(labels)
    both = {m: torch.cat([x, x]) for m, x in inputs.items()}
    masks = {m: torch.cat([torch.ones_like(k), k]) for m, k in keep.items()}
    out = net(both, masks).float()
    full, sub = out[:n], out[n:]
    loss = (head.loss(full, labels) + (1 - weight) * head.loss(sub, labels)
            + weight * head.loss(sub, head.soft_target(full.detach())))
    return sub, loss


def _meta(cfg: Stage1Config, data: LoadedDataset) -> dict:
    return {'stage': 'stage1', 'dataset': data.name, 'class_names': list(data.class_names),
            'modalities': list(data.modalities), 'preprocess': asdict(cfg.preprocess),
            'train_config': _plain(asdict(cfg))}


def check_same_config(last: Path, saved: dict, cfg) -> None:
    """Refuse (CheckpointError) to resume ``last`` with a training config other than the one it
    was made with: more ``epochs`` or another ``device`` may continue a run, anything else would
    silently mix two. ``saved`` is read back through ``cfg``'s dataclass, so options the run
    predates count as their defaults."""
    try:
        was = _plain(asdict(from_dict(type(cfg), saved)))
    except (TypeError, ValueError) as exc:
        was = {'(saved config)': f'unreadable: {exc}'}
    now = _plain(asdict(cfg))
    changed = sorted(k for k in set(was) | set(now)
                     if k not in ('epochs', 'device') and was.get(k) != now.get(k))
    if changed:
        raise CheckpointError(f'{last}: that run used another config ({", ".join(changed)} differ); '
                              f'not resuming. Delete {last.parent} or train into another folder')


def _plain(obj):
    """Tuples -> lists so the checkpoint stays loadable with weights_only."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
