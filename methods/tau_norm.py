"""tau-normalisation (Kang et al., ICLR 2020): keep a CE run's backbone and classifier and
rescale each class's weights, w_j / ||w_j||^tau, so head classes no longer win on weight norm.

tau is chosen by balanced accuracy on the dataset's validation split (ltbench.data.datasets),
never on the test set, nor on training images: stage 1 has fit those, and a choice made on
them leans towards small tau. The result records the choice and what it was made on.
"""

import torch
from torch import nn

from ltbench.method import Method
from ltbench_methods.ce import CrossEntropy
from ltbench.settings import Setting
from ltbench.stages import STAGE1_EPOCH
from ltbench_methods.common import POST_HOC, choose_on_validation, require


class TauNormalisation(Method):
    """tau-normalised CE classifier, w_j/||w_j||^tau, tau chosen on validation (Kang et al., ICLR 2020)."""

    name, display_name = "tau_norm", "tau-norm"
    stage1 = CrossEntropy
    # classifier-balancing's tau_norm.py sweeps tau over 0..2 in steps of 0.1; it prints every
    # tau's accuracy on the split it is given (--type, test by default) and leaves the choice to
    # the reader: the choice on validation is ltbench's
    hyperparameters = {
        "tau_grid": Setting([round(0.1 * i, 1) for i in range(21)], "the taus tried on validation; one value fixes "
                            "tau", low=0, high=100,
                            source="classifier-balancing tau_norm.py: for p in np.linspace(0, 2, 21)"),
        "stage1_epoch": STAGE1_EPOCH,
    }

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = nn.Linear(feature_dim, self.num_classes).requires_grad_(False)
        self.register_buffer("tau", torch.tensor(1.0))

    @classmethod
    def check(cls, params):
        require(len(params["tau_grid"]) > 0, "tau_grid is empty",
                hint="e.g. --set tau_norm.tau_grid=0.5,1.0,1.5, or one value to fix tau")

    def load_stage1(self, stage1):
        self.classifier.load_state_dict(stage1.classifier.state_dict())

    def stage2(self):
        return POST_HOC

    def normalised_weights(self, tau) -> torch.Tensor:
        weight = self.classifier.weight
        return weight / weight.norm(dim=1, keepdim=True).pow(tau)

    def logits(self, features):
        # no bias: classifier-balancing's tau_norm.py scores with the normalised weights alone
        return features @ self.normalised_weights(self.tau).T

    def calibrate(self, trainer):
        chosen = choose_on_validation(trainer, self, "tau", self.hp["tau_grid"],
                                      lambda features, tau: features @ self.normalised_weights(tau).float().T)
        self.tau.fill_(chosen["tau"])
        return chosen
