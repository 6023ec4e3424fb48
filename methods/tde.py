"""De-confound-TDE (Tang, Huang and Zhang, NeurIPS 2020): train a multi-head normalised
("causal norm") classifier, keep the moving average of the training features as the head
direction d, and at test time subtract the counterfactual effect of d, the logits of the
feature's projection on d scaled by alpha (Eq. 7-8).

Follows KaihuaTang/Long-Tailed-Recognition.pytorch at commit
5c916d0d0fd5e1fa984621b86f15cda2bc69df17, folder classification/: models/CausalNormClassifier.py
(the classifier and the TDE step), run_networks.py (the moving average and its decay), the
configs config/*/causal_norm*.yaml and the README. The code and the paper's Eq. 7-8 agree:

- Logits (Eq. 7; CausalNormClassifier.py L27-29): the weight and the feature are split into K
  = num_head equal heads; each head of the feature is L2-normalised, each class's head of the
  weight divided by its norm plus gamma, and the K dot products summed and scaled by tau / K.
- TDE (Eq. 8; L32-45): in evaluation each normalised head x_k becomes x_k - alpha cos(x_k, d_k) d_k,
  d_k the unit head of the moving average, before the same product.
- Moving average (Assumption 1; run_networks.py L215): x_t = mu x_{t-1} + the training batch's
  mean feature, from zero, on every training step. mu = 0.9 on CIFAR (L46); on the other datasets
  it follows the learning rate, mu = 1 - 0.1 min(50 lr, 1) (L306-309), so it rises towards 1 as
  the cosine schedule ends.
- Several devices: the code runs one process with nn.DataParallel (run_networks.py L97), so each
  step's mean is over the whole batch's features; ltbench's data-parallel ranks take the global
  batch's mean together (ltbench.moving_average), and every rank keeps the same average.

Differences from the original, and why:

- Backbone on CIFAR: the TDE code's ResNet-32 (models/ResNet32Feature.py) is BBN's, whose last
  stage ends in two parallel blocks concatenated to a 128-d feature; ltbench's resnet32_cifar is
  the LDAM-DRW ResNet-32 (64-d), the one every CIFAR method here shares; two heads of 32
  dimensions instead of 64.
- Warm-up: the code's WarmupMultiStepLR (utils.py L327-) rises linearly from lr/3 over 5 epochs
  and its schedulers step before each epoch; the shared trainer's warm-up rises as
  lr * (epoch + 1) / 5.
- Normalisation: the code divides by the norm of each head as it is (l2_norm, L65-67), so a head
  of all-zero features (possible after a ReLU) gives NaN logits; ltbench's F.normalize gives
  that head zero, and a zero moving average (a model evaluated before any training step) no
  counterfactual at all.
- Selection: the code tests the weights of the best epoch on its 'val' split, which is the CIFAR
  test set (data/ImbalanceCIFAR.py: every phase but 'train' loads the test images), with the
  moving average of the last epoch; ltbench reports the last epoch, and the best test epoch
  apart (top1_best), as every method's.
- alpha on other datasets: where neither the paper nor the code gives an alpha (Fashion-MNIST-LT,
  iNaturalist 2018), it is chosen after the last epoch from alpha_grid by balanced accuracy on
  the validation split, as the paper chose its ImageNet-LT value on that dataset's val set
  (Sec. 5); the README's rule of thumb (alpha cos(x, d) near 1; the history records cos as
  head_cos) is not used. A fixed alpha can fail badly away from its dataset: on Fashion-MNIST-LT
  (quick preset) the ResNet-32 features had cos near 0.83, and alpha 3 put every test image in one
  class. Where the paper gives alpha, it is fixed as there.
- Places-LT and iNaturalist 2018: the paper reports neither; a config for Places-LT
  (config/Places_LT/causal_norm.yaml) exists without a published figure, and iNaturalist has
  none, so runs there are never labelled paper.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.method import Method
from ltbench.moving_average import FeatureMovingAverage
from ltbench.settings import Search, Setting, with_default
from ltbench_methods.common import choose_on_validation, require, with_dataset_defaults

TDE = "KaihuaTang/Long-Tailed-Recognition.pytorch@5c916d0 classification/"
PAPER = "Tang et al. 2020 (NeurIPS, arXiv:2009.12991v5)"
CLASSIFIER = f"{TDE}models/CausalNormClassifier.py"
RUN_NETWORKS = f"{TDE}run_networks.py"
SEC5 = f"{PAPER} Sec. 5, Implementation Details"
CIFAR_CONFIG = f"{TDE}config/CIFAR100_LT/causal_norm_32.yaml"
IMAGENET_CONFIG = f"{TDE}config/ImageNet_LT/causal_norm.yaml"

# run_networks.py L306-309 scales mu by min(50 lr, 1): the decay stays at its base while the lr
# is above 0.02 and approaches 1 below it
LR_SCALE = 50.0


def _heads(x: torch.Tensor, num_head: int) -> torch.Tensor:
    """(..., D) -> (..., K, D / K), the equal channel groups CausalNormClassifier.py splits into."""
    return x.unflatten(-1, (num_head, x.shape[-1] // num_head))


def causal_norm_logits(features: torch.Tensor, weight: torch.Tensor, tau: float, gamma: float, num_head: int,
                       head_direction: torch.Tensor | None = None, alpha: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Eq. 7, tau / K sum_k w_k . x_k / ((|w_k| + gamma) |x_k|); with a head direction d (the
    moving average of the training features) Eq. 8, each unit x_k replaced by
    x_k - alpha cos(x_k, d_k) d_k. `weight` is (classes, D); D a multiple of K."""
    # tau = 16 scales the cosines: bf16 rounding would become logit noise, so fp32 under autocast
    with torch.autocast(features.device.type, enabled=False):
        x = F.normalize(_heads(features.float(), num_head), dim=-1)
        w = _heads(weight.float(), num_head)
        w = w / (w.norm(dim=-1, keepdim=True) + gamma)
        if head_direction is not None:
            d = F.normalize(_heads(head_direction.float().to(x.device), num_head), dim=-1)
            cos = (x * d).sum(-1, keepdim=True)
            x = x - alpha * cos * d
        return tau / num_head * torch.einsum("nkd,ckd->nc", x, w)


def moving_average_decay(mu: float, lr: float | None, follows_lr: bool) -> float:
    """The decay of the feature average this step: `mu`, or on the code's non-CIFAR datasets
    1 - (1 - mu) min(50 lr, 1) (run_networks.py L306-309)."""
    if not follows_lr or lr is None:
        return mu
    return 1.0 - (1.0 - mu) * min(LR_SCALE * lr, 1.0)


# The configs' alpha (config/*/causal_norm*.yaml L19) and the paper's (Sec. 5) agree on every dataset
# they share; on a dataset with neither, alpha is chosen on validation as the paper chose it on
# ImageNet-LT's val set, from alpha_grid
BY_DATASET = {
    "cifar10_lt": {"alpha": (1.0, f"{SEC5}: alpha 1.0 for CIFAR-10; {TDE}config/CIFAR10_LT/causal_norm_32.yaml "
                                  "L19: alpha 1.0")},
    "cifar100_lt": {"alpha": (1.5, f"{SEC5}: alpha 1.5 for CIFAR-100; {CIFAR_CONFIG} L19: alpha 1.5")},
    "places_lt": {"alpha": (3.0, f"{TDE}config/Places_LT/causal_norm.yaml L19: alpha 3.0")},
    "fashion_mnist_lt": {"alpha": (1.0, "the CIFAR-10-LT value (ten classes, the same ResNet-32): used in the "
                                        "evaluations before the last epoch, whose alpha is chosen from alpha_grid")},
}
PAPER_ALPHA = {"cifar10_lt", "cifar100_lt", "imagenet_lt", "places_lt"}
# Figure 4 of the paper sweeps alpha from 0 to 5 on ImageNet-LT's val set; ltbench's grid keeps the
# part that holds every alpha the paper and the code use (1.0, 1.5, 3.0)
ALPHA_GRID = [0.25 * i for i in range(13)]
FOLLOWS_LR_SOURCE = f"{RUN_NETWORKS} L306-309: mu = 1 - (1 - 0.9) min(50 lr, 1) where 'CIFAR' is not in the dataset"


def _cosine(config: str) -> dict:
    """The code's large-dataset schedule: SGD m 0.9, lr 0.2 cosine to 0 (stepped before each
    epoch), no warm-up, batch 512, 90 epochs."""
    where = f"{TDE}config/{config}/causal_norm.yaml"
    return {
        "epochs": (90, f"{where} L38: num_epochs 90; {SEC5}: 90 epochs"),
        "batch_size": (512, f"{where} L29: batch_size 512; {SEC5}: batch size 512"),
        "lr": (0.2, f"{where} L17, L23: lr 0.2; {SEC5}: cosine scheduler from 0.2 to 0.0"),
        "momentum": (0.9, f"{where} L17, L23: momentum 0.9"),
        "weight_decay": (5e-4, f"{where} L17, L23: weight_decay 0.0005"),
        "schedule": ("cosine", f"{where} L18, L24: coslr true, endlr 0.0"),
        "warmup_epochs": (0, f"{where} L18, L24: no warmup"),
    }


class TDEClassifier(Method):
    """De-confound-TDE, a multi-head normalised classifier with the momentum's effect removed at
    test time (Tang et al., NeurIPS 2020)."""

    name, display_name = "tde", "De-confound-TDE"
    hyperparameters = {
        "alpha": Setting(3.0, "TDE's trade-off: how much of the head direction's effect is removed at test time "
                         "(0: the De-confound model alone); where alpha_grid is set, only in the evaluations before "
                         "the last epoch", low=0, high=100,
                         source=f"{SEC5}: alpha 3.0 on ImageNet-LT, chosen on its val set; {IMAGENET_CONFIG} L19: "
                                "alpha 3.0",
                         search=Search(0.0, 5.0, source=f"{PAPER} Figure 4: alpha from 0 to 5 on the ImageNet-LT val "
                                       "set")),
        "alpha_grid": Setting(ALPHA_GRID, "alphas to choose from by balanced accuracy on the validation split after "
                              "the last epoch (alpha plays no part in training); unset: alpha as set", optional=True,
                              dtype=list, item_type=float, low=0, high=100,
                              source=f"{SEC5}: hyper-parameters chosen on the ImageNet-LT val set; {TDE}README.md L32: "
                                     "alpha can be changed at test time without re-training; 0 to 3 by 0.25 of "
                                     "Figure 4's 0 to 5 (ltbench's grid)"),
        "tau": Setting(16.0, "tau, the scale of the summed per-head cosines", above=0, high=1000,
                       source=f"{SEC5}: tau = 16; {CLASSIFIER} L9, L12: scale = tau / num_head; {CIFAR_CONFIG} L19"),
        "gamma": Setting(0.03125, "gamma, the class-agnostic term beside each weight head's norm", low=0, high=100,
                         source=f"{SEC5}: gamma = 1/32; {CLASSIFIER} L74-77: x / (norm + weight); {CIFAR_CONFIG} L19"),
        "num_head": Setting(2, "K, the number of equal channel groups (heads) of the feature and the weight",
                            low=1, high=4096, source=f"{SEC5}: K = 2; {CIFAR_CONFIG} L19: num_head 2"),
        "mu": Setting(0.9, "mu, the decay of the moving average of the training features (the head direction)",
                            low=0, below=1, source=f"{RUN_NETWORKS} L46: self.mu = 0.9; {PAPER} Assumption 1: decay "
                                                   "rate mu like momentum"),
        "mu_follows_lr": Setting(False, "let the decay follow the lr, 1 - (1 - mu) min(50 lr, 1), as the "
                                       "code does outside CIFAR", source=f"{RUN_NETWORKS} L308: the rule is skipped "
                                                                        "where 'CIFAR' is in the dataset's name"),
    }
    trainer_defaults = {
        "epochs": 200,
        "batch_size": 256,
        "lr": 0.2,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "step",
        "warmup_epochs": 5,
        "milestones": [0.6, 0.8],
        "lr_factors": [0.01, 0.0001],
    }
    trainer_sources = {
        "epochs": f"{CIFAR_CONFIG} L39: num_epochs 200",
        "batch_size": f"{CIFAR_CONFIG} L29: batch_size 256",
        "lr": f"{CIFAR_CONFIG} L17, L23: lr 0.2",
        "momentum": f"{CIFAR_CONFIG} L17, L23: momentum 0.9",
        "weight_decay": f"{CIFAR_CONFIG} L17, L23: weight_decay 0.0005",
        "schedule": f"{CIFAR_CONFIG} L18, L24: WarmupMultiStepLR (warmup true, coslr false); {SEC5}: the warm-up "
                    "scheduler of BBN",
        "warmup_epochs": f"{CIFAR_CONFIG} L18, L24: warm_epoch 5",
        "milestones": f"{CIFAR_CONFIG} L18, L24: lr_step [120, 160] of 200 epochs",
        "lr_factors": f"{CIFAR_CONFIG} L18, L24: lr_factor 0.01 at each step (x0.01, then x0.0001)",
    }
    dataset_trainer_defaults = {"imagenet_lt": _cosine("ImageNet_LT"), "places_lt": _cosine("Places_LT")}
    unconfirmed_protocol = {
        "places_lt": "the paper reports no Places-LT figure; config/Places_LT/causal_norm.yaml is the code's only word",
        "inat2018": "neither the paper nor the code has an iNaturalist protocol",
    }

    @classmethod
    def settings(cls, dataset):
        own = with_dataset_defaults(super().settings(dataset), dataset, BY_DATASET)
        if dataset.name in PAPER_ALPHA:
            own["alpha_grid"] = with_default(own["alpha_grid"], None, "unset: the alpha of the paper or the code "
                                             "(see alpha)")
        if dataset.family != "cifar":
            own["mu_follows_lr"] = with_default(own["mu_follows_lr"], True, FOLLOWS_LR_SOURCE)
        return own

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        heads = hp["num_head"]
        require(feature_dim % heads == 0,
                f"tde splits the {feature_dim}-d feature into num_head={heads} equal heads, and {heads} does not "
                f"divide {feature_dim}", hint=f"set --set tde.num_head= to a divisor of {feature_dim} (the paper's is 2)")
        # CausalNormClassifier.py L21-23: uniform(-1/sqrt(D), 1/sqrt(D)), no bias
        bound = 1.0 / math.sqrt(feature_dim)
        self.weight = nn.Parameter(torch.empty(self.num_classes, feature_dim).uniform_(-bound, bound))
        self.head_direction = FeatureMovingAverage(feature_dim)
        self.register_buffer("alpha", torch.tensor(float(hp["alpha"])))

    @classmethod
    def check(cls, params):
        require(params.get("alpha_grid") is None or len(params["alpha_grid"]) > 0, "alpha_grid is empty",
                hint="e.g. --set tde.alpha_grid=0.5,1.0,1.5, or leave it unset for alpha")

    def _logits(self, features, head_direction=None, alpha=0.0):
        hp = self.hp
        return causal_norm_logits(features, self.weight, hp["tau"], hp["gamma"], hp["num_head"], head_direction, alpha)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        features = backbone(batch.views[0])
        hp = self.hp
        self.head_direction.update(features, moving_average_decay(hp["mu"], progress.lr,
                                                                  hp["mu_follows_lr"]))
        # the README's rule of thumb picks alpha with alpha * cos(x, d) near 1: the history keeps cos
        unit = F.normalize(_heads(features.detach().float(), hp["num_head"]), dim=-1)
        direction = F.normalize(_heads(self.head_direction.value, hp["num_head"]), dim=-1)
        self.record(head_cos=(unit * direction).sum(-1).mean())
        # in training the classifier is Eq. 7 alone: the counterfactual is evaluation's (L32)
        return F.cross_entropy(self._logits(features), batch.labels)

    def logits(self, features):
        return self._logits(features, self.head_direction.value, self.alpha)

    def calibrate(self, trainer):
        if self.hp.get("alpha_grid") is None:
            return {"alpha": self.hp["alpha"], "selection": "fixed (alpha_grid unset)"}
        chosen = choose_on_validation(trainer, self, "alpha", self.hp["alpha_grid"],
                                      lambda features, alpha: self._logits(features, self.head_direction.value, alpha))
        self.alpha.fill_(chosen["alpha"])
        return chosen
