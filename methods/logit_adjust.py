"""Logit adjustment (Menon et al., ICLR 2021): either train with the logit-adjusted loss
-log softmax(f(x) + tau log pi)_y, or correct a CE model post hoc with argmax f(x) - tau log pi.
Post hoc, tau is the paper's 1 unless `tau_grid` names taus to choose from, by balanced
accuracy on the validation split (never the test set)."""

import torch
import torch.nn.functional as F

from ltbench.method import LinearClassifierMethod, Method
from ltbench.settings import Search, Setting
from ltbench.stages import STAGE1_EPOCH
from ltbench_methods.ce import CrossEntropy
from ltbench_methods.common import POST_HOC, choose_on_validation, log_prior, require

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
    """Post-hoc logit adjustment of a CE model, f(x) - tau log pi_j, tau 1 or chosen on validation (Menon et al. 2021)."""

    name, display_name = "logit_adjust_posthoc", "LA post-hoc"
    stage1 = CrossEntropy
    hyperparameters = {
        "tau": TAU,
        "stage1_epoch": STAGE1_EPOCH,
        # unset by default: Table 3's post-hoc row is tau = 1, which needs no choice
        "tau_grid": Setting(None, "taus to choose from by balanced accuracy on the validation split, e.g. "
                            "0,0.25,...,2; unset: tau as set", optional=True, dtype=list, item_type=float, low=0,
                            high=100, source="ltbench's rule: the choice Menon et al.'s Theorem 1 makes unnecessary "
                            "in theory, made on validation where asked for"),
    }

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.register_buffer("tau", torch.tensor(float(hp["tau"])))

    @classmethod
    def check(cls, params):
        require(params.get("tau_grid") is None or len(params["tau_grid"]) > 0, "tau_grid is empty",
                hint="e.g. --set logit_adjust_posthoc.tau_grid=0.5,1.0,1.5, or leave it unset for tau")

    def load_stage1(self, stage1):
        self.classifier = stage1.classifier.requires_grad_(False)

    def stage2(self):
        return POST_HOC

    def adjusted(self, logits, tau):
        return logits - tau * log_prior(self.class_counts).to(logits.device)

    def logits(self, features):
        return self.adjusted(self.classifier(features), self.tau)

    def calibrate(self, trainer):
        if self.hp.get("tau_grid") is None:
            return {"tau": self.hp["tau"], "selection": "fixed (tau_grid unset)"}
        chosen = choose_on_validation(trainer, self, "tau", self.hp["tau_grid"],
                                      lambda features, tau: self.adjusted(self.classifier(features).float(), tau))
        self.tau.fill_(chosen["tau"])
        return chosen
