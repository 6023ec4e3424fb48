"""Top-1, per-class accuracy and many/medium/few, from per-class correct/total counts.

Counts rather than accuracies are what a run keeps, so results from several processes or
evaluation shards add up exactly.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ltbench.data.profiles import many_medium_few

GROUPS = ("many", "medium", "few")


@dataclass
class ClassCounts:
    correct: np.ndarray  # per class
    total: np.ndarray

    @classmethod
    def from_predictions(cls, predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> "ClassCounts":
        hits = (predictions == labels).double()
        correct = torch.bincount(labels, weights=hits, minlength=num_classes)
        total = torch.bincount(labels, minlength=num_classes)
        return cls(correct.cpu().numpy().astype(np.int64), total.cpu().numpy().astype(np.int64))

    def __add__(self, other: "ClassCounts") -> "ClassCounts":
        return ClassCounts(self.correct + other.correct, self.total + other.total)

    @property
    def top1(self) -> float:
        return 100.0 * self.correct.sum() / max(self.total.sum(), 1)

    @property
    def per_class(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * self.correct / self.total


def group_accuracy(counts: ClassCounts, class_counts, convention: str = "cb") -> dict[str, float | None]:
    """Mean per-class accuracy of each group (classifier-balancing's `shot_acc`); None for an
    empty group, or one none of whose classes had a test image, which a report must show as
    empty rather than as 0 %."""
    groups = np.array(many_medium_few(class_counts, convention))
    acc = counts.per_class
    evaluated = ~np.isnan(acc)  # a class without test images has no accuracy
    return {g: (float(acc[mask].mean()) if (mask := (groups == g) & evaluated).any() else None) for g in GROUPS}


def group_sizes(class_counts, convention: str = "cb") -> dict[str, int]:
    groups = many_medium_few(class_counts, convention)
    return {g: groups.count(g) for g in GROUPS}
