"""``admn data check``: what a folder dataset (or a bag, imported first) holds, and whether it is
consistent enough to train and evaluate on.

    admn data check folder:data/my_robot
    admn data check my_robot_bag --labels-csv labels.csv --splits train=0.7,val=0.15,test=0.15

Per split it counts records, labelled records and samples per class, the modalities, condition
tags, image sizes, depth validity (share of pixels with a reading, the median reading) and audio
sample rates and lengths, as recorded (before any resizing or resampling). Every record is read
with the folder loader's own reader (:mod:`admn_ros.datasets.folder`), so what it refuses here is
what training would refuse.

Refused (:attr:`CheckReport.problems`, the command exits 1), each with its reason:

- **unreadable record**: a file the loader cannot decode, two files for one modality, a label
  that is not a class, an unknown condition tag (the loader's own message);
- **modalities differ** between records of a split, or between splits;
- **labels on some records only** of a split;
- **a class without training samples** that other splits hold: the model could never predict it;
- **fewer than two classes** in a labelled training split;
- **image aspect ratios differ** within a split (a camera changed: the loader would stretch them);
- **depth in the wrong unit**: a split's median reading above :data:`DEPTH_MAX_PLAUSIBLE_M`
  (millimetres stored in ``depth.npy``) or below :data:`DEPTH_MIN_PLAUSIBLE_M` (metres stored in
  a millimetre ``depth.png``);
- **the same sample in two splits** (byte-identical data): a test score on it means nothing.

Reported, not refused (:attr:`CheckReport.notes`): no label at all (fine for pretraining), a
missing split, image sizes or audio rates that differ (resized / resampled on load), records
without any depth reading and no depth tag (a covered camera worth tagging), condition tags seen
in evaluation splits but never in training.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf

from admn_ros.datasets.bags import is_bag
from admn_ros.datasets.corruptions import CORRUPTION_TYPES
from admn_ros.datasets.folder import _read_record, read_classes
from admn_ros.datasets.sample import MODALITIES

DEPTH_MAX_PLAUSIBLE_M = 50.0
DEPTH_MIN_PLAUSIBLE_M = 0.05
_SHOWN = 3   # records named per problem


@dataclass
class SplitSummary:
    name: str
    records: int = 0
    labelled: int = 0
    classes: Counter = field(default_factory=Counter)         # class name -> records
    modalities: Counter = field(default_factory=Counter)      # modality tuple -> records
    conditions: Counter = field(default_factory=Counter)      # 'depth:blocked' -> records
    image_sizes: Dict[str, Counter] = field(default_factory=dict)   # modality -> (h, w) -> records
    depth_valid: List[float] = field(default_factory=list)    # per record: share of pixels read
    depth_median: List[float] = field(default_factory=list)   # per record with a reading: metres
    depth_empty_untagged: int = 0
    audio_rates: Counter = field(default_factory=Counter)
    audio_seconds: List[float] = field(default_factory=list)
    unreadable: List[str] = field(default_factory=list)
    digests: Dict[str, str] = field(default_factory=dict)     # sample digest -> record name

    def describe(self) -> List[str]:
        lines = [f'{self.name}: {self.records} records, {self.labelled} labelled'
                 + (f', {len(self.unreadable)} unreadable' if self.unreadable else '')]
        if self.classes:
            lines.append('  classes: ' + ', '.join(f'{c} {n}' for c, n in sorted(self.classes.items())))
        if self.modalities:
            lines.append('  modalities: ' + '; '.join(f'{"+".join(m) or "none"} ({n})'
                                                      for m, n in self.modalities.most_common()))
        tags = ', '.join(f'{c} {n}' for c, n in sorted(self.conditions.items()))
        lines.append(f'  condition tags: {tags or "none (all clean)"}')
        for m, sizes in self.image_sizes.items():
            lines.append(f'  {m} sizes (h x w): ' + ', '.join(f'{h}x{w} ({n})' for (h, w), n in sizes.most_common()))
        if self.depth_valid:
            valid = np.asarray(self.depth_valid)
            med = f', median reading {np.median(self.depth_median):.2f} m' if self.depth_median else ''
            lines.append(f'  depth: {valid.mean():.0%} of pixels read (min {valid.min():.0%} per record){med}'
                         + (f'; {int((valid == 0).sum())} records without any reading' if (valid == 0).any() else ''))
        if self.audio_rates:
            secs = np.asarray(self.audio_seconds)
            lines.append('  audio: ' + ', '.join(f'{r} Hz ({n})' for r, n in self.audio_rates.most_common())
                         + f'; {secs.min():.2f}-{secs.max():.2f} s')
        return lines


@dataclass
class CheckReport:
    root: Path
    class_names: List[str]
    splits: Dict[str, SplitSummary] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        lines = [f'{self.root}: {len(self.class_names)} classes in classes.txt'
                 + (f' ({", ".join(self.class_names)})' if self.class_names else '')]
        for s in self.splits.values():
            lines += s.describe()
        lines += [f'note: {n}' for n in self.notes]
        lines += [f'REFUSED: {p}' for p in self.problems]
        lines.append('consistent' if self.ok else f'inconsistent: {len(self.problems)} problem(s) above')
        return '\n'.join(lines)


def check_folder(root) -> CheckReport:
    """Summarise every split folder under ``root`` and list what makes it unusable."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'no dataset folder {root}')
    try:
        class_names = read_classes(root)
    except ValueError as exc:
        return CheckReport(root, [], problems=[str(exc)])
    report = CheckReport(root, class_names)
    order = ('train', 'val', 'test')
    splits = sorted((p for p in root.iterdir() if p.is_dir() and any(q.is_dir() for q in p.iterdir())),
                    key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
    if not splits:
        report.problems.append(f'{root} holds no split folder with records (expected train/, val/, test/)')
        return report
    for split in splits:
        report.splits[split.name] = _summarise(split, class_names)
    _judge(report)
    return report


def _summarise(split: Path, class_names: List[str]) -> SplitSummary:
    s = SplitSummary(split.name)
    for record in sorted(p for p in split.iterdir() if p.is_dir()):
        s.records += 1
        try:
            sample = _read_record(record, class_names)
        except ValueError as exc:
            s.unreadable.append(str(exc))
            continue
        mods = tuple(m for m in MODALITIES if m in sample)
        s.modalities[mods] += 1
        if 'label' in sample:
            s.labelled += 1
            s.classes[class_names[sample['label']]] += 1
        for m, (ctype, severity) in sample['conditions'].items():
            if severity > 0:
                s.conditions[f'{m}:{CORRUPTION_TYPES[m][ctype]}'] += 1
        for m in ('rgb', 'depth'):
            if m in sample:
                s.image_sizes.setdefault(m, Counter())[tuple(sample[m].shape[:2])] += 1
        if 'depth' in sample:
            d = sample['depth']
            read = np.isfinite(d) & (d > 0)
            s.depth_valid.append(float(read.mean()))
            if read.any():
                s.depth_median.append(float(np.median(d[read])))
            elif 'depth' not in sample['conditions']:
                s.depth_empty_untagged += 1
        if 'audio' in sample:
            info = sf.info(str(record / 'audio.wav'))
            s.audio_rates[int(info.samplerate)] += 1
            s.audio_seconds.append(float(info.duration))
        s.digests[_digest(sample, mods)] = record.name
    return s


def _digest(sample, mods) -> str:
    h = hashlib.sha256()
    for m in mods:
        h.update(np.ascontiguousarray(sample[m]).tobytes())
    return h.hexdigest()


def _aspect(size: Tuple[int, int]) -> float:
    return round(size[1] / size[0], 2)


def _judge(r: CheckReport) -> None:
    splits = r.splits
    for s in splits.values():
        for why in s.unreadable[:_SHOWN]:
            r.problems.append(f'{s.name}: unreadable record: {why}')
        if len(s.unreadable) > _SHOWN:
            r.problems.append(f'{s.name}: {len(s.unreadable) - _SHOWN} more unreadable records')
        if len(s.modalities) > 1:
            r.problems.append(f'{s.name}: records hold different modalities ('
                              + '; '.join(f'{"+".join(m)}: {n}' for m, n in s.modalities.most_common())
                              + '): every record of a split must hold the same ones')
        read = s.records - len(s.unreadable)
        if 0 < s.labelled < read:
            r.problems.append(f'{s.name}: {s.labelled} of {read} records labelled: label all records or none')
        for m, sizes in s.image_sizes.items():
            aspects = Counter()
            for size, n in sizes.items():
                aspects[_aspect(size)] += n
            if len(aspects) > 1:
                r.problems.append(f'{s.name}: {m} images of {len(aspects)} aspect ratios ('
                                  + ', '.join(f'{h}x{w}' for h, w in sizes) + '): the loader would '
                                  'stretch them to one size; crop them alike')
            elif len(sizes) > 1:
                r.notes.append(f'{s.name}: {m} images of {len(sizes)} sizes, one aspect ratio (resized on load)')
        if s.depth_median:
            median = float(np.median(s.depth_median))
            if median > DEPTH_MAX_PLAUSIBLE_M:
                r.problems.append(f'{s.name}: median depth reading {median:.0f} m: depth.npy holds metres '
                                  '(millimetres divided by 1000), depth.png millimetres')
            elif median < DEPTH_MIN_PLAUSIBLE_M:
                r.problems.append(f'{s.name}: median depth reading {median * 1000:.1f} mm: depth.png holds '
                                  'millimetres (16-bit), not metres')
        if s.depth_empty_untagged:
            r.notes.append(f'{s.name}: {s.depth_empty_untagged} records without any depth reading and no '
                           'depth tag (a covered camera? tag it: depth blocked)')
        if len(s.audio_rates) > 1:
            r.notes.append(f'{s.name}: audio at {len(s.audio_rates)} sample rates (resampled to 16 kHz on load)')
    # Across splits.
    mods = {name: next(iter(s.modalities)) for name, s in splits.items() if len(s.modalities) == 1}
    if len(set(mods.values())) > 1:
        r.problems.append('splits hold different modalities (' + '; '.join(
            f'{name}: {"+".join(m)}' for name, m in mods.items()) + '): a model trained on one split '
            'would miss or ignore a sensor on another')
    for name in ('train', 'val', 'test'):
        if name not in splits:
            r.notes.append(f'no {name} split' + (' (training needs train and val; admn eval needs test)'))
    labelled = [s for s in splits.values() if s.labelled]
    for s in splits.values():
        if not s.labelled and s.records > len(s.unreadable):
            r.notes.append(f'{s.name}: no labels (fine for pretraining; training and evaluation need them)')
    train = splits.get('train')
    if train is not None and train.labelled:
        if len(train.classes) < 2:
            r.problems.append(f'train: one class only ({", ".join(train.classes)}): nothing to tell apart')
        for s in labelled:
            if s is train:
                continue
            unseen = sorted(set(s.classes) - set(train.classes))
            if unseen:
                r.problems.append(f'{s.name}: classes without any training sample: {", ".join(unseen)} '
                                  '(a model can never predict them)')
        tags_train = set(train.conditions)
        for s in splits.values():
            new = sorted(set(s.conditions) - tags_train) if s is not train else []
            if new:
                r.notes.append(f'{s.name}: condition tags never seen in train: {", ".join(new)}')
    if r.class_names and labelled:
        unused = [c for c in r.class_names if not any(c in s.classes for s in labelled)]
        if unused:
            r.notes.append(f'classes.txt lists classes no record has: {", ".join(unused)}')
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = set(splits[a].digests) & set(splits[b].digests)
            if shared:
                example = next(iter(shared))
                r.problems.append(f'{len(shared)} samples of {b} are byte-identical to samples of {a} '
                                  f'(e.g. {b}/{splits[b].digests[example]} = {a}/{splits[a].digests[example]}): '
                                  'a score on them measures memory, not the model')


def check_dataset(spec: str, *, work: Optional[Path] = None, import_options: Optional[dict] = None):
    """``folder:PATH`` / a folder path -> :func:`check_folder`; a bag -> imported into ``work``
    (:func:`admn_ros.datasets.from_bag.import_bag` with ``import_options``) and then checked.
    Returns ``(report, import report or None)``."""
    path = Path(spec[len('folder:'):] if spec.startswith('folder:') else spec)
    if spec.startswith('folder:') or (path / 'classes.txt').is_file() or not is_bag(path):
        return check_folder(path), None
    from admn_ros.datasets.from_bag import import_bag
    if work is None:
        raise ValueError('checking a bag needs a folder to import it into')
    imported = import_bag(path, work, **(import_options or {}))
    return check_folder(work), imported
