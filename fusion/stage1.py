"""Stage 1: train the fusion model with multimodal LayerDrop so any subset of layers can run.

    admn train stage1 --config config/training/stage1_synthetic.yaml --out runs/stage1 [--resume]
    torchrun --nproc_per_node 2 -m admn_ros.cli train stage1 ...      # same code, DDP

Per batch: raw arrays -> corruption hook (any callable ``(batch, rng) -> batch``) -> the shared
preprocessing -> per-modality LayerDrop masks (really skipped) -> cross-entropy. Writes
``last.pt`` (weights + optimiser state, for ``--resume``), ``model.pt`` (weights + config + everything
evaluation and the ROS nodes need) and ``metrics.csv`` beside them.

Every run is held against two references on its own splits (:class:`RunChecks`): chance on the
validation split (early stopping waits until validation leaves it) and a logistic regression on
pooled inputs (:mod:`admn_ros.fusion.linear_baseline`, kept in ``model.pt`` for ``admn eval``'s
``linear`` row). Both validation scores go to ``baseline.json``; a run at chance or below the
baseline ends with one line saying so. Below :data:`admn_ros.fusion.recipe.SEARCH_BELOW` training
samples, short runs choose ``freeze_blocks`` and ``lr`` first (:func:`_search`, ``search.json``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
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
from admn_ros.fusion.linear_baseline import POOL, LinearBaseline, fit_linear_baseline
from admn_ros.fusion.recipe import (SEARCH_BELOW, BestEpoch, chance_bar, resolve_stage1, search_plan,
                                    val_score, verdict)
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
    freeze_blocks: Optional[int] = None         # empty: 0, or the small-data search's choice
    # Below recipe.SEARCH_BELOW training samples, choose freeze_blocks and lr (those left empty)
    # on validation by short runs (fusion/recipe.py); false: the recipe's defaults.
    search: bool = True
    search_epochs: Optional[int] = None   # each candidate's epochs; empty: half the run's
    # Fit a logistic regression on pooled inputs on the same splits and hold the model against it
    # (fusion/linear_baseline.py); admn eval scores it as the policy row 'linear'.
    linear_baseline: bool = True
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
                              'stem': one_of('patch', 'conv'), 'early_stop_patience': at_least(0),
                              'search_epochs': at_least(1)}

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
    asked = cfg   # before the recipe: which fields the config left empty
    cfg, recipe = resolve_stage1(cfg, len(train), rt.world_size)
    if rt.is_main:
        print(recipe.describe(len(train)), flush=True)
    pre = Preprocessor(cfg.preprocess)
    checks = RunChecks.start(cfg, train, val, pre, out) if rt.is_main else None
    cfg, search = _search(asked, cfg, out, rt, augment, train, val, resume)
    model, best = _fit(cfg, out, rt, resume, augment, progress, train, val, checks)
    if rt.is_main:
        extra = {**_meta(cfg, train), **checks.meta(best)}
        if search:
            extra['small_data_search'] = search
        save_checkpoint(out / 'model.pt', model, **extra)
        checks.finish(best, out)
    rt.barrier()
    return out / 'model.pt'


def _fit(cfg: Stage1Config, out: Path, rt: Runtime, resume: bool, augment: Optional[Augment],
         progress: bool, train: LoadedDataset, val: LoadedDataset, checks: Optional['RunChecks'],
         quiet: bool = False):
    """One training run of ``cfg`` into ``out`` (``last.pt``, ``best.pt``, ``metrics.csv``):
    returns the model holding the best validation epoch's weights and its :class:`BestEpoch`."""
    init = load_checkpoint(cfg.fine_tune_from)[0] if cfg.fine_tune_from else None
    model_cfg = fit_model_config(init.cfg if init is not None else cfg.model, train)
    start = plan_init(cfg, model_cfg)
    if start is not None:
        model_cfg = start.model_config
    model_cfg = with_slopes(with_position_modules(model_cfg, cfg.shuffle), cfg.collapse)
    pre = Preprocessor(cfg.preprocess)
    torch.manual_seed(cfg.seed + rt.rank)   # every run of a search starts its fresh head alike
    model = ADMNModel(model_cfg).to(rt.device)
    if init is not None:
        _start_from(model, init, cfg.fine_tune_from)
    if start is not None:
        told = start.apply(model, cfg.freeze_blocks or 0)
        if rt.is_main and not quiet:
            print(told, flush=True)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    log = CsvLog(out / 'metrics.csv')
    start_epoch = 0
    best = BestEpoch(out / 'best.pt', patience=cfg.early_stop_patience or 0,
                     first_epoch=cfg.augment.start_epoch if augment is not None else 0,
                     chance_bar=checks.bar if checks is not None else -math.inf)
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
    held = False
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
            if not quiet:
                print(' '.join(f'{k}={v}' for k, v in row.items()), flush=True)
            best.update(epoch, val_score(row['val_acc'], row['val_acc_quarter']),
                        lambda path: save_checkpoint(path, model, epoch=epoch, **_meta(cfg, train)),
                        val_acc=row['val_acc'])
            save_checkpoint(out / 'last.pt', model, epoch=epoch, optimizer=opt.state_dict(),
                            best=best.state(), **_meta(cfg, train))
        rt.barrier()
        # Rank 0 alone scores validation: its verdict reaches every rank through the reduction.
        if rt.all_reduce_mean([float(rt.is_main and best.should_stop(epoch))])[0] > 0:
            if rt.is_main and not quiet:
                print(f'early stop: no better validation score for {best.patience} epochs', flush=True)
            break
        if rt.is_main and not quiet and not held and best.patience_out(epoch):
            held = True   # said once: the run goes on to its last epoch unless it leaves chance
            print(f'not stopping early: validation accuracy {best.peak_val_acc:.3f} has not left '
                  f'chance (bar {best.chance_bar:.3f}) - on little data learning can start late', flush=True)
    if rt.is_main and best.best_epoch >= 0:
        load_weights(model, read_checkpoint(best.path)['state_dict'], f'{best.path}')
        if not quiet:
            print(f'model.pt: the weights of epoch {best.best_epoch + 1} (best validation score '
                  f'{best.best_score:.4f})', flush=True)
    return model, best


def _search(asked: Stage1Config, cfg: Stage1Config, out: Path, rt: Runtime, augment, train, val,
            resume: bool):
    """The small-data search (:func:`admn_ros.fusion.recipe.search_plan`): ``(cfg with the chosen
    freeze_blocks and lr, what was tried)``; ``(cfg, None)`` when there is nothing to search.
    The choice is kept in ``search.json``, which ``--resume`` reuses."""
    plain_cfg = dataclasses.replace(cfg, freeze_blocks=cfg.freeze_blocks or 0)
    if not cfg.search or cfg.fine_tune_from or rt.distributed:
        return plain_cfg, None
    start = plan_init(cfg, fit_model_config(cfg.model, train))   # the init's depth, if any
    depth = (start.model_config if start is not None else cfg.model).depth
    cands, epochs = search_plan(len(train), from_scratch=not (cfg.init or cfg.init_encoders),
                                freeze_blocks=asked.freeze_blocks, lr=asked.lr, epochs=cfg.epochs,
                                depth=depth)
    if not cands:
        return plain_cfg, None
    if cfg.search_epochs:
        epochs = min(cfg.epochs, cfg.search_epochs)
    record = out / 'search.json'
    if resume and record.exists():
        found = json.loads(record.read_text())
    elif resume and (out / 'last.pt').exists():
        return plain_cfg, None   # a run that did not search goes on as it started
    else:
        print(f'small-data search ({len(train)} < {SEARCH_BELOW} training samples): '
              f'{len(cands)} candidates x {epochs} epochs on the validation split', flush=True)
        tried = []
        for c in cands:
            short = dataclasses.replace(cfg, freeze_blocks=c.freeze_blocks, lr=c.lr, epochs=epochs,
                                        early_stop_patience=0)
            where = out / 'search' / c.name
            shutil.rmtree(where, ignore_errors=True)
            _, best = _fit(short, where, rt, False, augment, False, train, val, None, quiet=True)
            for f in ('best.pt', 'last.pt'):   # the scores are what the search keeps
                (where / f).unlink(missing_ok=True)
            tried.append({'freeze_blocks': c.freeze_blocks, 'lr': c.lr,
                          'val_score': round(best.best_score, 5), 'val_acc': round(best.best_val_acc, 5)})
            print(f'  freeze_blocks={c.freeze_blocks} lr={c.lr:g}: best validation score '
                  f'{best.best_score:.4f}', flush=True)
        chosen = max(tried, key=lambda t: t['val_score'])   # first of equals: the default
        default = tried[0]
        why = (f'best validation score {chosen["val_score"]:.4f} of {len(tried)} short runs of '
               f'{epochs} epochs (the recipe\'s default freeze_blocks={default["freeze_blocks"]} '
               f'lr={default["lr"]:g}: {default["val_score"]:.4f})')
        found = {'train_samples': len(train), 'epochs_each': epochs, 'candidates': tried,
                 'chosen': {'freeze_blocks': chosen['freeze_blocks'], 'lr': chosen['lr']}, 'why': why}
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(found, indent=2))
    chosen = found['chosen']
    print(f'small-data search chose freeze_blocks={chosen["freeze_blocks"]} lr={chosen["lr"]:g}: '
          f'{found["why"]}', flush=True)
    return dataclasses.replace(cfg, freeze_blocks=int(chosen['freeze_blocks']), lr=float(chosen['lr'])), found


@dataclass
class RunChecks:
    """What a stage-1 run is held against: chance on its validation split and the linear baseline
    (:mod:`admn_ros.fusion.linear_baseline`) fitted on its own training split. Written to
    ``baseline.json`` in the run folder and into ``model.pt``'s metadata."""

    chance: float
    bar: float
    linear: Optional[LinearBaseline] = None
    linear_note: str = ''

    @classmethod
    def start(cls, cfg: Stage1Config, train: LoadedDataset, val: LoadedDataset, pre, out: Path) -> 'RunChecks':
        chance, bar = chance_bar(val.arrays['label'])
        checks = cls(chance, bar)
        if not cfg.linear_baseline:
            checks.linear_note = 'off (linear_baseline: false)'
        elif len(np.unique(train.arrays['label'])) < 2:
            checks.linear_note = 'not fitted: the training split holds one class'
        else:
            checks.linear = fit_linear_baseline(train.arrays, val.arrays, pre, seed=cfg.seed)
        if checks.linear is not None:
            lb = checks.linear
            print(f'linear baseline (logistic regression on inputs pooled to {POOL}x{POOL}, C={lb.C:g}, '
                  f'{lb.train_samples} training samples): validation accuracy {lb.val_acc:.3f}; '
                  f'chance {chance:.3f}', flush=True)
        else:
            print(f'linear baseline {checks.linear_note}; chance {chance:.3f}', flush=True)
        return checks

    def scores(self, best: BestEpoch) -> Dict:
        val_acc = best.best_val_acc if best.best_epoch >= 0 else best.peak_val_acc
        val_acc = None if math.isinf(val_acc) else round(float(val_acc), 5)
        linear = round(self.linear.val_acc, 5) if self.linear is not None else None
        line = verdict(val_acc if val_acc is not None else 0.0, self.chance, self.bar, linear)
        return {'model_val_acc': val_acc, 'best_epoch': best.best_epoch + 1, 'linear_val_acc': linear,
                'linear_C': self.linear.C if self.linear is not None else None,
                'chance': round(self.chance, 5), 'chance_bar': round(self.bar, 5),
                'left_chance': val_acc is not None and val_acc > self.bar,
                'below_linear': linear is not None and val_acc is not None and val_acc < linear,
                'verdict': line}

    def meta(self, best: BestEpoch) -> Dict:
        extra = {'validation': self.scores(best)}
        if self.linear is not None:
            extra['linear_baseline'] = self.linear.state()
        return extra

    def finish(self, best: BestEpoch, out: Path) -> None:
        """Write ``baseline.json``; print both validation scores and, when the model should not be
        used as it is, one line saying so - the run's last."""
        scores = self.scores(best)
        (out / 'baseline.json').write_text(json.dumps(scores, indent=2))
        linear = 'not fitted' if scores['linear_val_acc'] is None else f'{scores["linear_val_acc"]:.3f}'
        model = 'none' if scores['model_val_acc'] is None else f'{scores["model_val_acc"]:.3f}'
        print(f'validation accuracy: model {model} (epoch {scores["best_epoch"]}), linear baseline '
              f'{linear}, chance {self.chance:.3f}', flush=True)
        if scores['verdict']:
            print(scores['verdict'], flush=True)


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
