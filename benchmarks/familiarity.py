"""How far inputs from another source lie from a shipped model's training data, as seen by a cheap
density of its encoders' patch tokens: does it separate them well enough to gate allocation on?

    python -m admn_ros.benchmarks.familiarity --json results/familiarity.json

Per modality one Gaussian over the patch-embedding tokens (the encoder's earliest feature, one
projection of the input) of ``--samples`` training samples, covariance shrunk toward its diagonal;
a sample's distance is its tokens' mean squared Mahalanobis distance per feature, divided by the
99th percentile of the same number on the calibration samples (1 = as far as the farthest percent
of training). Reported per input set: median and 10th / 90th percentiles, per modality.
"""
from __future__ import annotations

import argparse
from typing import Dict, Iterator

import cv2
import numpy as np
import torch
from scipy.signal import butter, sosfilt

from admn_ros.benchmarks.report import write_result
from admn_ros.datasets.registry import load_dataset
from admn_ros.datasets.sample import SAMPLE_RATE, RawBatch, take
from admn_ros.datasets.synthetic import SyntheticConfig, generate
from admn_ros.fusion.threads import apply_threads, choose_threads
from admn_ros.quality_estimators.inference import load_model, shipped_checkpoint

SHRINKAGE = 0.1
QUANTILE = 0.99


class TokenDensity:
    """Per-modality Gaussian of the patch-embedding tokens (module docstring)."""

    def __init__(self, loaded, calibration: RawBatch):
        self.loaded = loaded
        tokens: Dict[str, list] = {}
        for inputs in self._inputs(calibration):
            for m, t in self._tokens(inputs).items():
                tokens.setdefault(m, []).append(t)
        self.stats = {}
        for m, parts in tokens.items():
            t = torch.cat(parts)
            flat = t.reshape(-1, t.shape[-1])
            mean = flat.mean(0)
            cov = torch.cov((flat - mean).T)
            precision = torch.linalg.inv((1 - SHRINKAGE) * cov + SHRINKAGE * torch.diag(torch.diag(cov)))
            self.stats[m] = (mean, precision, 1.0)   # unscaled, to find the scale on the same samples
            self.stats[m] = (mean, precision, float(np.quantile(self._distance(m, t), QUANTILE)))

    def _inputs(self, raw: RawBatch, batch: int = 128) -> Iterator[Dict[str, torch.Tensor]]:
        n = len(raw['label'])
        for s in range(0, n, batch):
            part = self.loaded.preprocessor(take(raw, np.arange(s, min(n, s + batch))))
            yield {m: x for m, x in part.items() if m in self.loaded.modalities}

    @torch.no_grad()
    def _tokens(self, inputs) -> Dict[str, torch.Tensor]:
        return {m: self.loaded.model.encoders[m].patch_embed(x).double() for m, x in inputs.items()}

    def _distance(self, m: str, tokens: torch.Tensor) -> np.ndarray:
        mean, precision, scale = self.stats[m]
        diff = tokens - mean
        return (((diff @ precision) * diff).sum(-1).mean(1) / tokens.shape[-1] / scale).numpy()

    def distances(self, raw: RawBatch) -> Dict[str, np.ndarray]:
        out: Dict[str, list] = {}
        for inputs in self._inputs(raw):
            for m, t in self._tokens(inputs).items():
                out.setdefault(m, []).append(self._distance(m, t))
        return {m: np.concatenate(v) for m, v in out.items()}


def telephone(audio: np.ndarray) -> np.ndarray:
    """A telephone channel: 300-3400 Hz band-pass (4th-order Butterworth)."""
    sos = butter(4, [300, 3400], 'bandpass', fs=SAMPLE_RATE, output='sos')
    return sosfilt(sos, audio, axis=-1).astype(np.float32)


def replaced(raw: RawBatch, modality: str, data: np.ndarray) -> RawBatch:
    out = dict(raw)
    out[modality] = data
    return out


def synthetic_sets(n: int, avdigits) -> Dict[str, RawBatch]:
    test = load_dataset('synthetic', 'test', size=n).arrays
    sets = {'test split': test,
            'generator fov_deg 25 (not 60)': generate(n, seed=7, cfg=SyntheticConfig(fov_deg=25.0)),
            'depth readings x4': replaced(test, 'depth', test['depth'] * 4),
            'audio telephone band': replaced(test, 'audio', telephone(test['audio']))}
    if avdigits is not None:
        size = test['rgb'].shape[1]
        sets['MNIST digits as the camera'] = replaced(
            test, 'rgb', np.stack([cv2.resize(im, (size, size)) for im in avdigits['rgb'][:n]]))
        clips = avdigits['audio'][:n]
        length = test['audio'].shape[1]
        clips = np.pad(clips, ((0, 0), (0, max(0, length - clips.shape[1]))))[:, :length]
        sets['spoken digits as the microphone'] = replaced(test, 'audio', clips)
    return sets


def measure(dataset: str, samples: int, sets: Dict[str, RawBatch], calibration: RawBatch) -> Dict:
    density = TokenDensity(load_model(shipped_checkpoint(dataset), 'cpu'), take(calibration, np.arange(samples)))
    rows = {}
    for name, raw in sets.items():
        rows[name] = {m: {'median': round(float(np.median(d)), 3), 'p10': round(float(np.quantile(d, 0.1)), 3),
                          'p90': round(float(np.quantile(d, 0.9)), 3)}
                      for m, d in density.distances(raw).items()}
    return rows


def table(result: Dict) -> str:
    lines = ['| model | inputs | ' + ' | '.join(f'{m} median (p10-p90)' for m in ('rgb', 'depth', 'audio')) + ' |',
             '|---|---|---|---|---|']
    for dataset, rows in result['datasets'].items():
        for name, mods in rows.items():
            cells = [f"{mods[m]['median']:.2f} ({mods[m]['p10']:.2f}-{mods[m]['p90']:.2f})" if m in mods else '-'
                     for m in ('rgb', 'depth', 'audio')]
            lines.append(f'| {dataset} | {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--json', required=True)
    parser.add_argument('--samples', type=int, default=1000, help='training samples the density is fitted on')
    parser.add_argument('--test', type=int, default=256, help='samples per input set')
    args = parser.parse_args(argv)
    apply_threads(choose_threads('throughput'))
    try:
        avdigits = {split: load_dataset('avdigits', split).arrays for split in ('train', 'val', 'test')}
    except (FileNotFoundError, ValueError, OSError):
        avdigits = None
    result = {'samples': args.samples, 'test': args.test, 'quantile': QUANTILE, 'shrinkage': SHRINKAGE,
              'datasets': {'synthetic': measure('synthetic', args.samples,
                                                synthetic_sets(args.test, avdigits and avdigits['test']),
                                                load_dataset('synthetic', 'train', size=args.samples).arrays)}}
    if avdigits is not None:
        train = take(avdigits['train'], np.random.default_rng(0).permutation(len(avdigits['train']['label'])))
        test = avdigits['test']
        held = min(args.samples, len(train['label']) // 2)
        sets = {'training speakers (not fitted on)': take(train, np.arange(held, min(len(train['label']),
                                                                                   held + args.test))),
                'validation speaker': avdigits['val'], 'test speaker': test,
                'test speaker, telephone band': replaced(test, 'audio', telephone(test['audio']))}
        result['datasets']['avdigits'] = measure('avdigits', held, sets, train)
    text = table(result)
    write_result(result, args.json, text)
    print(text)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
