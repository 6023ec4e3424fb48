"""PSC-hybrid (Wang et al., CVPR 2021): the hybrid network with the prototypical supervised
contrastive loss as its feature branch. Every embedding is contrasted against one learnable,
normalised prototype per class instead of against the rest of the batch:

    L_PSC(z_i) = -log( exp(z_i . p_{y_i} / tau) / sum_{j != y_i} exp(z_i . p_j / tau) )

so a step costs O(batch x classes) memory, not O(batch^2).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.settings import Setting, with_default
from ltbench_methods.hybrid import PAPER, TEMPERATURE_SEARCH, HybridNetwork


def prototypical_supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
                                             temperature: float, positive_in_denominator: bool = False) -> torch.Tensor:
    """Mean of L_PSC over the embeddings. The paper's denominator leaves the positive
    prototype out; with it in, the loss is cross-entropy on cosine logits / tau."""
    logits = embeddings @ F.normalize(prototypes, dim=1).T / temperature
    positive = logits.gather(1, labels[:, None]).squeeze(1)
    if not positive_in_denominator:
        logits = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return (logits.logsumexp(dim=1) - positive).mean()


class PSCLoss(nn.Module):
    """The loss and the prototypes it learns, one per class. The paper does not say how the
    prototypes start: here at random, normalised in the loss."""

    def __init__(self, num_classes: int, dim: int, temperature: float, positive_in_denominator: bool = False):
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_classes, dim))
        self.temperature = temperature
        self.positive_in_denominator = positive_in_denominator

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return prototypical_supervised_contrastive_loss(embeddings, labels, self.prototypes.float(), self.temperature,
                                                        self.positive_in_denominator)


class PSCHybrid(HybridNetwork):
    """Hybrid network: prototypical supervised contrastive features + class-balanced CE (Wang et al., CVPR 2021)."""

    name, display_name = "psc_hybrid", "PSC-hybrid"
    hyperparameters = {
        **HybridNetwork.hyperparameters,
        "temperature": Setting(0.1, "temperature of the prototypical contrastive loss (1.0 on 10-class data)",
                               above=0, high=100, source=f"{PAPER}: tau = 0.1 on CIFAR-100 in the PSC loss",
                               search=TEMPERATURE_SEARCH),
        "positive_in_denominator": Setting(False, "keep the positive prototype in the softmax's denominator",
                                           source="Wang et al. CVPR 2021, the PSC loss: the denominator runs over "
                                           "j != y_i"),
    }

    @classmethod
    def settings(cls, dataset):
        # the paper's tau is 1.0 on CIFAR-10 and 0.1 on CIFAR-100; keyed on the number of
        # classes, so 10-class Fashion-MNIST-LT takes CIFAR-10's
        own = super().settings(dataset)
        if dataset.num_classes > 10:
            return own
        return {**own, "temperature": with_default(own["temperature"], 1.0, f"{PAPER}: tau = 1 on CIFAR-10")}

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.psc = PSCLoss(self.num_classes, hp["projection_dim"], hp["temperature"], hp["positive_in_denominator"])

    def feature_loss(self, embeddings, labels):
        return self.psc(embeddings, labels)
