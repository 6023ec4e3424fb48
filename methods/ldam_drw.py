"""LDAM (Cao et al., NeurIPS 2019): label-distribution-aware margins on a cosine classifier,
alone or with deferred re-weighting (DRW), following kaidic/LDAM-DRW `losses.py`."""

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.method import LinearClassifierMethod
from ltbench.settings import Search, Setting
from ltbench_methods.common import (CAO_INAT_DRW, CAO_INAT_MARGIN, CAO_INAT_TRAINER, DRW_SETTINGS, NormedLinear,
                                    deferred_weights, with_dataset_defaults)


class LDAMLoss(nn.Module):
    """CE(s * (cos - m_y 1_y), y) with m_j = C / n_j^(1/4), C such that the largest m_j is max_margin."""

    def __init__(self, class_counts: torch.Tensor, max_margin: float = 0.5, scale: float = 30.0):
        super().__init__()
        margins = 1.0 / class_counts.double().pow(0.25)
        self.register_buffer("margins", (margins * (max_margin / margins.max())).float())
        self.scale = scale

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None):
        # the margin comes off the target cosine before the scale multiplies everything
        target = F.one_hot(labels, cosine.shape[1]).bool()
        adjusted = torch.where(target, cosine - self.margins[labels, None], cosine)
        return F.cross_entropy(self.scale * adjusted, labels, weight=weight)


class LDAM(LinearClassifierMethod):
    """LDAM loss, margins ~ n_j^(-1/4) on a cosine classifier, no re-weighting (Cao et al., NeurIPS 2019)."""

    name, display_name = "ldam", "LDAM"
    hyperparameters = {
        "max_margin": Setting(0.5, "the largest class margin (the rarest class's)", above=0, high=10,
                              source="LDAM-DRW cifar_train.py: LDAMLoss(max_m=0.5, s=30)",
                              search=Search(0.1, 1.0, log=True, source="ltbench default: Cao et al. tune C to a largest "
                                            "margin of 0.5 (CIFAR-LT, cifar_train.py max_m=0.5) and of 0.3 (iNaturalist, "
                                            "App. B); log-uniform over the decade 0.1 .. 1 that holds both")),
        "scale": Setting(30.0, "s, the scale of the cosine logits", above=0, high=1000,
                         source="LDAM-DRW cifar_train.py: LDAMLoss(max_m=0.5, s=30)"),
    }

    dataset_trainer_defaults = CAO_INAT_TRAINER

    @classmethod
    def settings(cls, dataset):
        return with_dataset_defaults(super().settings(dataset), dataset, CAO_INAT_MARGIN)

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = NormedLinear(feature_dim, self.num_classes)
        self.ldam = LDAMLoss(self.class_counts, hp["max_margin"], hp["scale"])

    def criterion(self, logits, labels, progress):
        return self.ldam(logits, labels)


class LDAMDRW(LDAM):
    """LDAM with deferred re-weighting by effective number from 80 % of training (Cao et al., NeurIPS 2019)."""

    name, display_name = "ldam_drw", "LDAM-DRW"
    hyperparameters = {**LDAM.hyperparameters, **DRW_SETTINGS}

    @classmethod
    def settings(cls, dataset):
        return with_dataset_defaults(super().settings(dataset), dataset, CAO_INAT_DRW)

    def criterion(self, logits, labels, progress):
        weight = deferred_weights(self, progress)
        return self.ldam(logits, labels, weight.to(logits.device))
