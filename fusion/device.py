"""Device selection and mixed precision: the one place that knows about CUDA."""
from __future__ import annotations

import contextlib

import torch

from admn_ros.fusion.validate import ConfigError


DEVICE_CHOICES = 'auto, cpu, cuda or cuda:N'


def check_device(spec: str) -> str:
    """``spec`` normalised if it names a device this code can use (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``), else ValueError in one line; whether CUDA is present is :func:`resolve_device`'s
    question. The one check of a device setting (configs, node parameters, flags)."""
    text = ('auto' if spec is None else spec if isinstance(spec, str) else '?').strip().lower() or 'auto'
    if text in ('auto', 'cpu', 'cuda') or (text.startswith('cuda:') and text[5:].isdigit()):
        return text
    raise ConfigError('device', spec, DEVICE_CHOICES)


def resolve_device(spec: str = 'auto') -> torch.device:
    """``auto`` -> first CUDA device if available, else CPU; ``cpu``; ``cuda`` / ``cuda:N``."""
    spec = check_device(spec)
    if spec == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if spec == 'cpu':
        return torch.device('cpu')
    if spec.startswith('cuda'):
        if not torch.cuda.is_available():
            raise ValueError(f'device {spec!r} requested but CUDA is not available on this machine')
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f'device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) present')
        return dev
    raise ValueError(f'unknown device {spec!r}: use auto, cpu, cuda or cuda:N')


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA (no loss scaling needed); a no-op on CPU."""
    if enabled and device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return contextlib.nullcontext()
