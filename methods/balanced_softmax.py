"""Balanced Softmax (Ren et al., NeurIPS 2020): the softmax of the training distribution,
phi_j = n_j exp(eta_j) / sum_i n_i exp(eta_i), so the plain softmax is balanced at test time."""

import torch.nn.functional as F

from ltbench.method import LinearClassifierMethod


def balanced_softmax_loss(logits, labels, class_counts):
    return F.cross_entropy(logits + class_counts.log(), labels)


class BalancedSoftmax(LinearClassifierMethod):
    """Balanced Softmax, logits shifted by log n_j in training (Ren et al., NeurIPS 2020)."""

    name, display_name = "balanced_softmax", "Balanced Softmax"

    def criterion(self, logits, labels, progress):
        return balanced_softmax_loss(logits, labels, self.class_counts.to(logits.device))
