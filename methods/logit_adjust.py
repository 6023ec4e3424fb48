"""Logit adjustment (Menon et al., ICLR 2021): either train with the logit-adjusted loss
-log softmax(f(x) + tau log pi)_y, or correct a CE model post hoc with argmax f(x) - tau log pi."""

import torch.nn.functional as F

from ltbench.method import LinearClassifierMethod, Method
from ltbench_methods.ce import CrossEntropy
from ltbench.settings import Search, Setting
from ltbench_methods.common import POST_HOC, log_prior

# tau = 1 is the Bayes-optimal correction for the balanced error (the paper's Theorem 1)
TAU = Setting(1.0, "weight of the log prior: added to the logits in training (loss), subtracted at test (post hoc)",
              low=0, high=100, source="Menon et al. ICLR 2021, Theorem 1: tau = 1 is Bayes-optimal for the "
              "balanced error", search=Search(0.0, 2.0, source="ltbench default: from 0 (no adjustment) to 2, "
                                              "around Menon et al.'s Bayes-optimal tau = 1"))


def logit_adjusted_loss(logits, labels, class_counts, tau: float):
    # at tau = 1 this is Balanced Softmax: log pi_j and log n_j differ by a constant
    return F.cross_entropy(logits + tau * log_prior(class_counts), labels)


class LogitAdjustedLoss(LinearClassifierMethod):
    """Logit-adjusted loss, logits + tau log pi_j in training, tau = 1 (Menon et al., ICLR 2021)."""

    name, display_name = "logit_adjust", "LA loss"
    hyperparameters = {"tau": TAU}

    def criterion(self, logits, labels, progress):
        return logit_adjusted_loss(logits, labels, self.class_counts.to(logits.device), self.hp["tau"])


class PostHocLogitAdjustment(Method):
    """Post-hoc logit adjustment of a CE model, f(x) - tau log pi_j, tau = 1 (Menon et al., ICLR 2021)."""

    name, display_name = "logit_adjust_posthoc", "LA post-hoc"
    stage1 = CrossEntropy
    hyperparameters = {"tau": TAU}

    def load_stage1(self, stage1):
        self.classifier = stage1.classifier.requires_grad_(False)

    def stage2(self):
        return POST_HOC

    def logits(self, features):
        return self.classifier(features) - self.hp["tau"] * log_prior(self.class_counts)
