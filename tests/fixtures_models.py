"""Tiny checkpoints for the fusion tests.

* :func:`make_random_checkpoint` writes an *untrained* tiny ADMN model (rgb, depth, audio; dim 32,
  4 layers per modality, patch 16), optionally with an untrained allocation controller, in
  milliseconds. Allocation, budgets, skipping, sync and message flow do not need a trained model.
* ``tiny_stage1`` trains a tiny model (dim 64, 4 layers, patch 16) with LayerDrop through
  :func:`admn_ros.fusion.stage1.train_stage1` (~25 s on 2 shared cores), for the tests that need
  predictions above chance. It trains on AV-digits (real MNIST digits + spoken digits, rgb and
  audio, 10 classes), which such a small model learns in a few epochs (test accuracy ~0.4 against
  chance 0.1); the synthetic world needs all three modalities by design and a few thousand
  samples to learn, too many for a test. The checkpoint is kept under pytest's base temporary
  directory, so every test file importing the fixture shares one training run per process (each
  xdist worker trains its own). Tests using it
  are skipped when the AV-digits data (``../shared/data``) is not there.

Import into a test module with ``from tests.fixtures_models import tiny_stage1  # noqa: F401``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest

TRAIN_SIZE = 512
VAL_SIZE = 48
EPOCHS = 8



def tiny_model_config(modalities: Sequence[str] = ('rgb', 'depth', 'audio'),
                      num_classes: int = 12, dim: int = 32) -> dict:
    chans = {'rgb': 3, 'depth': 1, 'audio': 1}
    enc = {'input_size': [64, 64], 'patch_size': 16, 'dim': dim, 'depth': 4, 'heads': 2,
           'mlp_ratio': 2.0}
    return {'encoders': {m: dict(enc, in_chans=chans[m]) for m in modalities},
            'adapter_hidden': 32, 'fusion_dim': 32, 'fusion_depth': 1, 'fusion_heads': 2,
            'num_classes': num_classes}


def make_random_checkpoint(path, *, modalities: Sequence[str] = ('rgb', 'depth', 'audio'),
                           class_names: Sequence[str] = (), controller: bool = False,
                           seed: int = 0, dataset: str = 'synthetic') -> Path:
    """An untrained tiny checkpoint as stage 1 writes it (plus a controller when asked); its
    metadata names ``dataset`` as the one it was trained on."""
    from admn_ros.datasets.synthetic import CLASS_NAMES
    from admn_ros.fusion.checkpoint import save_untrained
    from admn_ros.fusion.config import ModelConfig

    names = list(class_names or CLASS_NAMES)
    extra = {}
    if controller:
        import torch

        from admn_ros.quality_estimators.controller import AllocationController, ControllerConfig
        torch.manual_seed(seed + 1)
        ctrl = AllocationController(ControllerConfig(
            modalities=tuple(modalities), in_chans={m: 3 if m == 'rgb' else 1 for m in modalities},
            depth=4, embed_dim=16, transformer_depth=1, heads=2,
            num_types={m: {'rgb': 7, 'depth': 5, 'audio': 7}[m] for m in modalities}))
        extra = {'stage': 'controller', 'controller_config': ctrl.cfg.to_dict(),
                 'controller_state': ctrl.state_dict()}
    return save_untrained(path, ModelConfig.from_dict(tiny_model_config(modalities, len(names))),
                          dataset=dataset, class_names=names, seed=seed, **extra)


def avdigits_available() -> bool:
    try:
        from admn_ros.datasets.registry import load_dataset
        load_dataset('avdigits', 'test', size=2)
    except (FileNotFoundError, ValueError, OSError):
        return False
    return True


def build_tiny_stage1(out_dir: Path) -> Path:
    """Train (or reuse) the tiny AV-digits stage-1 checkpoint under ``out_dir``."""
    from admn_ros.fusion.config import ModelConfig
    from admn_ros.fusion.layerdrop import LayerDropConfig
    from admn_ros.fusion.stage1 import Stage1Config, train_stage1
    from admn_ros.fusion.training import AugmentConfig, DataConfig

    path = Path(out_dir) / 'model.pt'
    if path.is_file():
        return path
    cfg = Stage1Config(
        model=ModelConfig.from_dict(tiny_model_config(num_classes=10, dim=64)),
        data=DataConfig(dataset='avdigits', train_size=TRAIN_SIZE, val_size=VAL_SIZE),
        # Drop layers from the first step: the tests run the model under small budgets.
        layerdrop=LayerDropConfig(max_rate=0.3, warmup_epochs=0, full_drop_prob=0.0,
                                  uniform_count=False),
        augment=AugmentConfig(policy='none'),
        epochs=EPOCHS, batch_size=32, lr=2e-3, weight_decay=0.0, warmup_steps=5,
        stem='patch', eval_batch_size=VAL_SIZE, device='cpu')
    return train_stage1(cfg, out_dir, progress=False)


@pytest.fixture(scope='session')
def tiny_stage1(tmp_path_factory) -> Path:
    """Path of a tiny trained AV-digits stage-1 checkpoint (rgb + audio, 10 classes)."""
    if not avdigits_available():
        pytest.skip('AV-digits data (../shared/data) not available')
    # Every module importing the fixture shares the run: a finished checkpoint is reused from disk.
    return build_tiny_stage1(tmp_path_factory.getbasetemp() / 'tiny_models' / 'stage1')


# --------------------------------------------------------------------------- ROS helpers
class RosHarness:
    """Nodes under test plus a probe node in one private context and one executor, all in one
    namespace, spun in bounded loops. Probe subscriptions are deep (500), so
    count-sensitive tests never lose messages to the queue."""

    def __init__(self, ctx, namespace: str = ''):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self.ctx, self.namespace = ctx, namespace
        self.probe = rclpy.create_node('probe', namespace=namespace, context=ctx)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.probe)
        self.nodes = []

    def add(self, node):
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def listen(self, msg_type, topic: str, depth: int = 500) -> list:
        got: list = []
        self.probe.create_subscription(msg_type, topic, got.append, depth)
        return got

    def publisher(self, msg_type, topic: str, qos=10):
        return self.probe.create_publisher(msg_type, topic, qos)

    def spin_until(self, done, timeout: float = 10.0) -> bool:
        import time
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)
        return bool(done())

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def close(self) -> None:
        self.executor.shutdown()
        for node in self.nodes + [self.probe]:
            node.destroy_node()


def sample_frame(i: int = 0, size: int = 48) -> dict:
    """One deterministic rgb / depth / audio sample (structured, so quality estimates are sane)."""
    import numpy as np
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[:size, :size]
    rgb = np.stack([(xx * 5 + i * 7) % 256, (yy * 3) % 256, ((xx + yy) * 2) % 256], -1)
    depth = (1.0 + 0.02 * xx + 0.01 * i).astype(np.float32)
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * (300 + 40 * i) * t)
             + 0.01 * rng.standard_normal(16000)).astype(np.float32)
    return {'rgb': rgb.astype(np.uint8), 'depth': depth, 'audio': audio}


def rgb_audio_model(depth: int, num_classes: int, seed: int = 0, **enc):
    """A tiny untrained RGB + audio model (16x16 inputs, dim 32) for the compression tests."""
    import torch
    from admn_ros.fusion.config import EncoderConfig, ModelConfig
    from admn_ros.fusion.model import ADMNModel
    base = dict(input_size=(16, 16), patch_size=8, dim=32, depth=depth, heads=2, **enc)
    torch.manual_seed(seed)
    cfg = ModelConfig(encoders={'rgb': EncoderConfig(in_chans=3, **base),
                                'audio': EncoderConfig(in_chans=1, **base)},
                      adapter_hidden=32, fusion_dim=32, fusion_depth=1, fusion_heads=2,
                      num_classes=num_classes)
    return ADMNModel(cfg).eval()


def rgb_audio_inputs(batch: int = 4, seed: int = 0):
    """Seeded random inputs for :func:`rgb_audio_model`."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return {'rgb': torch.randn(batch, 3, 16, 16, generator=g),
            'audio': torch.randn(batch, 1, 16, 16, generator=g)}
