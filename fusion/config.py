"""Model configuration: plain dataclasses, serialisable to a dict and back (checkpoints, YAML)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Dict, Tuple


@dataclass
class EncoderConfig:
    """One modality's adaptive-depth ViT encoder."""

    in_chans: int = 3
    input_size: Tuple[int, int] = (64, 64)
    patch_size: int = 8
    dim: int = 128
    depth: int = 12
    heads: int = 4
    mlp_ratio: float = 4.0
    # 'patch': one strided conv (ViT). 'conv': two 3x3 stride-2 convs before it (a convolutional
    # stem), which makes a ViT trained from scratch on small data learn far faster.
    stem: str = 'patch'

    @property
    def stem_widths(self) -> Tuple[int, int]:
        """Channels of the conv stem's two stride-2 convs (``stem='conv'``)."""
        return (self.dim // 4, self.dim // 2)

    @property
    def num_patches(self) -> int:
        h, w = self.input_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f'input_size {self.input_size} is not divisible by patch_size {self.patch_size}')
        return (h // self.patch_size) * (w // self.patch_size)

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1  # + CLS


def _default_encoders() -> Dict[str, EncoderConfig]:
    # Shapes match datasets.preprocess defaults: 64x64 images, 64 mels x 64 frames of log-mel.
    return {
        'rgb': EncoderConfig(in_chans=3),
        'depth': EncoderConfig(in_chans=1),
        'audio': EncoderConfig(in_chans=1),
    }


@dataclass
class ModelConfig:
    """The whole ADMN model: per-modality encoders, adapters, fusion transformer and task head."""

    encoders: Dict[str, EncoderConfig] = field(default_factory=_default_encoders)
    adapter_hidden: int = 256
    fusion_dim: int = 128
    fusion_depth: int = 2
    fusion_heads: int = 4
    head: str = 'classification'
    num_classes: int = 10

    @property
    def modalities(self) -> Tuple[str, ...]:
        return tuple(self.encoders)

    @property
    def depth(self) -> int:
        depths = {e.depth for e in self.encoders.values()}
        if len(depths) != 1:
            raise ValueError(f'all encoders must share one depth, got {depths}')
        return depths.pop()

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'ModelConfig':
        data = dict(data)
        encoders = {m: from_dict(EncoderConfig, e) for m, e in data.pop('encoders', {}).items()}
        cfg = from_dict(cls, data)
        if encoders:
            cfg.encoders = encoders
        cfg.depth  # validate
        return cfg


def from_dict(cls, data: Dict[str, Any]):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys and recursing into dataclass fields."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f'{cls.__name__}: expected a mapping, got {type(data).__name__}')
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f'{cls.__name__}: unknown keys {sorted(unknown)}; known: {sorted(known)}')
    kwargs = {}
    default = cls()
    for name, value in data.items():
        current = getattr(default, name)
        if is_dataclass(current) and isinstance(value, dict):
            value = from_dict(type(current), value) if not hasattr(type(current), 'from_dict') \
                else type(current).from_dict(value)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
