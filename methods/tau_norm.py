"""tau-normalisation (Kang et al., ICLR 2020): keep a CE run's backbone and classifier and
rescale each class's weights, w_j / ||w_j||^tau, so head classes no longer win on weight norm.

tau is chosen on training images, never on the test set: a class-balanced slice of the
training set (the same number of images from every class, at most as many as the rarest
class has), by balanced accuracy. Those images were seen in stage 1, so on a model that has
memorised its tail the choice leans towards small tau; the chosen tau is recorded with the
result so this stays visible.
"""

import numpy as np
import torch
from torch import nn

from ltbench.method import Method
from ltbench.metrics import ClassCounts
from methods.ce import CrossEntropy
from methods.common import require


def balanced_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` images of every class (fewer if the rarest class has fewer)."""
    classes, counts = np.unique(labels, return_counts=True)
    k = min(per_class, int(counts.min()))
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c in classes]))


class TauNormalisation(Method):
    name = "tau_norm"
    summary = "tau-normalised CE classifier, w_j/||w_j||^tau, tau chosen on balanced training images (Kang et al., ICLR 2020)"
    stage1 = CrossEntropy
    # classifier-balancing's tau_norm.py sweeps tau over 0..2 in steps of 0.1
    hyperparameters = {"tau_grid": [round(0.1 * i, 1) for i in range(21)], "tau_per_class": 100}

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = nn.Linear(feature_dim, self.num_classes).requires_grad_(False)
        self.register_buffer("tau", torch.tensor(1.0))

    @classmethod
    def check(cls, params):
        grid = params["tau_grid"]
        require(len(grid) > 0 and min(grid) >= 0, f"tau_grid must be non-negative values, got {grid}",
                hint="e.g. --set tau_grid=0.5,1.0,1.5, or one value to fix tau")
        require(params["tau_per_class"] >= 1, f"tau_per_class must be at least 1, got {params['tau_per_class']}")

    def load_stage1(self, stage1):
        self.classifier.load_state_dict(stage1.classifier.state_dict())

    def stage2(self):
        return {"epochs": 0, "batch_size": 512}

    def normalised_weights(self, tau) -> torch.Tensor:
        weight = self.classifier.weight
        return weight / weight.norm(dim=1, keepdim=True).pow(tau)

    def logits(self, features):
        # no bias: classifier-balancing's tau_norm.py scores with the normalised weights alone
        return features @ self.normalised_weights(self.tau).T

    @torch.no_grad()
    def calibrate(self, trainer):
        data = trainer.data
        idx = balanced_subset(data.train_y, self.hp["tau_per_class"], trainer.seed)
        features = trainer.features(data.train_x[idx], data.train_y[idx])
        labels = torch.from_numpy(data.train_y[idx]).to(features.device)
        scores = []
        for tau in self.hp["tau_grid"]:
            predictions = (features @ self.normalised_weights(tau).float().T).argmax(1)
            scores.append(float(np.nanmean(ClassCounts.from_predictions(predictions, labels, self.num_classes).per_class)))
        best = int(np.argmax(scores))  # ties go to the first in grid order
        self.tau.fill_(self.hp["tau_grid"][best])
        return {"tau": self.hp["tau_grid"][best], "selection": "balanced accuracy on training images",
                "images_per_class": len(idx) // self.num_classes, "balanced_accuracy": round(scores[best], 2)}
