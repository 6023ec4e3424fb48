"""Cross-entropy with deferred re-weighting (Cao et al., NeurIPS 2019): LDAM-DRW's schedule
without its margins, so the effect of DRW alone can be measured."""

import torch.nn.functional as F

from ltbench.method import LDAM_INIT, LinearClassifierMethod, classifier_init
from ltbench_methods.common import DRW_SETTINGS, drw_weights


class CrossEntropyDRW(LinearClassifierMethod):
    name = "ce_drw"
    display_name = "CE-DRW"
    summary = "CE with deferred re-weighting by effective number from 80 % of training (Cao et al., NeurIPS 2019)"
    hyperparameters = {**DRW_SETTINGS, "classifier_init": classifier_init("kaiming_normal", LDAM_INIT)}

    def criterion(self, logits, labels, progress):
        weight = drw_weights(self.class_counts, self.hp["drw_beta"], progress.epoch, progress.epochs, self.hp["drw_start"])
        return F.cross_entropy(logits, labels, weight=weight.to(logits))
