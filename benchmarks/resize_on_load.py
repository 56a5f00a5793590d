"""Resize on load: a folder dataset of 640x480 recordings trains as fast per epoch as the same data
at 64x64 (target: within 20 %).

    python -m admn_ros.benchmarks.resize_on_load --json results/resize_on_load.json

Writes one RGB-D folder dataset (``--train`` samples, 144 by default as in a small robot recording,
and a validation split) twice: at 640x480 and at 64x64 (the same images, shrunk once). Then trains
stage 1 on each - the shipped synthetic architecture, batch 16, no augmentation, one torch thread -
for ``--epochs`` epochs, the three runs interleaved epoch by epoch (in rotating order) so a busy
machine slows them alike:

``small``        the 64x64 folder
``large``        the 640x480 folder, resized on load (``data.resize_on_load: true``, the default)
``large_full``   the 640x480 folder kept at full size (``resize_on_load: false``): what epochs
                 cost before, every batch cropped and resized by the preprocessing

and reports the mean and median epoch time of each (the first epoch left out: it pays one-off
costs) and the ratios of the means to ``small``.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import numpy as np

from admn_ros.benchmarks.report import write_result

VARIANTS = ('small', 'large', 'large_full')


def write_datasets(root: Path, n_train: int, n_val: int) -> dict:
    import cv2

    from admn_ros.datasets.folder import write_folder
    from admn_ros.datasets.registry import load_dataset
    paths = {'small': root / 'small', 'large': root / 'large'}
    if (paths['large'] / 'val').is_dir():
        return paths
    for split, n in (('train', n_train), ('val', n_val)):
        # The synthetic world's scenes, rendered large by the generator itself would cost minutes;
        # upscaled 64x64 frames have the same bytes per sample as a 640x480 camera.
        data = load_dataset('synthetic', split, size=n).arrays
        large = {'rgb': np.stack([cv2.resize(x, (640, 480), interpolation=cv2.INTER_LINEAR) for x in data['rgb']]),
                 'depth': np.stack([cv2.resize(x, (640, 480), interpolation=cv2.INTER_NEAREST)
                                    for x in data['depth']]),
                 'label': data['label']}
        names = load_dataset('synthetic', split, size=1).class_names
        write_folder(paths['large'], split, large, names)
        from admn_ros.datasets.preprocess import shrink_to_input
        small = {'rgb': np.stack([shrink_to_input(x, 64, 'rgb') for x in large['rgb']]),
                 'depth': np.stack([shrink_to_input(x, 64, 'depth') for x in large['depth']]),
                 'label': data['label']}
        write_folder(paths['small'], split, small, names)
    return paths


def run(root: Path, epochs: int, n_train: int, n_val: int) -> dict:
    import torch

    from admn_ros.fusion.config import ModelConfig
    from admn_ros.fusion.stage1 import Stage1Config, train_stage1
    from admn_ros.fusion.training import AugmentConfig, DataConfig
    from admn_ros.paths import config_dir

    torch.set_num_threads(1)
    paths = write_datasets(root / 'data', n_train, n_val)
    model = Stage1Config.from_yaml(str(config_dir() / 'training' / 'stage1_synthetic.yaml')).model
    model = ModelConfig(**{**model.__dict__, 'encoders': {m: model.encoders[m] for m in ('rgb', 'depth')}})

    def config(variant: str, upto: int) -> Stage1Config:
        data = DataConfig(dataset=f'folder:{paths["small" if variant == "small" else "large"]}',
                          resize_on_load=variant != 'large_full')
        return Stage1Config(model=model, data=data, augment=AugmentConfig(policy='none'),
                            epochs=upto, batch_size=16, warmup_steps=5, stem='patch', device='cpu')

    for upto in range(1, epochs + 1):        # interleaved: one more epoch of each in turn,
        for k in range(len(VARIANTS)):      # the order rotated so none always follows another
            variant = VARIANTS[(k + upto) % len(VARIANTS)]
            train_stage1(config(variant, upto), root / variant, resume=True, progress=False)
    seconds = {}
    for variant in VARIANTS:
        with open(root / variant / 'metrics.csv') as f:
            seconds[variant] = [float(r['seconds']) for r in csv.DictReader(f)]
    # The log rounds each epoch to 0.1 s: the mean over epochs averages that rounding out.
    mean = {v: round(statistics.fmean(s[1:]), 3) for v, s in seconds.items()}
    median = {v: statistics.median(s[1:]) for v, s in seconds.items()}
    return {'train_samples': n_train, 'val_samples': n_val, 'epochs': epochs, 'epoch_seconds': seconds,
            'mean_epoch_seconds': mean, 'median_epoch_seconds': median,
            'ratio_large_to_small': round(mean['large'] / mean['small'], 3),
            'ratio_large_full_to_small': round(mean['large_full'] / mean['small'], 3),
            'target_ratio_at_most': 1.2}


def resize_on_load_table(result: dict) -> str:
    """Mean and median seconds per epoch of each variant and its mean's ratio to ``small``."""
    mean, median = result['mean_epoch_seconds'], result['median_epoch_seconds']
    lines = ['| data | mean s/epoch | median s/epoch | ratio to 64x64 |', '|---|---|---|---|']
    lines += [f'| {v} | {mean[v]:.3f} | {median[v]:.2f} | {mean[v] / mean["small"]:.2f} |' for v in VARIANTS]
    lines += ['', f'target: large / small at most {result["target_ratio_at_most"]:g} '
                  f'(got {result["ratio_large_to_small"]:g})']
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m admn_ros.benchmarks.resize_on_load',
                                description=__doc__.splitlines()[0])
    p.add_argument('--train', type=int, default=144)
    p.add_argument('--val', type=int, default=48)
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--work', default='runs/resize_on_load')
    p.add_argument('--json', required=True, help='write the results here (and a .md table beside it)')
    args = p.parse_args(argv)
    result = run(Path(args.work), args.epochs, args.train, args.val)
    table = resize_on_load_table(result)
    write_result(result, args.json, table)
    print(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
