"""The method plugin interface: what differs between long-tailed methods, and nothing else.

The trainer owns the loop. A method says which batches an epoch draws (`draws`), owns its
heads (it is an nn.Module, so they train and checkpoint with the backbone), computes the
loss of one step, and turns features into logits for evaluation.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class Draw:
    """One stream of batches per step: which sampler picks the images, how many augmented views."""

    sampler: str = "instance"  # instance | class_balanced | sqrt
    views: int = 1
    augment: str = "standard"


@dataclass
class Batch:
    views: list[torch.Tensor]  # `Draw.views` augmented float tensors of the same images
    labels: torch.Tensor


@dataclass(frozen=True)
class Progress:
    epoch: int  # 0-based
    epochs: int
    step: int
    steps: int

    @property
    def fraction(self) -> float:
        """Training progress in [0, 1), for schedules written in terms of epoch / T_max."""
        return (self.epoch + self.step / self.steps) / self.epochs


class Method(nn.Module):
    name: ClassVar[str]
    summary: ClassVar[str]  # one line, with the paper it comes from
    # The method's own hyperparameters with their paper defaults; every key is settable
    # with --set key=value.
    hyperparameters: ClassVar[dict] = {}
    # Trainer settings the paper protocol changes for this method (e.g. batch size, lr).
    trainer_defaults: ClassVar[dict] = {}
    draws: ClassVar[dict[str, Draw]] = {"main": Draw()}

    def __init__(self, hp: dict, class_counts: list[int], feature_dim: int):
        super().__init__()
        self.hp = hp
        self.register_buffer("class_counts", torch.tensor(class_counts, dtype=torch.float))
        self.num_classes = len(class_counts)
        self.feature_dim = feature_dim

    @classmethod
    def defaults(cls, family: str) -> dict:
        """Paper-protocol defaults for a dataset family; override to differ per family."""
        return {**cls.trainer_defaults, **cls.hyperparameters}

    def loss(self, backbone: nn.Module, batches: dict[str, Batch], progress: Progress) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LinearClassifierMethod(Method):
    """A backbone and one linear classifier trained on instance-sampled batches; subclasses
    only say how logits and labels become a loss."""

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = nn.Linear(feature_dim, self.num_classes)

    def logits(self, features):
        return self.classifier(features)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        logits = self.logits(backbone(batch.views[0]))
        return self.criterion(logits.float(), batch.labels, progress)

    def criterion(self, logits: torch.Tensor, labels: torch.Tensor, progress: Progress) -> torch.Tensor:
        raise NotImplementedError
