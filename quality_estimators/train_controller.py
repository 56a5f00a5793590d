"""Stage 2: train the allocation controller on a frozen stage-1 model.

    admn train controller --stage1 runs/stage1/model.pt --config config/training/controller_synthetic.yaml --out DIR

Per batch: corrupt (the standard mix) -> shared preprocessing (model inputs + controller views) ->
sample a budget per sample (fraction, unit) -> controller -> straight-through strict mask ->
frozen model in its differentiable blend mode -> task loss (+ corruption loss). The first
``warmup_epochs`` use the corruption loss only (ADMN).

``allocation_loss: candidates`` replaces the straight-through task loss: one budget per batch, a
few allocations that fill it (random layer counts per modality, evenly spaced or random layers)
are each run through the frozen model, and the controller's per-layer logits learn the
loss-weighted mix of them (binary cross-entropy against ``sum_c softmax(-loss_c / T) mask_c`` per
sample; a small T makes it the best candidate). It measures what a whole allocation costs instead
of a first-order estimate, and needs data the stage-1 model has not memorised: on its own training
split every allocation scores about the same (``data.train_split`` / ``data.seed`` pick other
samples).

``allocation_loss: splits`` learns *how many* layers each modality gets, which is what must move
when a sensor degrades: per batch the frozen model is run under whole count splits that fill the
budget (the even split, every modality starved to its first layer or favoured, evenly spaced
layers), and a listwise cross-entropy teaches the controller to rank them as their losses do: the
score of a split is the sum of the logits of the layers it keeps (what the exact selector
maximises at inference), the target is ``softmax(-loss / T)`` over the splits, per sample. Since
the targets depend on each sample's own corruption, the count split follows quality.

``variant: label_free`` instead pre-trains an autoencoder on the corrupted views, freezes its
encoder and trains the allocation head on the task loss alone (ADMN_AE). The output
``controller.pt`` embeds the stage-1 model, so one file serves evaluation and the ROS fusion node.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from admn_ros.datasets.sample import take
from admn_ros.fusion.checkpoint import (CheckpointError, checkpoint_preprocessor, load_checkpoint, load_optimizer,
                                       load_weights, resume_state, save_checkpoint, state_digest)
from admn_ros.fusion.device import check_device
from admn_ros.fusion.flops import CostModel
from admn_ros.fusion.layerdrop import evenly_spaced_indices
from admn_ros.fusion.recipe import batch_size_for
from admn_ros.fusion.threads import thread_summary
from admn_ros.fusion.training import (AugmentConfig, CsvLog, DataConfig, build_augment, check_same_config,
                                     init_runtime, plain, progress_bar, seed_everything, with_babble_bank)
from admn_ros.fusion.validate import (ConfigError, Each, OneOf, Range, at_least, check_limits, one_of,
                                      positive)
from admn_ros.fusion.validate import from_yaml as config_from_yaml
from admn_ros.quality_estimators.budget import ROUND_OFF_RTOL, UNITS
from admn_ros.quality_estimators.controller import AllocationController, ControllerConfig, straight_through_mask
from admn_ros.quality_estimators.policies import split_counts
from admn_ros.fusion.recipe import refuse_chance_level


@dataclass
class ControllerTrainConfig:
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(start_epoch=0))
    variant: str = 'supervised'        # 'supervised' (task + corruption loss) or 'label_free' (AE)
    epochs: int = 8
    warmup_epochs: int = 1             # corruption loss only
    ae_epochs: int = 4                 # label_free: autoencoder pre-training
    batch_size: Optional[int] = None   # empty: the small-data rule (fusion/recipe.py), <= 64
    lr: float = 1e-3
    corruption_weight: float = 1.0
    budget_range: Tuple[float, float] = (0.1, 1.0)
    budget_units: Tuple[str, ...] = ('layers', 'flops')
    allocation_loss: str = 'straight_through'  # or 'candidates' / 'splits' (module docstring)
    candidates: int = 8                # allocations tried per batch ('candidates', 'splits')
    candidate_temperature: float = 0.05  # T of the loss weighting, in nats ('candidates', 'splits')
    seed: int = 0
    device: str = 'auto'
    # With a controller checkpoint as the stage-1 model: start from its controller's weights.
    init_controller: bool = False

    LIMITS: ClassVar[dict] = {'variant': one_of('supervised', 'label_free'), 'epochs': at_least(1),
                              'warmup_epochs': at_least(0), 'ae_epochs': at_least(0),
                              'batch_size': at_least(1), 'lr': positive(),
                              'corruption_weight': at_least(0),
                              'budget_range': Each(Range(0.0, 1.0, lo_open=True)),
                              'budget_units': Each(OneOf(UNITS), min_len=1),
                              'allocation_loss': one_of('straight_through', 'candidates', 'splits'),
                              'candidates': at_least(1), 'candidate_temperature': positive(),
                              'seed': at_least(0)}

    def check(self) -> None:
        lo, hi = self.budget_range
        if lo > hi:
            raise ConfigError('budget_range', list(self.budget_range), '[low, high] with low <= high')
        check_device(self.device)

    @classmethod
    def from_yaml(cls, path: Optional[str]) -> 'ControllerTrainConfig':
        return config_from_yaml(cls, path)


class ViewDecoder(nn.Module):
    """Autoencoder decoder for the label-free variant: CLS latent -> one modality's view."""

    def __init__(self, dim: int, chans: int, size: int):
        super().__init__()
        self.size, self.chans = size, chans
        self.fc = nn.Linear(dim, 16 * (size // 8) ** 2)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(8, chans, 4, stride=2, padding=1))

    def forward(self, z):
        return self.up(self.fc(z).view(len(z), 16, self.size // 8, self.size // 8))


def budget_costs(cost: CostModel, modalities, unit: str) -> np.ndarray:
    return np.ones(len(modalities)) if unit == 'layers' else cost.layer_costs(modalities)


def corruption_loss(severity, types, raw, modalities):
    loss = 0.0
    for i, m in enumerate(modalities):
        if f'severity_{m}' in raw:
            target = torch.as_tensor(raw[f'severity_{m}'], dtype=torch.float32, device=severity.device)
            loss = loss + F.mse_loss(severity[:, i], target)
        if m in types and f'ctype_{m}' in raw:
            loss = loss + 0.2 * F.cross_entropy(types[m], torch.as_tensor(raw[f'ctype_{m}'], device=severity.device))
    return loss


def candidate_counts(budget_abs: float, costs: np.ndarray, depth: int, rng) -> np.ndarray:
    """Random layers per modality ``[M]`` that fill ``budget_abs`` strictly (layer 0 of each
    included): in a random order each modality takes a uniform number of what it can still afford,
    the last all it can, then any leftover buys single layers. Extreme splits are as likely as
    even ones (proportional shares would round most draws to the even split)."""
    costs = np.asarray(costs, dtype=np.float64)
    limit = budget_abs * (1.0 + ROUND_OFF_RTOL)
    counts = np.ones(len(costs), dtype=np.int64)
    spent = float(costs.sum())
    order = rng.permutation(len(costs))
    for j, i in enumerate(order):
        afford = max(0, int(min(depth - 1, np.floor((limit - spent) / costs[i]))))
        k = afford if j == len(order) - 1 else int(rng.integers(0, afford + 1))
        counts[i] += k
        spent += k * costs[i]
    for i in order:
        while counts[i] < depth and spent + costs[i] <= limit:
            counts[i] += 1
            spent += costs[i]
    return counts


def candidate_masks(budget_abs: float, costs: np.ndarray, depth: int, count: int, rng) -> np.ndarray:
    """``count`` allocations ``[C, M, D]`` that fill ``budget_abs`` strictly, counts from
    :func:`candidate_counts`; the layers evenly spaced for even ``c``, random for odd ``c``; layer 0
    of every modality always."""
    masks = np.zeros((count, len(costs), depth), dtype=bool)
    for c in range(count):
        for i, k in enumerate(candidate_counts(budget_abs, costs, depth, rng)):
            idx = (evenly_spaced_indices(int(k), depth) if c % 2 == 0
                   else np.r_[0, 1 + rng.choice(depth - 1, int(k) - 1, replace=False)])
            masks[c, i, idx] = True
    return masks


@torch.no_grad()
def losses_under(model, inputs, labels, masks: np.ndarray) -> torch.Tensor:
    """Per-sample task loss ``[C, B]`` of the frozen model under each allocation ``masks[c]``
    (``[C, M, D]``, model order), every sample running the same layers."""
    n = len(labels)
    masks_t = torch.as_tensor(masks, device=labels.device)
    return torch.stack([
        F.cross_entropy(model(inputs, {m: mask[i].expand(n, -1) for i, m in enumerate(model.modalities)}
                              ).float(), labels, reduction='none')
        for mask in masks_t])


def candidate_loss(logits, model, inputs, labels, budget_abs: float, costs, cfg, rng):
    """The ``candidates`` allocation loss (module docstring) for logits ``[B, M, D]`` in model order."""
    masks = candidate_masks(budget_abs, costs, model.depth, cfg.candidates, rng)
    losses = losses_under(model, inputs, labels, masks)                          # [C, B]
    with torch.no_grad():
        weight = torch.softmax(-losses / cfg.candidate_temperature, dim=0)
        target = torch.einsum('cb,cmd->bmd', weight,
                              torch.as_tensor(masks, dtype=torch.float32, device=labels.device))
    free = torch.ones(masks.shape[1:], dtype=torch.bool, device=labels.device)
    free[:, 0] = False   # layer 0 is always run: nothing to learn there
    return F.binary_cross_entropy_with_logits(logits[:, free].float(), target[:, free])


def split_weights(n_modalities: int) -> np.ndarray:
    """Share weights of the candidate splits ``[S, M]``: every vector in {0, 1, 2}^M (two
    modalities: {0, 1, 2, 3}^M, for finer steps) but zero, one per direction, the even split first.
    Weight 0 starves a modality (its first layer only)."""
    levels = (1, 0, 2, 3) if n_modalities <= 2 else (1, 0, 2)
    seen, out = set(), []
    for w in itertools.product(levels, repeat=n_modalities):
        w = np.array(w, dtype=np.float64)
        if not w.any():
            continue
        key = tuple(np.round(w / w.max(), 6))
        if key not in seen:
            seen.add(key)
            out.append(w)
    return np.stack(out)


def split_candidates(budget_abs: float, costs: np.ndarray, depth: int, count: int, rng) -> np.ndarray:
    """Distinct count splits ``[S, M]`` (``S <= count``) that fill ``budget_abs`` strictly: the even
    split always, then a random draw of the others of :func:`split_weights`."""
    weights = split_weights(len(costs))
    present = np.ones((len(weights), len(costs)), dtype=bool)
    counts = split_counts(np.full(len(weights), budget_abs), np.asarray(costs, np.float64), weights,
                          present, depth)
    unique = list(dict.fromkeys(map(tuple, counts)))
    first, rest = unique[:1], unique[1:]
    pick = rng.permutation(len(rest))[:max(0, count - 1)]
    return np.array(first + [rest[i] for i in sorted(pick)], dtype=np.int64)


def split_loss(logits, model, inputs, labels, budget_abs: float, costs, cfg, rng):
    """The ``splits`` allocation loss (module docstring) for logits ``[B, M, D]`` in model order."""
    depth = model.depth
    splits = split_candidates(budget_abs, costs, depth, cfg.candidates, rng)
    masks = np.zeros((len(splits), len(model.modalities), depth), dtype=bool)
    for c, counts in enumerate(splits):
        for i, k in enumerate(counts):
            masks[c, i, evenly_spaced_indices(int(k), depth)] = True
    target = torch.softmax(-losses_under(model, inputs, labels, masks) / cfg.candidate_temperature, dim=0)
    free = torch.as_tensor(masks, device=labels.device)
    free[:, :, 0] = False   # layer 0 runs in every split: it cannot tell them apart
    scores = torch.einsum('bmd,smd->sb', logits.float(), free.float())
    return -(target * torch.log_softmax(scores, dim=0)).sum(0).mean()


def controller_step(ctrl, model, pre, cost, raw, rng, cfg: ControllerTrainConfig, *, task: bool,
                    corruption: bool, device):
    """One forward pass of stage-2 training; returns (loss, accuracy, mean layers per modality)."""
    mods = model.modalities
    inputs = {m: x.to(device) for m, x in pre(raw).items() if m in mods}
    views = {m: v.to(device) for m, v in pre.controller_views(raw, log_mel=inputs.get('audio')).items()
             if m in mods}
    labels = torch.as_tensor(raw['label'], device=device)
    n = len(labels)
    lo, hi = cfg.budget_range
    candidates = cfg.allocation_loss in ('candidates', 'splits')
    # One budget per batch with candidates (they are run batch-wide), one per sample otherwise.
    fraction = torch.as_tensor(np.full(n, rng.uniform(lo, hi)) if candidates else rng.uniform(lo, hi, n),
                               dtype=torch.float32, device=device)
    unit = str(rng.choice(cfg.budget_units))
    logits, severity, types = ctrl(views, fraction, unit)
    order = [ctrl.cfg.modalities.index(m) for m in mods]
    logits = logits[:, order]
    costs = budget_costs(cost, mods, unit)
    budget_abs = fraction.cpu().numpy() * model.depth * costs.sum()
    present = torch.ones(n, len(mods), dtype=torch.bool, device=device)
    loss = torch.zeros((), device=device)
    acc = float('nan')
    # With candidates the mask is the controller's own hard choice (for the accuracy it logs).
    mask = straight_through_mask(logits, costs, budget_abs, present, ctrl.cfg,
                                 training=task and not candidates)
    if task:
        if candidates:
            whole = candidate_loss if cfg.allocation_loss == 'candidates' else split_loss
            loss = loss + whole(logits, model, inputs, labels, float(budget_abs[0]), costs, cfg, rng)
        keep = {m: mask[:, i].bool() if candidates else mask[:, i] for i, m in enumerate(mods)}
        with torch.set_grad_enabled(not candidates):
            # The straight-through mask trains through the differentiable blend path.
            out = model(inputs, keep, mode='skip' if candidates else 'blend')
        if not candidates:
            loss = loss + F.cross_entropy(out.float(), labels)
        acc = float((out.argmax(-1) == labels).float().mean())
    if corruption:
        loss = loss + cfg.corruption_weight * corruption_loss(severity[:, order], types, raw, mods)
    return loss, acc, mask.detach().sum(-1).mean(0).cpu().numpy()


def train_controller(cfg: ControllerTrainConfig, stage1, out_dir, *, resume: bool = False,
                     progress: bool = True, threads: int = 0, force: bool = False) -> Path:
    check_limits(cfg)   # flags and code may have changed fields after the file was read
    rt = init_runtime(cfg.device, threads)   # threads > 0 overrides the rule (admn_ros.fusion.threads)
    if progress and rt.is_main:
        print(f'threads: {thread_summary(rt.threads)}', flush=True)
    out = Path(out_dir)
    seed_everything(cfg.seed)
    model, meta = load_checkpoint(stage1, map_location=rt.device)
    start_from = None
    if meta.get('stage') == 'controller':
        # A trained controller file embeds its stage-1 model (e.g. a shipped default): retrain on that,
        # from its controller's weights when asked (fine-tuning keeps what it learned).
        if cfg.init_controller:
            start_from = meta['controller_state']
        meta = {k: v for k, v in meta.items() if k not in CONTROLLER_KEYS}
    elif cfg.init_controller:
        raise CheckpointError(f'{stage1}: init_controller needs a controller checkpoint, got stage '
                              f'{meta.get("stage")!r}')
    elif meta.get('stage') not in ('stage1', None):
        raise CheckpointError(f'{stage1}: expected a stage-1 checkpoint, got stage {meta.get("stage")!r}')
    forced = refuse_chance_level(meta, stage1, force)   # a chance-level stage 1 needs --force
    if forced and rt.is_main:
        print(forced, flush=True)
    model.eval().requires_grad_(False)
    pre = checkpoint_preprocessor(meta)
    cost = CostModel.from_config(model.cfg)
    d = cfg.data
    train = d.load(d.train_split, d.train_size, pre.cfg.image_size)
    if cfg.batch_size is None:
        cfg = dataclasses.replace(cfg, batch_size=batch_size_for(len(train)))
        if rt.is_main:
            print(f'controller batch_size={cfg.batch_size} for {len(train)} training samples '
                  '(the small-data rule)', flush=True)
    mods = model.modalities
    ccfg = ControllerConfig(**{**cfg.controller.__dict__, 'modalities': tuple(mods), 'depth': model.depth})
    ctrl = AllocationController(ccfg).to(rt.device)
    if start_from is not None:
        load_weights(ctrl, start_from, f'{stage1}: its controller does not match the config to fine-tune it')
    augment = with_babble_bank(build_augment(cfg.augment), train.arrays)
    log = CsvLog(out / 'metrics.csv')
    n = len(train.arrays['label'])
    steps = max(1, n // cfg.batch_size)

    def batches(epoch):
        order = np.random.default_rng(cfg.seed + epoch).permutation(n)
        rng = np.random.default_rng([cfg.seed, epoch])
        corrupt = augment is not None and epoch >= cfg.augment.start_epoch
        for s in range(steps):
            raw = take(train.arrays, order[s * cfg.batch_size:(s + 1) * cfg.batch_size])
            yield (augment(raw, rng) if corrupt else raw), rng

    if cfg.variant == 'label_free':
        _pretrain_autoencoder(ctrl, pre, batches, cfg, rt.device, progress)
        frozen = [ctrl.view_encoders, ctrl.blocks, ctrl.norm]
        for module in frozen:
            module.requires_grad_(False)
        ctrl.modality_embed.requires_grad_(False)
        ctrl.cls_token.requires_grad_(False)
    elif cfg.variant != 'supervised':
        raise ValueError(f'unknown variant {cfg.variant!r}: supervised or label_free')
    if cfg.allocation_loss not in ('straight_through', 'candidates', 'splits'):
        raise ValueError(f'unknown allocation_loss {cfg.allocation_loss!r}: straight_through, candidates '
                         'or splits')
    params = [p for p in ctrl.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    total = cfg.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.01, 1 - s / total))
    start = 0
    backbone = state_digest(model)
    if resume and (out / 'last.pt').exists():
        state = resume_state(out / 'last.pt', ('controller_state', 'optimizer', 'scheduler',
                                                'rng_state', 'epoch'),
                             map_location=rt.device)['extra']
        check_same_config(out / 'last.pt', state.get('controller_train_config', {}), cfg)
        if state.get('stage1_digest') != backbone:
            which = ('another stage-1 model than' if 'stage1_digest' in state
                     else 'a stage-1 model it did not record (an older run), maybe not')
            raise CheckpointError(f'{out / "last.pt"} was trained on {which} {stage1}; delete {out} '
                                  '(or choose another --out) to train on this one')
        load_weights(ctrl, state['controller_state'], f'{out / "last.pt"}: controller weights do not '
                     'match the config')
        load_optimizer(opt, state['optimizer'], out / 'last.pt')
        sched.load_state_dict(state['scheduler'])
        torch.set_rng_state(state['rng_state'].cpu())  # the Gumbel noise continues its stream
        start = int(state['epoch']) + 1
        print(f'resuming from {out / "last.pt"} at epoch {start}')
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        ctrl.train()
        task = cfg.variant == 'label_free' or epoch >= cfg.warmup_epochs
        corruption = cfg.variant == 'supervised'
        bar = progress_bar(steps, f'controller {epoch + 1}/{cfg.epochs}', progress and rt.is_main)
        tot_loss, tot_acc, layers = 0.0, [], []
        for raw, rng in batches(epoch):
            loss, acc, mean_layers = controller_step(ctrl, model, pre, cost, raw, rng, cfg, task=task,
                                                     corruption=corruption, device=rt.device)
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:  # a warm-up batch without corruption labels teaches nothing
                loss.backward()
                opt.step()
                sched.step()
            tot_loss += float(loss.detach())
            tot_acc.append(acc)
            layers.append(mean_layers)
            if bar is not None:
                bar.set_postfix(loss=f'{float(loss):.3f}')
                bar.update()
        if bar is not None:
            bar.close()
        mean_layers = np.mean(layers, 0)
        row = {'epoch': epoch + 1, 'loss': round(tot_loss / steps, 5),
               'train_acc': round(float(np.nanmean(tot_acc)) if task else float('nan'), 5),
               **{f'layers_{m}': round(float(v), 3) for m, v in zip(mods, mean_layers)},
               'seconds': round(time.time() - t0, 1)}
        log.write(row)
        print(' '.join(f'{k}={v}' for k, v in row.items()), flush=True)
        save_checkpoint(out / 'last.pt', model, **_meta(ctrl, meta, cfg), epoch=epoch,
                        optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                        stage1_digest=backbone, rng_state=torch.get_rng_state())
    save_checkpoint(out / 'controller.pt', model, **_meta(ctrl, meta, cfg))
    rt.close()
    return out / 'controller.pt'


def _pretrain_autoencoder(ctrl, pre, batches, cfg, device, progress):
    decoders = nn.ModuleDict({m: ViewDecoder(ctrl.cfg.embed_dim, ctrl.cfg.in_chans[m], ctrl.cfg.view_size)
                              for m in ctrl.cfg.modalities}).to(device)
    params = [*ctrl.view_encoders.parameters(), *ctrl.blocks.parameters(), *ctrl.norm.parameters(),
              ctrl.modality_embed, ctrl.cls_token, *ctrl.budget_embed.parameters(), *decoders.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for epoch in range(cfg.ae_epochs):
        total, count = 0.0, 0
        for raw, _ in batches(1000 + epoch):
            views = {m: v.to(device) for m, v in pre.controller_views(raw).items() if m in decoders}
            n = len(next(iter(views.values())))
            z = ctrl.encode(views, torch.ones(n, device=device), 'layers')
            # Target = the corrupted view itself: the latent must encode how corrupted it is.
            loss = sum(F.mse_loss(decoders[m](z), v) for m, v in views.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + float(loss), count + 1
        if progress:
            print(f'autoencoder epoch {epoch + 1}/{cfg.ae_epochs} reconstruction={total / count:.4f}', flush=True)


CONTROLLER_KEYS = ('stage', 'controller_config', 'controller_state', 'controller_train_config')


def _meta(ctrl, stage1_meta, cfg) -> dict:
    return {**stage1_meta, 'stage': 'controller', 'controller_config': ctrl.cfg.to_dict(),
            'controller_state': ctrl.state_dict(), 'controller_train_config': plain(asdict(cfg))}


__all__ = ['ControllerTrainConfig', 'train_controller', 'UNITS']
