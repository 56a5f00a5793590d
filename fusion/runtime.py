"""What every training command shares: distributed set-up, seeding, CSV metrics, YAML configs.

Training runs unchanged as one process or under ``torchrun``: the environment variables torchrun
sets (WORLD_SIZE, RANK, LOCAL_RANK) switch on DistributedDataParallel, with gloo on CPU and NCCL on
CUDA. Rank 0 logs and saves.
"""
from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
import yaml

from admn_ros.fusion.device import resolve_device


@dataclass
class Runtime:
    rank: int
    world_size: int
    device: torch.device

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


def init_runtime(device: str = 'auto') -> Runtime:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    dev = resolve_device(device)
    if world > 1:
        if dev.type == 'cuda':
            dev = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    return Runtime(rank=rank, world_size=world, device=dev)


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
    if path is None:
        return {}
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping at the top level')
    return data
