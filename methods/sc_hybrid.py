"""SC-hybrid (Wang et al., CVPR 2021): the hybrid network with the supervised contrastive
loss of Khosla et al. (NeurIPS 2020) as its feature branch.

    L_SC(z_i) = -1 / |P(i)| * sum_{p in P(i)} log( exp(z_i . z_p / tau) / sum_{a != i} exp(z_i . z_a / tau) )

over the 2N embeddings of a batch's two views; P(i) are the other embeddings with z_i's
label (its own second view among them), and the denominator runs over every other
embedding, positives included (Khosla et al.'s L^sup_out).

SupContrast's code multiplies this loss by temperature / base_temperature (losses.py L95,
base_temperature 0.07 at L15): 1 at SupCon's own temperature 0.07, 0.1 / 0.07 = 1.43 at the
hybrid's 0.1. Neither the hybrid paper's L_SC nor Khosla et al.'s equation has that factor, and
the hybrid paper's code is not public, so the default leaves it out (`base_temperature` unset:
a factor of 1). It is not a harmless rescaling here: in alpha * L_SC + (1 - alpha) * L_CE it
weighs the feature branch 1.43 times more against the classifier branch.
`--set base_temperature=0.07` gives SupContrast's code.
"""

import torch
from torch import nn

from ltbench import distributed
from ltbench.settings import Setting
from ltbench_methods.hybrid import PAPER, TEMPERATURE_SEARCH, HybridNetwork


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean of L_SC over the anchors that have a positive. An anchor alone with its label has
    no term to average (SupCon's code divides by zero there), so it adds nothing, though it
    still serves the other anchors as a negative. Memory: the (2N, 2N) similarity matrix."""
    n = len(labels)
    self_pair = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    logits = (embeddings @ embeddings.T / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_pair
    n_positives = positives.sum(dim=1)
    anchors = n_positives > 0
    if not anchors.any():
        return embeddings.sum() * 0.0
    mean_log_prob_positive = log_prob.masked_fill(~positives, 0.0).sum(dim=1)[anchors] / n_positives[anchors]
    return -mean_log_prob_positive.mean()


def supervised_contrastive_loss_across_ranks(embeddings: torch.Tensor, labels: torch.Tensor,
                                             temperature: float) -> torch.Tensor:
    """L_SC of this rank's anchors against every rank's embeddings (gathered with their
    gradient), so that a data-parallel run optimises the one-device loss of the global batch;
    this rank's anchors are rows first .. first + n of the gathered batch. Memory: a
    (2N/W, 2N) similarity matrix per rank; communication: an all-gather of the embeddings
    and an all-reduce of their gradient, 2N x d each."""
    contrast, first = distributed.gather_with_grad(embeddings)
    contrast_labels = distributed.gather(labels)
    n = len(labels)
    rows = torch.arange(n, device=embeddings.device)
    self_pair = torch.zeros(n, len(contrast_labels), dtype=torch.bool, device=embeddings.device)
    self_pair[rows, first + rows] = True
    logits = (embeddings @ contrast.T / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (labels[:, None] == contrast_labels[None, :]) & ~self_pair
    n_positives = positives.sum(dim=1)
    anchors = n_positives > 0
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(dim=1)[anchors] / n_positives[anchors]
    return distributed.anchor_mean(per_anchor)  # over all ranks' anchors that have a positive


class SupConLoss(nn.Module):
    """L_SC, times temperature / base_temperature where a base temperature is given (SupContrast's
    losses.py L95); unset, times 1, as the equations have it."""

    def __init__(self, temperature: float = 0.1, base_temperature: float | None = None):
        super().__init__()
        self.temperature = temperature
        self.scale = 1.0 if base_temperature is None else temperature / base_temperature

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if distributed.is_distributed():
            loss = supervised_contrastive_loss_across_ranks(embeddings, labels, self.temperature)
        else:
            loss = supervised_contrastive_loss(embeddings, labels, self.temperature)
        return self.scale * loss if self.scale != 1.0 else loss


class SCHybrid(HybridNetwork):
    """Hybrid network: supervised contrastive features + class-balanced CE classifier (Wang et al., CVPR 2021)."""

    name, display_name = "sc_hybrid", "SC-hybrid"
    hyperparameters = {
        **HybridNetwork.hyperparameters,
        "temperature": Setting(0.1, "temperature of the supervised contrastive loss", above=0, high=100,
                               source=f"{PAPER}: tau = 0.1 in the SC loss", search=TEMPERATURE_SEARCH),
        # see the module docstring for why unset is the default
        "base_temperature": Setting(None, "SupContrast's base temperature: the loss is scaled by temperature / "
                                    "base_temperature; unset: not scaled, as the paper's equation", dtype=float,
                                    optional=True, above=0, high=100,
                                    source="Wang et al. CVPR 2021, L_SC has no such factor; SupContrast losses.py "
                                    "L15, L95 (0.07) is the code that has it"),
    }

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.supcon = SupConLoss(hp["temperature"], hp["base_temperature"])

    def feature_loss(self, embeddings, labels):
        return self.supcon(embeddings, labels)
