"""Focal loss (Lin et al., ICCV 2017): FL(p_t) = -(1 - p_t)^gamma log p_t."""

import torch.nn.functional as F

from ltbench.method import LDAM_INIT, LinearClassifierMethod, classifier_init
from ltbench.settings import Search, Setting


def focal_loss(logits, labels, gamma: float):
    log_pt = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    return (-((1 - log_pt.exp()) ** gamma) * log_pt).mean()


class Focal(LinearClassifierMethod):
    """Focal loss, down-weights easy examples (Lin et al., ICCV 2017)."""

    name, display_name = "focal", "Focal"
    hyperparameters = {
        "gamma": Setting(1.0, "focusing parameter: (1 - p_t)^gamma down-weights easy examples", low=0, high=100,
                         source="LDAM-DRW cifar_train.py: FocalLoss(weight=per_cls_weights, gamma=1)",
                         search=Search(0.0, 5.0, source="Lin et al. ICCV 2017 Table 1b: gamma 0 (cross-entropy), "
                                       "0.1, 0.2, 0.5, 1, 2, 5 on COCO")),
        "classifier_init": classifier_init("kaiming_normal", LDAM_INIT),
    }

    def criterion(self, logits, labels, progress):
        return focal_loss(logits, labels, self.hp["gamma"])
