"""Stage 1: train the fusion model with multimodal LayerDrop so any subset of layers can run.

    admn train stage1 --config config/training/stage1_synthetic.yaml --out runs/stage1 [--resume]
    torchrun --nproc_per_node 2 -m admn_ros.cli train stage1 ...      # same code, DDP

Per batch: raw arrays -> corruption hook (any callable ``(batch, rng) -> batch``) -> the shared
preprocessing -> per-modality LayerDrop masks (really skipped) -> cross-entropy. Writes
``last.pt`` (weights + optimiser state, for ``--resume``), ``model.pt`` (weights + config + everything
evaluation and the ROS nodes need) and ``metrics.csv`` beside them.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Dict, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from admn_ros.datasets.preprocess import PreprocessConfig, Preprocessor
from admn_ros.datasets.registry import LoadedDataset
from admn_ros.datasets.sample import RawBatch, take
from admn_ros.fusion.checkpoint import (CheckpointError, load_checkpoint, load_optimizer, load_weights,
                                       read_checkpoint, resume_state, save_checkpoint)
from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.device import autocast, check_device
from admn_ros.fusion.collapse import CollapseTrainConfig, param_groups, pull_slopes, slope_gap, with_slopes
from admn_ros.fusion.layerdrop import LayerDropConfig, evenly_spaced_mask, sample_keep
from admn_ros.fusion.layershuffle import LayerShuffleConfig, position_loss, sample_orders, with_position_modules
from admn_ros.fusion.model import ADMNModel
from admn_ros.fusion.threads import thread_summary
from admn_ros.fusion.training import (Augment, AugmentConfig, CsvLog, DataConfig, Runtime, build_augment,
                                     check_same_config, init_runtime, plain, progress_bar, seed_everything,
                                     warmup_cosine, with_babble_bank)
from admn_ros.fusion.pretrained import plan_init
from admn_ros.fusion.recipe import BestEpoch, resolve_stage1, val_score
from admn_ros.fusion.validate import ConfigError, at_least, check_limits, fraction, one_of, positive
from admn_ros.fusion.validate import from_yaml as config_from_yaml


@dataclass
class Stage1Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    layerdrop: LayerDropConfig = field(default_factory=LayerDropConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # Left empty (null), these three follow the small-data recipe (fusion/recipe.py), which sizes
    # them to the training set and prints what it chose.
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None       # empty: the recipe's (1e-3 from scratch, 3e-4 with init)
    weight_decay: float = 0.05
    warmup_steps: Optional[int] = None
    grad_clip: float = 1.0
    eval_batch_size: int = 256
    # Inplace self-distillation (slimmable networks, OFA): each step also runs the full-depth model
    # on the batch; the LayerDrop sub-network learns from the labels (1 - distill) and from the full
    # model's detached output (distill). 0 = plain LayerDrop. Costs a second forward per step.
    distill: float = 0.0
    seed: int = 0
    device: str = 'auto'
    # Transfer (fusion/pretrained.py): start every encoder the dataset shares with this checkpoint
    # (a path, or a shipped default: default, synthetic, avdigits) from its weights, with a fresh
    # head; per modality, a ViT state dict in timm's layout; freeze the lowest blocks of those.
    init: Optional[str] = None
    init_encoders: Dict[str, str] = field(default_factory=dict)
    freeze_blocks: int = 0
    stem: Optional[str] = None                  # every encoder's stem; empty: the recipe's choice
    early_stop_patience: Optional[int] = None   # epochs without a better validation score; 0: off
    # Fine-tuning (LayerShuffle, LayerCollapse): continue training this checkpoint's whole model,
    # head included, on the same classes (``model`` and ``init`` unused). Modules that the options
    # below add start fresh.
    fine_tune_from: Optional[str] = None
    shuffle: LayerShuffleConfig = field(default_factory=LayerShuffleConfig)
    collapse: CollapseTrainConfig = field(default_factory=CollapseTrainConfig)

    LIMITS: ClassVar[dict] = {'epochs': at_least(1), 'batch_size': at_least(1), 'lr': positive(),
                              'weight_decay': at_least(0), 'warmup_steps': at_least(0),
                              'grad_clip': positive(), 'eval_batch_size': at_least(1),
                              'distill': fraction(), 'seed': at_least(0), 'freeze_blocks': at_least(0),
                              'stem': one_of('patch', 'conv'), 'early_stop_patience': at_least(0)}

    def check(self) -> None:
        check_device(self.device)
        if self.fine_tune_from and (self.init or self.init_encoders):
            raise ConfigError('fine_tune_from', self.fine_tune_from, 'empty when init or init_encoders is set')

    @classmethod
    def from_yaml(cls, path: Optional[str]) -> 'Stage1Config':
        return config_from_yaml(cls, path)


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
        row = evenly_spaced_mask(layers, depth)
        keep_fn = lambda raw, b: {m: row.expand(b, depth) for m in model.modalities}  # noqa: E731
    logits = predict(model, pre, arrays, batch_size=batch_size, keep_fn=keep_fn)
    return float((logits.argmax(-1) == torch.as_tensor(arrays['label'])).float().mean())


def _lr_at(step: int, total: int, cfg: Stage1Config) -> float:
    return warmup_cosine(step, total, cfg.lr, cfg.warmup_steps)


def train_stage1(cfg: Stage1Config, out_dir, *, resume: bool = False, augment: Optional[Augment] = None,
                 progress: bool = True, threads: int = 0) -> Path:
    """Train and return the path of ``model.pt``. ``augment`` overrides ``cfg.augment`` when given;
    ``threads`` > 0 overrides the thread rule (:mod:`admn_ros.fusion.threads`)."""
    out = Path(out_dir)
    check_limits(cfg)   # flags and code may have changed fields after the file was read
    rt = init_runtime(cfg.device, threads)
    if progress and rt.is_main:
        print(f'threads: {thread_summary(rt.threads)}', flush=True)
    try:
        return _train(cfg, out, rt, resume, augment if augment is not None else build_augment(cfg.augment),
                      progress)
    finally:
        rt.close()


def _train(cfg: Stage1Config, out: Path, rt: Runtime, resume: bool, augment: Optional[Augment],
           progress: bool) -> Path:
    seed_everything(cfg.seed + rt.rank)
    d = cfg.data
    train = d.load(d.train_split, d.train_size, cfg.preprocess.image_size)
    val = d.load(d.val_split, d.val_size, cfg.preprocess.image_size)
    augment = with_babble_bank(augment, train.arrays)
    cfg, recipe = resolve_stage1(cfg, len(train), rt.world_size)
    if rt.is_main:
        print(recipe.describe(len(train)), flush=True)
    init = load_checkpoint(cfg.fine_tune_from)[0] if cfg.fine_tune_from else None
    model_cfg = fit_model_config(init.cfg if init is not None else cfg.model, train)
    start = plan_init(cfg, model_cfg)
    if start is not None:
        model_cfg = start.model_config
    model_cfg = with_slopes(with_position_modules(model_cfg, cfg.shuffle), cfg.collapse)
    pre = Preprocessor(cfg.preprocess)
    model = ADMNModel(model_cfg).to(rt.device)
    if init is not None:
        _start_from(model, init, cfg.fine_tune_from)
    if start is not None:
        told = start.apply(model, cfg.freeze_blocks)
        if rt.is_main:
            print(told, flush=True)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    log = CsvLog(out / 'metrics.csv')
    start_epoch = 0
    best = BestEpoch(out / 'best.pt', patience=cfg.early_stop_patience or 0,
                     first_epoch=cfg.augment.start_epoch if augment is not None else 0)
    if resume and (out / 'last.pt').exists():
        state = resume_state(out / 'last.pt', ('optimizer', 'epoch'), map_location=rt.device)
        saved_classes = state['model_config'].get('num_classes')
        if saved_classes != model_cfg.num_classes:
            raise CheckpointError(f'{out / "last.pt"} has {saved_classes} classes, the dataset '
                                  f'{model_cfg.num_classes}; not resuming (to fine-tune on new '
                                  'classes, train into a new folder with --init CHECKPOINT)')
        if state['model_config'] != model_cfg.to_dict():
            raise CheckpointError(f'{out / "last.pt"}: model config differs from --config; not resuming')
        check_same_config(out / 'last.pt', state['extra'].get('train_config', {}), cfg)
        load_weights(model, state['state_dict'], f'{out / "last.pt"}: weights do not match the model')
        load_optimizer(opt, state['extra']['optimizer'], out / 'last.pt')
        start_epoch = int(state['extra']['epoch']) + 1
        best.restore(state['extra'].get('best'))
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
        bar = progress_bar(steps_per_epoch, f'epoch {epoch + 1}/{cfg.epochs}', progress and rt.is_main)
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
            orders = sample_orders(model.modalities, model.depth, cfg.shuffle, gen)
            for group in opt.param_groups:
                group['lr'] = _lr_at(global_step, total_steps, cfg)
            with autocast(rt.device):
                if cfg.distill > 0:
                    logits, loss = _distilled_step(net, model.head, inputs, keep, labels, cfg.distill, orders)
                else:
                    logits = net(inputs, keep, order=orders)
                    loss = model.head.loss(logits.float(), labels)
                if cfg.shuffle.position_loss > 0:
                    loss = loss + cfg.shuffle.position_loss * position_loss(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if cfg.collapse.blocks:
                pull_slopes(model, opt.param_groups[0]['lr'], cfg.collapse.pull)
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
            if cfg.collapse.blocks:
                row['slope_gap'] = round(slope_gap(model), 4)
            log.write(row)
            print(' '.join(f'{k}={v}' for k, v in row.items()), flush=True)
            best.update(epoch, val_score(row['val_acc'], row['val_acc_quarter']),
                        lambda path: save_checkpoint(path, model, epoch=epoch, **_meta(cfg, train)))
            save_checkpoint(out / 'last.pt', model, epoch=epoch, optimizer=opt.state_dict(),
                            best=best.state(), **_meta(cfg, train))
        rt.barrier()
        # Rank 0 alone scores validation: its verdict reaches every rank through the reduction.
        if rt.all_reduce_mean([float(rt.is_main and best.should_stop(epoch))])[0] > 0:
            if rt.is_main:
                print(f'early stop: no better validation score for {best.patience} epochs', flush=True)
            break
    if rt.is_main:
        if best.best_epoch >= 0:
            load_weights(model, read_checkpoint(best.path)['state_dict'], f'{best.path}')
            print(f'model.pt: the weights of epoch {best.best_epoch + 1} (best validation score '
                  f'{best.best_score:.4f})', flush=True)
        save_checkpoint(out / 'model.pt', model, **_meta(cfg, train))
    rt.barrier()
    return out / 'model.pt'


def _distilled_step(net, head, inputs, keep, labels, weight: float, orders=None):
    """(sub-network logits, loss) of one inplace-distillation step: the full model and the sampled
    sub-network run as one doubled batch (per-sample masks, one block order), so DDP sees a single
    forward."""
    n = len(labels)
    both = {m: torch.cat([x, x]) for m, x in inputs.items()}
    masks = {m: torch.cat([torch.ones_like(k), k]) for m, k in keep.items()}
    out = net(both, masks, order=orders).float()
    full, sub = out[:n], out[n:]
    loss = (head.loss(full, labels) + (1 - weight) * head.loss(sub, labels)
            + weight * head.loss(sub, head.soft_target(full.detach())))
    return sub, loss


def _start_from(model: ADMNModel, init: ADMNModel, path) -> None:
    """Load ``init``'s weights into ``model``, which may only add modules (LayerShuffle position
    modules, LayerCollapse slopes); anything else that differs is refused."""
    result = model.load_state_dict(init.state_dict(), strict=False)
    added = ('depth_embed', 'position_proj.', 'position_heads.', 'mlp.1.weight')
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if not any(a in k for a in added)]
    if unexpected or missing:
        raise CheckpointError(f'{path}: fine_tune_from weights do not fit the model '
                              f'(missing {missing[:3]}, unexpected {unexpected[:3]})')


def _meta(cfg: Stage1Config, data: LoadedDataset) -> dict:
    return {'stage': 'stage1', 'dataset': data.name, 'class_names': list(data.class_names),
            'modalities': list(data.modalities), 'preprocess': asdict(cfg.preprocess),
            'train_config': plain(asdict(cfg))}
