"""Task heads on the pooled fusion feature. Pluggable: register a class in ``HEADS``."""
from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """LayerNorm + linear to class logits; trained with cross-entropy."""

    def __init__(self, dim: int, num_outputs: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Class indices, or class probabilities (a teacher's soft target) of the output's shape."""
        return nn.functional.cross_entropy(output, target)

    @staticmethod
    def soft_target(output: torch.Tensor) -> torch.Tensor:
        """What a student is trained towards in self-distillation: the class probabilities."""
        return output.softmax(-1)

    @staticmethod
    def metric(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample score (1 = correct)."""
        return (output.argmax(-1) == target).float()


class RegressionHead(nn.Module):
    """MLP to a vector (e.g. a 2-D position for localisation); trained with a smooth L1 loss."""

    def __init__(self, dim: int, num_outputs: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.smooth_l1_loss(output, target.to(output.dtype))

    @staticmethod
    def soft_target(output: torch.Tensor) -> torch.Tensor:
        return output

    @staticmethod
    def metric(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample negative Euclidean error (higher is better, like accuracy)."""
        return -(output - target.to(output.dtype)).norm(dim=-1)


HEADS = {'classification': ClassificationHead, 'regression': RegressionHead}


def build_head(kind: str, dim: int, num_outputs: int) -> nn.Module:
    if kind not in HEADS:
        raise ValueError(f'unknown head {kind!r}; known: {sorted(HEADS)}')
    return HEADS[kind](dim, num_outputs)
