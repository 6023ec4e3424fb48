"""BBN, the bilateral-branch network (Zhou et al., CVPR 2020): two branches share a ResNet up to
its last residual block (ltbench.experts, `bbn_<backbone>`). The conventional branch sees
instance-sampled batches, the re-balancing branch batches of the reversed sampler (class c
drawn in proportion to n_max / n_c); one linear classifier reads both pooled features,
weighted alpha and 1 - alpha, and the loss is alpha CE(z, y_c) + (1 - alpha) CE(z, y_r). The
cumulative learning strategy moves alpha from 1 to 0 as training goes on, a parabola in the
epoch; at test time the classifier reads both features unweighted.

Follows Megvii-Nanjing/BBN at commit 7992e908842f5934f0d1ee3f430d796621e81975:
lib/core/combiner.py (bbn_mix, L38-66; div_epoch, L14-19), lib/backbone/resnet_cifar.py
(BBN_ResNet_Cifar, L153-211), lib/backbone/resnet.py (BBN_ResNet), lib/net/network.py
(the classifier over the concatenated features, L33-44, L87-95), lib/dataset/imbalance_cifar.py
(the reversed sampler, L59-88, L110-126), configs/cifar10.yaml, cifar100.yaml and
iNaturalist2018.yaml. With e the 1-based epoch and D the epochs (100 for 90, 200 for 180):

    alpha = 1 - ((e - 1) / D)^2
    z = W [2 alpha f_c ; 2 (1 - alpha) f_r] + b        (training)
    z = W [f_c ; f_r] + b                              (test)

Differences from the original, and why:

- Schedule: BBN's WarmupMultiStepLR (lib/utils/lr_scheduler.py) rises from lr / 3 over 5
  epochs and is stepped before each epoch, so its decays fall one epoch earlier (the 120th and
  160th 1-based epochs); the shared trainer's warm-up rises as lr * (epoch + 1) / 5 and its
  milestones 0.6 and 0.8 of 200 decay from the 121st and 161st.
- Each branch's batch runs through the shared layers separately, as in the original (two
  forward passes, L43-46); only the branch it trains runs on it.
- Initialisation of the image-dataset ResNets: timm's (BBN_ResNet keeps PyTorch's defaults).
- Selection: the original keeps the epoch best on its validation loader, the test set on CIFAR;
  ltbench reports the last epoch.
- ImageNet-LT and Places-LT: BBN has no config for them, so runs there are never labelled paper.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.experts import BBN_PREFIX, create_branch_backbone, expert_form
from ltbench.method import Draw, Method

BBN = "Megvii-Nanjing/BBN@7992e90"
CIFAR_CONFIG = f"{BBN} configs/cifar100.yaml (configs/cifar10.yaml alike)"
INAT_CONFIG = f"{BBN} configs/iNaturalist2018.yaml"
COMBINER = f"{BBN} lib/core/combiner.py"


def cumulative_alpha(epoch: int, epochs: int) -> float:
    """combiner.py L48 with L14-19: 1 - (epoch / D)^2 for the 0-based epoch, D the epochs
    except 90 and 180, which divide by 100 and 200."""
    divisor = 100 * (epochs // 100 + 1) if epochs in (90, 180) else epochs
    return 1 - (epoch / divisor) ** 2


def bbn_loss(classifier: nn.Module, conventional: torch.Tensor, rebalancing: torch.Tensor, labels: torch.Tensor,
             reversed_labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """bbn_mix (combiner.py L56-58) on the two branches' features."""
    mixed = 2 * torch.cat([alpha * conventional, (1 - alpha) * rebalancing], dim=1)
    logits = classifier(mixed).float()
    return alpha * F.cross_entropy(logits, labels) + (1 - alpha) * F.cross_entropy(logits, reversed_labels)


class BilateralBranch(Method):
    """BBN, a conventional and a reversed-sampling branch sharing a ResNet, cumulative learning (Zhou et al., CVPR 2020)."""

    name, display_name = "bbn", "BBN"
    # DUAL_SAMPLER reverse beside the default (instance) sampler, in every config
    draws = {"main": Draw(sampler="instance"), "reversed": Draw(sampler="reversed")}
    trainer_defaults = {"backbone": "resnet32_cifar", "epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
                        "weight_decay": 2e-4, "schedule": "step", "warmup_epochs": 5, "milestones": [0.6, 0.8],
                        "lr_factors": [0.01, 0.0001]}
    trainer_sources = {
        "backbone": f"{CIFAR_CONFIG} BACKBONE.TYPE bbn_res32_cifar",
        "epochs": f"{CIFAR_CONFIG} TRAIN.MAX_EPOCH 200",
        "batch_size": f"{CIFAR_CONFIG} TRAIN.BATCH_SIZE 128",
        "lr": f"{CIFAR_CONFIG} TRAIN.OPTIMIZER.BASE_LR 0.1",
        "momentum": f"{CIFAR_CONFIG} TRAIN.OPTIMIZER.MOMENTUM 0.9",
        "weight_decay": f"{CIFAR_CONFIG} TRAIN.OPTIMIZER.WEIGHT_DECAY 2e-4",
        "schedule": f"{CIFAR_CONFIG} TRAIN.LR_SCHEDULER.TYPE warmup (WarmupMultiStepLR)",
        "warmup_epochs": f"{CIFAR_CONFIG} TRAIN.LR_SCHEDULER.WARM_EPOCH 5",
        "milestones": f"{CIFAR_CONFIG} TRAIN.LR_SCHEDULER.LR_STEP [120, 160] (of 200)",
        "lr_factors": f"{CIFAR_CONFIG} TRAIN.LR_SCHEDULER.LR_FACTOR 0.01 (x0.01, then x0.0001)",
    }
    dataset_trainer_defaults = {"inat2018": {
        "backbone": ("resnet50", f"{INAT_CONFIG} BACKBONE.TYPE bbn_res50"),
        "epochs": (180, f"{INAT_CONFIG} TRAIN.MAX_EPOCH 180"),
        "batch_size": (128, f"{INAT_CONFIG} TRAIN.BATCH_SIZE 128"),
        "lr": (0.05, f"{INAT_CONFIG} TRAIN.OPTIMIZER.BASE_LR 0.05"),
        "weight_decay": (1e-4, f"{INAT_CONFIG} TRAIN.OPTIMIZER.WEIGHT_DECAY 1e-4"),
        "schedule": ("step", f"{INAT_CONFIG} TRAIN.LR_SCHEDULER.TYPE multistep"),
        "warmup_epochs": (0, f"{INAT_CONFIG} TRAIN.LR_SCHEDULER.TYPE multistep: no warm-up"),
        "milestones": ([0.6667, 0.8889], f"{INAT_CONFIG} TRAIN.LR_SCHEDULER.LR_STEP [120, 160] (of 180)"),
        "lr_factors": ([0.1, 0.01], f"{INAT_CONFIG} TRAIN.LR_SCHEDULER.LR_FACTOR 0.1"),
    }}
    unconfirmed_protocol = {name: "BBN has no config for it (configs/: CIFAR-10, CIFAR-100, iNaturalist 2017 and 2018)"
                            for name in ("imagenet_lt", "places_lt")}

    @classmethod
    def check_backbone(cls, name):
        expert_form(name, BBN_PREFIX)

    @classmethod
    def create_backbone(cls, name, in_chans, hyperparameters):
        return create_branch_backbone(name, in_chans)

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        # network.py L110-119: nn.Linear(2 x the feature length, C) with bias, its own init
        self.classifier = nn.Linear(2 * feature_dim, self.num_classes)

    def logits(self, features):
        return self.classifier(features.flatten(1))  # [f_c ; f_r], unweighted at test time

    def loss(self, backbone, batches, progress):
        main, reversed_ = batches["main"], batches["reversed"]
        alpha = cumulative_alpha(progress.epoch, progress.epochs)
        self.record(alpha=alpha)
        conventional = backbone(main.views[0], experts=[0])[:, 0]
        rebalancing = backbone(reversed_.views[0], experts=[1])[:, 0]
        return bbn_loss(self.classifier, conventional, rebalancing, main.labels, reversed_.labels, alpha)
