"""Self-supervised pretraining of the modality encoders on unlabelled recordings (``admn pretrain``).

    admn pretrain --data folder:/data/robot --data runs/bag1 --init default --out runs/pretrain
    admn train stage1 --config stage1.yaml --init runs/pretrain/encoders.pt --out runs/stage1

Each modality with data gets a masked autoencoder (:mod:`admn_ros.fusion.mae`) around its encoder.
A step takes one batch of one modality (the epoch's batches of every modality, shuffled together),
draws a LayerDrop keep-row for it (:func:`admn_ros.fusion.layerdrop.sample_keep`, the stage-1
sampler: random rate, uniform counts, block 0 alone) and lowers the reconstruction loss; images
are randomly cropped and shifted, log-mel spectrograms shifted in time. The model's encoders start
from ``init`` (a shipped model or a checkpoint: every encoder it has, whether or not this data
trains it) or from random weights with ``model``'s architecture.

Writes ``OUT/encoders.pt`` - an admn checkpoint holding only encoder weights, which
``admn train stage1 --init`` copies (adapters, fusion and head then start fresh) - and, while it
runs, ``OUT/last.pt`` every ``checkpoint_every`` steps and at each epoch's end (``--resume``
continues from it, at the step it was written) and ``OUT/metrics.csv`` per epoch.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from admn_ros.datasets.preprocess import PreprocessConfig, Preprocessor
from admn_ros.datasets.unlabelled import UnlabelledPool, load_pool
from admn_ros.fusion.checkpoint import (FORMAT, CheckpointError, load_optimizer, load_weights,
                                       read_checkpoint, resume_state, save_checkpoint, write_payload)
from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.device import autocast, check_device
from admn_ros.fusion.layerdrop import LayerDropConfig, sample_keep
from admn_ros.fusion.mae import DecoderConfig, MaskedAutoencoder
from admn_ros.fusion.model import ADMNModel
from admn_ros.fusion.pretrained import init_from_checkpoint, resolve_init
from admn_ros.fusion.threads import thread_summary
from admn_ros.fusion.training import (CsvLog, check_same_config, init_runtime, plain, progress_bar,
                                     seed_everything, warmup_cosine)
from admn_ros.fusion.validate import Each, at_least, check_limits, fraction, positive
from admn_ros.fusion.validate import from_yaml as config_from_yaml

IMAGE_MODALITIES = ('rgb', 'depth')


def _pretrain_layerdrop() -> LayerDropConfig:
    # ADMN pretrains its backbones with LayerDrop 0.2; the uniform-count rule adds the very
    # shallow subsets (1-3 blocks) a controller hands out at small budgets.
    return LayerDropConfig(max_rate=0.2, warmup_epochs=1.0, full_drop_prob=0.1, uniform_count=True,
                           uniform_count_prob=0.5, absent_prob=0.0)


@dataclass
class PretrainConfig:
    data: Tuple[str, ...] = ()            # --data specs (datasets/unlabelled.py)
    init: Optional[str] = 'default'       # shipped name or checkpoint; null: random, as ``model``
    model: ModelConfig = field(default_factory=ModelConfig)
    modalities: Tuple[str, ...] = ()      # empty: every modality the data and the model share
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    layerdrop: LayerDropConfig = field(default_factory=_pretrain_layerdrop)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    crop_scale: Tuple[float, float] = (0.75, 1.0)   # images: area share of the random crop
    shift: float = 0.1                    # images and log-mel: random shift, share of the width
    epochs: int = 20
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    checkpoint_every: int = 200           # steps between last.pt writes (and at every epoch end)
    seed: int = 0
    device: str = 'auto'

    LIMITS: ClassVar[dict] = {'crop_scale': Each(fraction(open_low=True), min_len=2),
                              'shift': fraction(), 'epochs': at_least(1), 'batch_size': at_least(1),
                              'lr': positive(), 'weight_decay': at_least(0), 'warmup_steps': at_least(0),
                              'grad_clip': positive(), 'checkpoint_every': at_least(1),
                              'seed': at_least(0)}

    def check(self) -> None:
        check_device(self.device)

    @classmethod
    def from_yaml(cls, path: Optional[str]) -> 'PretrainConfig':
        return config_from_yaml(cls, path)


# --------------------------------------------------------------------------------------- model

def build_model(cfg: PretrainConfig, pool: UnlabelledPool) -> Tuple[ADMNModel, List[str], str]:
    """(model, modalities to pretrain, what it started from)."""
    if cfg.init and str(cfg.init).lower() != 'none':
        path = resolve_init(cfg.init)
        payload = read_checkpoint(path)
        try:
            model_cfg = ModelConfig.from_dict(payload['model_config'])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f'{path}: bad model config: {exc}') from None
        model = ADMNModel(model_cfg)
        report = init_from_checkpoint(model, payload, parts=('encoder',))
        started = f'init from {path}: encoders {", ".join(report.copied_modalities) or "none"}'
    else:
        model_cfg = ModelConfig(**{**cfg.model.__dict__, 'encoders': {
            m: e for m, e in cfg.model.encoders.items() if m in pool.arrays}})
        model = ADMNModel(model_cfg)
        started = 'random weights'
    wanted = list(cfg.modalities) or list(pool.arrays)
    train = [m for m in model.modalities if m in wanted and m in pool.arrays]
    if not train:
        raise ValueError(f'nothing to pretrain: the data has {sorted(pool.arrays)}, the model '
                         f'encoders for {list(model.modalities)}'
                         + (f', --modalities {list(cfg.modalities)}' if cfg.modalities else ''))
    return model, train, started


def encoder_payload(model: ADMNModel, **extra) -> Dict:
    """An admn checkpoint payload with the encoders' weights only (``--init`` leaves the rest fresh)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k.startswith('encoders.')}
    return {'format': FORMAT, 'model_config': model.cfg.to_dict(), 'state_dict': state, 'extra': extra}


# ---------------------------------------------------------------------------------------- data

def preprocess_pool(pool: UnlabelledPool, pre: Preprocessor, modalities, chunk: int = 256
                    ) -> Dict[str, torch.Tensor]:
    """Model inputs of every pooled sample, once (float16 in memory: half the bytes, and inputs
    normalised to a few units lose nothing a reconstruction target needs)."""
    out = {}
    for m in modalities:
        raw = pool.arrays[m]
        parts = [pre({m: raw[i:i + chunk]})[m].half() for i in range(0, len(raw), chunk)]
        out[m] = torch.cat(parts)
    return out


def random_view(x: torch.Tensor, modality: str, cfg: PretrainConfig,
                gen: torch.Generator) -> torch.Tensor:
    """Per sample: images a random crop (``crop_scale`` of the area) resized back and shifted;
    log-mel spectrograms shifted in time only (a shifted pitch would be another voice)."""
    b = len(x)
    if modality in IMAGE_MODALITIES:
        lo, hi = cfg.crop_scale
        scale = (lo + (hi - lo) * torch.rand(b, generator=gen)).sqrt()
        room = 1 - scale
        tx = (2 * torch.rand(b, generator=gen) - 1) * (room + cfg.shift)
        ty = (2 * torch.rand(b, generator=gen) - 1) * (room + cfg.shift)
    else:
        scale = torch.ones(b)
        tx = (2 * torch.rand(b, generator=gen) - 1) * cfg.shift
        ty = torch.zeros(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    # Depth: nearest, so an invalid (0) pixel never blends into a valid one.
    mode = 'nearest' if modality == 'depth' else 'bilinear'
    return F.grid_sample(x, grid, mode=mode, padding_mode='border', align_corners=False)


def epoch_schedule(counts: Dict[str, int], batch_size: int, seed: int, epoch: int
                   ) -> List[Tuple[str, np.ndarray]]:
    """The epoch's (modality, sample indices) batches: every sample of every modality once,
    batches of all modalities in a seeded random order."""
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for m in sorted(counts):
        order = rng.permutation(counts[m])
        size = min(batch_size, counts[m])
        batches += [(m, order[i:i + size]) for i in range(0, counts[m] - size + 1, size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# ------------------------------------------------------------------------------------ training

def pretrain(cfg: PretrainConfig, out_dir, *, resume: bool = False, progress: bool = True,
             threads: int = 0, pool: Optional[UnlabelledPool] = None,
             stop_at_step: Optional[int] = None) -> Path:
    """Pretrain and return the path of ``encoders.pt`` (module docstring); ``pool``: the data
    already loaded (else from ``cfg.data``). ``stop_at_step`` ends the run after that step as
    an interruption would (``last.pt`` written, no ``encoders.pt``) and returns ``last.pt``."""
    out = Path(out_dir)
    check_limits(cfg)
    rt = init_runtime(cfg.device, threads)
    if rt.distributed:
        raise ValueError('admn pretrain runs in one process (run it without torchrun)')
    if progress:
        print(f'threads: {thread_summary(rt.threads)}', flush=True)
    seed_everything(cfg.seed)
    if pool is None:
        pool = load_pool(cfg.data, work=out, image_size=cfg.preprocess.image_size)
    model, modalities, started = build_model(cfg, pool)
    model.to(rt.device)
    print(f'pretraining {", ".join(modalities)} ({pool.describe()}); {started}', flush=True)
    pre = Preprocessor(cfg.preprocess)
    inputs = preprocess_pool(pool, pre, modalities)
    maes = torch.nn.ModuleDict({m: MaskedAutoencoder(model.encoders[m], cfg.decoder) for m in modalities})
    maes.to(rt.device)
    opt = torch.optim.AdamW(maes.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)

    counts = {m: len(x) for m, x in inputs.items()}
    steps_per_epoch = len(epoch_schedule(counts, cfg.batch_size, cfg.seed, 0))
    total = steps_per_epoch * cfg.epochs
    step = 0
    meta = {'stage': 'pretrain', 'modalities': list(model.modalities), 'pretrained': modalities,
            'preprocess': asdict(cfg.preprocess), 'train_config': plain(asdict(cfg)),
            'data': {m: pool.sources[m] for m in modalities}, 'samples': counts}
    if resume and (out / 'last.pt').exists():
        state = resume_state(out / 'last.pt', ('optimizer', 'step', 'decoders'), map_location=rt.device)
        if state['model_config'] != model.cfg.to_dict():
            raise CheckpointError(f'{out / "last.pt"}: model config differs; not resuming')
        check_same_config(out / 'last.pt', state['extra'].get('train_config', {}), cfg)
        load_weights(model, state['state_dict'], f'{out / "last.pt"}: weights do not match the model')
        for m, sd in state['extra']['decoders'].items():
            load_weights(maes[m], {**{f'encoder.{k}': v for k, v in model.encoders[m].state_dict().items()},
                                   **sd}, f'{out / "last.pt"}: {m} decoder')
        load_optimizer(opt, state['extra']['optimizer'], out / 'last.pt')
        step = int(state['extra']['step'])
        print(f'resuming from {out / "last.pt"} at step {step} of {total}', flush=True)

    def save_last():
        decoders = {m: {k: v for k, v in mae.state_dict().items() if not k.startswith('encoder.')}
                    for m, mae in maes.items()}
        save_checkpoint(out / 'last.pt', model, optimizer=opt.state_dict(), step=step,
                        decoders=decoders, **meta)

    log = CsvLog(out / 'metrics.csv')
    maes.train()
    while step < total:
        epoch = step // steps_per_epoch
        schedule = epoch_schedule(counts, cfg.batch_size, cfg.seed, epoch)
        sums = {m: [0.0, 0] for m in modalities}
        t0, seen = time.time(), 0
        bar = progress_bar(steps_per_epoch, f'pretrain epoch {epoch + 1}/{cfg.epochs}', progress)
        if bar is not None:
            bar.update(step - epoch * steps_per_epoch)
        for m, index in schedule[step - epoch * steps_per_epoch:]:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            x = random_view(inputs[m][torch.from_numpy(index)].float(), m, cfg, gen).to(rt.device)
            keep = sample_keep([m], model.depth, 1, step / steps_per_epoch, cfg.layerdrop, gen)[m][0]
            for group in opt.param_groups:
                group['lr'] = warmup_cosine(step, total, cfg.lr, cfg.warmup_steps)
            with autocast(rt.device):
                loss, _, _ = maes[m](x, keep, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(maes.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            sums[m][0] += float(loss.detach()) * len(x)
            sums[m][1] += len(x)
            seen += len(x)
            if bar is not None:
                bar.set_postfix({f'loss_{k}': f'{s / max(n, 1):.3f}' for k, (s, n) in sums.items() if n})
                bar.update()
            if step % cfg.checkpoint_every == 0 or step == stop_at_step:
                save_last()
            if step == stop_at_step:
                rt.close()
                return out / 'last.pt'
        if bar is not None:
            bar.close()
        seconds = time.time() - t0
        row = {'epoch': epoch + 1, 'step': step,
               **{f'loss_{m}': round(s / n, 5) for m, (s, n) in sums.items() if n},
               'drop_rate': round(cfg.layerdrop.rate(epoch + 1), 3),
               'lr': f'{warmup_cosine(step - 1, total, cfg.lr, cfg.warmup_steps):.2e}',
               'seconds': round(seconds, 1), 'samples_per_s': round(seen / max(seconds, 1e-9), 1)}
        log.write(row)
        print(' '.join(f'{k}={v}' for k, v in row.items()), flush=True)
        save_last()
    final = out / 'encoders.pt'
    write_payload(encoder_payload(model, **meta), final)
    rt.close()
    return final


def reconstruction_loss(mae: MaskedAutoencoder, x: torch.Tensor, keep: Optional[torch.Tensor],
                        seed: int = 0) -> float:
    """The masked-reconstruction loss of ``x`` under one keep-row, with a fixed mask (for checks)."""
    mae.eval()
    with torch.inference_mode():
        loss, _, _ = mae(x, keep, generator=torch.Generator().manual_seed(seed))
    return float(loss)
