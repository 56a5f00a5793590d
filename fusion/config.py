"""Model configuration: plain dataclasses, serialisable to a dict and back (checkpoints, YAML)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Dict, Tuple

from admn_ros.fusion.validate import ConfigError, Each, at_least, build, one_of, positive


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
    # LayerShuffle (fusion/layershuffle.py): width of a learned embedding of the position a block
    # runs at, projected into the tokens before it (0 = none); per-block heads that predict it.
    position_embed_dim: int = 0
    position_head: bool = False
    # LayerCollapse (fusion/collapse.py): blocks whose MLP activation is a PReLU with one learned
    # slope, and blocks whose MLP has been merged into one linear layer.
    prelu_blocks: Tuple[int, ...] = ()
    collapsed_blocks: Tuple[int, ...] = ()

    LIMITS: ClassVar[dict] = {'in_chans': at_least(1), 'patch_size': at_least(1),
                              'dim': at_least(1), 'depth': at_least(1), 'heads': at_least(1),
                              'mlp_ratio': positive(), 'stem': one_of('patch', 'conv'),
                              'position_embed_dim': at_least(0),
                              'prelu_blocks': Each(at_least(0)), 'collapsed_blocks': Each(at_least(0))}

    def check(self) -> None:
        if min(self.input_size) < 1:
            raise ConfigError('input_size', list(self.input_size), 'two integers >= 1')
        if self.input_size[0] % self.patch_size or self.input_size[1] % self.patch_size:
            raise ConfigError('patch_size', self.patch_size,
                              f'a divisor of input_size {list(self.input_size)}')
        if self.dim % self.heads:
            raise ConfigError('heads', self.heads, f'a divisor of dim {self.dim}')
        for key in ('prelu_blocks', 'collapsed_blocks'):
            blocks = getattr(self, key)
            if any(b >= self.depth for b in blocks) or len(set(blocks)) != len(blocks):
                raise ConfigError(key, list(blocks), f'distinct block indices below depth {self.depth}')
        if set(self.prelu_blocks) & set(self.collapsed_blocks):
            raise ConfigError('collapsed_blocks', list(self.collapsed_blocks),
                              'blocks not also in prelu_blocks')

    def mlp_kind(self, block: int) -> str:
        """The MLP of block ``block`` (:data:`admn_ros.fusion.blocks.MLP_KINDS`)."""
        if block in self.collapsed_blocks:
            return 'linear'
        return 'prelu' if block in self.prelu_blocks else 'gelu'

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

    LIMITS: ClassVar[dict] = {'adapter_hidden': at_least(1), 'fusion_dim': at_least(1),
                              'fusion_depth': at_least(0), 'fusion_heads': at_least(1),
                              'head': one_of('classification'), 'num_classes': at_least(1)}

    def check(self) -> None:
        if not self.encoders:
            raise ConfigError('encoders', {}, 'at least one modality')
        depths = {e.depth for e in self.encoders.values()}
        if len(depths) != 1:
            raise ConfigError('encoders', {m: e.depth for m, e in self.encoders.items()},
                              'one depth shared by every encoder')
        if self.fusion_dim % self.fusion_heads:
            raise ConfigError('fusion_heads', self.fusion_heads,
                              f'a divisor of fusion_dim {self.fusion_dim}')

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
        return from_dict(cls, data)


def from_dict(cls, data: Dict[str, Any]):
    """Build dataclass ``cls`` from a dict: unknown keys, types and limits checked
    (:func:`admn_ros.fusion.validate.build`), nested dataclass fields built alike."""
    return build(cls, data)
