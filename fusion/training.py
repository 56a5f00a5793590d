"""What both trainers (stage 1 and the controller) share: distributed set-up, seeding, CSV
metrics, YAML configs, the data and augmentation configs, resume checks and progress bars.

Training runs unchanged as one process or under ``torchrun``: the environment variables torchrun
sets (WORLD_SIZE, RANK, LOCAL_RANK) switch on DistributedDataParallel, with gloo on CPU and NCCL on
CUDA. Rank 0 logs and saves. Inference never imports this module.
"""
from __future__ import annotations

import csv
import math
import dataclasses
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from admn_ros.datasets.corruptions import CorruptionSampler
from admn_ros.datasets.registry import load_dataset
from admn_ros.datasets.sample import RawBatch
from admn_ros.fusion.checkpoint import CheckpointError
from admn_ros.fusion.config import from_dict
from admn_ros.fusion.device import resolve_device
from admn_ros.fusion.threads import apply_threads, choose_threads
from admn_ros.fusion.validate import Each, at_least, fraction, one_of, read_yaml

Augment = Callable[[RawBatch, np.random.Generator], RawBatch]


@dataclass
class Runtime:
    rank: int
    world_size: int
    device: torch.device
    threads: Dict[str, Any] = field(default_factory=dict)   # what apply_threads put in force

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_mean(self, values) -> np.ndarray:
        t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device)
        if self.distributed:
            dist.all_reduce(t)
            t /= self.world_size
        return t.cpu().numpy()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_runtime(device: str = 'auto', threads: int = 0) -> Runtime:
    """Distributed set-up, device, and the thread counts (:mod:`admn_ros.fusion.threads`,
    'throughput' rule; ``threads`` > 0 overrides), in :attr:`Runtime.threads`."""
    applied = apply_threads(choose_threads('throughput', override=threads))
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    dev = resolve_device(device)
    if world > 1:
        if dev.type == 'cuda':
            dev = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    return Runtime(rank=rank, world_size=world, device=dev, threads=applied)


def warmup_cosine(step: int, total: int, lr: float, warmup_steps: int) -> float:
    """The learning rate at ``step`` of ``total``: linear warm-up over ``warmup_steps``, then a
    cosine from ``lr`` to 0 (stage 1 and pretraining)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class CsvLog:
    """Append-only per-epoch metrics; a resumed run continues the same file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, row: Dict[str, Any]) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open('a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def rows(self):
        if not self.path.exists():
            return []
        with self.path.open() as f:
            return list(csv.DictReader(f))


def load_yaml(path: Optional[str]) -> Dict[str, Any]:
    """A config file's mapping ({} without a path); safe loading, one-line errors and an empty
    file refused (:func:`admn_ros.fusion.validate.read_yaml`)."""
    if path is None:
        return {}
    return read_yaml(path)


@dataclass
class DataConfig:
    dataset: str = 'synthetic'
    train_split: str = 'train'
    val_split: str = 'val'
    train_size: Optional[int] = None
    val_size: Optional[int] = None
    data_root: Optional[str] = None
    seed: int = 0
    # folder: datasets: shrink images to the model's input size as they are read (what the
    # preprocessing would do per batch), so 640x480 recordings cost no more per epoch than 64x64.
    resize_on_load: bool = True

    LIMITS: ClassVar[dict] = {'train_size': at_least(1), 'val_size': at_least(1), 'seed': at_least(0)}

    def load(self, split: str, size: Optional[int], image_size: int):
        """One split as a :class:`admn_ros.datasets.registry.LoadedDataset` (``image_size``: the
        model's, for resize on load)."""
        return load_dataset(self.dataset, split, seed=self.seed, size=size, data_root=self.data_root,
                            image_size=image_size if self.resize_on_load else None)


@dataclass
class AugmentConfig:
    """Corruption augmentation through :class:`admn_ros.datasets.corruptions.CorruptionSampler`."""

    policy: str = 'independent'   # 'independent', 'one_at_a_time', 'up_to_two' or 'none'
    p_clean: float = 0.4
    start_epoch: int = 1          # train clean first, as ADMN does
    # Samples a dataset tags as degraded (recorded conditions) keep their data and tags instead of
    # getting a synthetic corruption on top; no effect on untagged data.
    keep_recorded: bool = True
    # Severities drawn from these levels (e.g. the evaluation mix 0.25/0.5/0.75/1.0) instead of
    # uniformly in [0.1, 1]: a controller then sees destroyed sensors often enough to learn them.
    severity_levels: Optional[Tuple[float, ...]] = None

    LIMITS: ClassVar[dict] = {'policy': one_of('independent', 'one_at_a_time', 'up_to_two', 'none'),
                              'p_clean': fraction(), 'start_epoch': at_least(0),
                              'severity_levels': Each(fraction(open_low=True), min_len=1)}


def build_augment(cfg: AugmentConfig) -> Optional[Augment]:
    if cfg.policy == 'none':
        return None
    levels = tuple(cfg.severity_levels) if cfg.severity_levels else None
    return CorruptionSampler(policy=cfg.policy, p_clean=cfg.p_clean, keep_recorded=cfg.keep_recorded,
                             severity_levels=levels)


def with_babble_bank(augment: Optional[Augment], arrays) -> Optional[Augment]:
    """A corruption sampler that draws babble talkers for a sample whose batch holds no other
    class from the training split's audio (small batches - the small-data recipe's - often have
    none; the sampler would refuse them)."""
    if isinstance(augment, CorruptionSampler) and augment.babble_bank is None and 'audio' in arrays:
        return dataclasses.replace(augment, babble_bank=arrays['audio'])
    return augment


def check_same_config(last: Path, saved: dict, cfg) -> None:
    """Refuse (CheckpointError) to resume ``last`` with a training config other than the one it
    was made with: more ``epochs`` or another ``device`` may continue a run, anything else would
    silently mix two. ``saved`` is read back through ``cfg``'s dataclass, so options the run
    predates count as their defaults."""
    try:
        was = plain(asdict(from_dict(type(cfg), saved)))
    except (TypeError, ValueError) as exc:
        was = {'(saved config)': f'unreadable: {exc}'}
    now = plain(asdict(cfg))
    changed = sorted(k for k in set(was) | set(now)
                     if k not in ('epochs', 'device') and was.get(k) != now.get(k))
    if changed:
        raise CheckpointError(f'{last}: that run used another config ({", ".join(changed)} differ); '
                              f'not resuming. Delete {last.parent} or train into another folder')


def plain(obj):
    """Tuples -> lists so the checkpoint stays loadable with weights_only."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar for one epoch, or None when disabled (another rank, or --no-progress)."""
    if not enabled:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
