"""Cross-entropy on instance-sampled batches: the baseline every long-tailed paper reports."""

import torch.nn.functional as F

from ltbench.method import LDAM_INIT, LinearClassifierMethod, classifier_init


class CrossEntropy(LinearClassifierMethod):
    """Cross-entropy with instance sampling (baseline; protocol of Cao et al., NeurIPS 2019)."""

    name, display_name = "ce", "CE"
    hyperparameters = {"classifier_init": classifier_init("kaiming_normal", LDAM_INIT)}

    def criterion(self, logits, labels, progress):
        return F.cross_entropy(logits, labels)
