"""Cross-entropy with deferred re-weighting (Cao et al., NeurIPS 2019): LDAM-DRW's schedule
without its margins, so the effect of DRW alone can be measured."""

import torch.nn.functional as F

from ltbench.method import LDAM_INIT, LinearClassifierMethod, classifier_init
from ltbench_methods.common import CAO_INAT_DRW, CAO_INAT_TRAINER, DRW_SETTINGS, deferred_weights, with_dataset_defaults


class CrossEntropyDRW(LinearClassifierMethod):
    """CE with deferred re-weighting by effective number from 80 % of training (Cao et al., NeurIPS 2019)."""

    name, display_name = "ce_drw", "CE-DRW"
    hyperparameters = {**DRW_SETTINGS, "classifier_init": classifier_init("kaiming_normal", LDAM_INIT)}
    # Cao et al.'s iNaturalist protocol, whose Table 3 reports ERM with DRW
    dataset_trainer_defaults = CAO_INAT_TRAINER

    @classmethod
    def settings(cls, dataset):
        return with_dataset_defaults(super().settings(dataset), dataset, CAO_INAT_DRW)

    def criterion(self, logits, labels, progress):
        weight = deferred_weights(self, progress)
        return F.cross_entropy(logits, labels, weight=weight.to(logits))
