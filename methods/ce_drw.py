"""Cross-entropy with deferred re-weighting (Cao et al., NeurIPS 2019): LDAM-DRW's schedule
without its margins, so the effect of DRW alone can be measured."""

import torch.nn.functional as F

from ltbench.method import LinearClassifierMethod
from ltbench_methods.common import check_drw, drw_weights


class CrossEntropyDRW(LinearClassifierMethod):
    name = "ce_drw"
    summary = "CE with deferred re-weighting by effective number from 80 % of training (Cao et al., NeurIPS 2019)"
    hyperparameters = {"drw_beta": 0.9999, "drw_start": 0.8}

    @classmethod
    def check(cls, params):
        check_drw(params)

    def criterion(self, logits, labels, progress):
        weight = drw_weights(self.class_counts, self.hp["drw_beta"], progress.epoch, progress.epochs, self.hp["drw_start"])
        return F.cross_entropy(logits, labels, weight=weight.to(logits))
