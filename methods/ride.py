"""RIDE (Wang et al., ICLR 2021): several experts share a ResNet's early stages
(ltbench.experts); each has its own later stages at reduced width and its own cosine
classifier, is trained with LDAM's margins and deferred re-weighting, and is pushed away from
the experts' mean prediction by a distribution-aware diversity term; the prediction is the
mean of the experts' logits.

Follows frank-xwang/RIDE-LongTailRecognition at commit ab8be5c21124612493aff87c7cf235d950bda178:
model/loss.py (RIDELoss, L124-247), model/ldam_drw_resnets/ride_resnet_cifar.py and
model/fb_resnets/RIDEResNet.py (the experts, their NormedLinear classifiers and the scale s),
configs/config_imbalance_cifar100_ride.json, config_imagenet_lt_resnet50_ride.json and
config_iNaturalist_resnet50_ride.json, train.py L45-63 (CustomLR) and base/base_trainer.py
(1-based epochs). The loss of one batch, summed over the experts k (loss.py L223-245):

    LDAM(s cos_k - s m 1_y, y; w_DRW)  +  lambda T^2 KL(softmax(z / T) || softmax(z_k / T))

with z_k = s cos_k, z the experts' mean, lambda the diversity factor (negative: the experts
are pushed apart), the KL's target detached, and batchmean reduction. Before the re-weighting
epoch w_DRW is uniform and T the base temperature; from it on, w_DRW is Cui et al.'s
effective-number weight and T is per class, T_c = T_base * w_c with
w_c = C p_c r + 1 - r normalised to max 1 (r the reweight factor, p_c the training prior),
and T^2 uses the mean of T_c. With lambda = 0 each expert's LDAM term is taken on the mean
logits z, as L224 has it.

Differences from the original, and why:

- The expert router (RIDE's expert assignment, the "-EA" configs) is a second stage of its own,
  `ride_ea` (ltbench_methods.ride_ea), on a finished run of this method, as the original trains
  it on the stage-1 checkpoint; this method predicts with every expert, as that stage 1 does.
- Nesterov momentum: the configs set `nesterov: true`; the shared trainer's SGD has plain
  momentum, as every method here.
- Augmentation on CIFAR: the CIFAR-100 loader adds RandomRotation(15)
  (data_loader/cifar_data_loaders.py L99-103); the shared CIFAR augmentation is LDAM-DRW's
  crop and flip, as every CIFAR method here.
- Initialisation of the image-dataset ResNets: RIDEResNet.py L153-159's normal(0, sqrt(2/n))
  fan-out is timm's kaiming_normal_(fan_out); like RIDE, no BatchNorm starts at zero.
- Selection: the original keeps the epoch best on its validation loader, which on CIFAR is the
  test set (cifar_data_loaders.py L111); ltbench reports the last epoch, as for every method.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.experts import RIDE, create_expert_backbone, expert_form
from ltbench.method import Method
from ltbench.settings import Setting
from ltbench_methods.common import NormedLinear, deferred_weights, drw_start_epoch, with_dataset_defaults
from ltbench_methods.ldam_drw import LDAMLoss

PAPER = "Wang et al. 2021 (ICLR, arXiv:2010.01809)"
LOSS = f"{RIDE} model/loss.py"
CIFAR_CONFIG = f"{RIDE} configs/config_imbalance_cifar100_ride.json"
IMAGENET_CONFIG = f"{RIDE} configs/config_imagenet_lt_resnet50_ride.json"
INAT_CONFIG = f"{RIDE} configs/config_iNaturalist_resnet50_ride.json"
CUSTOM_LR = f"{RIDE} train.py L50-62 CustomLR"


def diversity_weights(class_counts: torch.Tensor, reweight_factor: float) -> torch.Tensor:
    """loss.py L162-168: w_c = C p_c r + 1 - r, normalised to a maximum of 1."""
    prior = class_counts.double() / class_counts.double().sum()
    weights = len(prior) * prior * reweight_factor + 1 - reweight_factor
    return (weights / weights.max()).float()


def ride_loss(cosines: torch.Tensor, labels: torch.Tensor, ldam: LDAMLoss, diversity_factor: float,
              temperature: torch.Tensor | float, base_weights: torch.Tensor | None = None) -> torch.Tensor:
    """RIDELoss.forward (loss.py L216-247) on the experts' cosines [batch, experts, classes]:
    the sum over experts of LDAM and the weighted KL from the experts' mean. `temperature` is a
    float or per-class [classes]; `base_weights` the LDAM class weights (None: uniform)."""
    logits = ldam.scale * cosines
    mean = logits.mean(1)
    per_class = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device).reshape(1, -1)
    target = F.softmax(mean.detach() / per_class, dim=1)
    squared = per_class.mean() ** 2
    total = logits.new_zeros(())
    for k in range(logits.shape[1]):
        # L224: with no diversity term every expert's LDAM is taken on the mean logits
        cosine = cosines[:, k] if diversity_factor != 0 else mean / ldam.scale
        total = total + ldam(cosine, labels, base_weights)
        own = F.log_softmax(logits[:, k] / per_class, dim=1)
        total = total + diversity_factor * squared * F.kl_div(own, target, reduction="batchmean")
    return total


def _resnet50_schedule(config: str, batch_size: int, lr: float) -> dict:
    """RIDE's ResNet-50 protocol on an image dataset (ImageNet-LT, iNaturalist): 100 epochs, wd
    2e-4, a 5-epoch warm-up, the lr x0.1 at epochs 60 and 80 (CustomLR)."""
    return {
        "backbone": ("resnet50", f"{config} arch: ResNet50Model (RIDEResNet, 3 experts)"),
        "epochs": (100, f"{config} trainer: epochs 100"),
        "batch_size": (batch_size, f"{config} data_loader.args: batch_size {batch_size}"),
        "lr": (lr, f"{config} optimizer.args: lr {lr}"),
        "weight_decay": (2e-4, f"{config} optimizer.args: weight_decay 2e-4"),
        "schedule": ("step", f"{config} lr_scheduler: CustomLR; {CUSTOM_LR}"),
        "warmup_epochs": (5, f"{config} lr_scheduler.args: warmup_epoch 5"),
        "milestones": ([0.6, 0.8], f"{config} lr_scheduler.args: step1 60, step2 80 (of 100)"),
        "lr_factors": ([0.1, 0.01], f"{config} lr_scheduler.args: gamma 0.1"),
    }


class RIDEExperts(Method):
    """RIDE, distribution-aware diverse experts on shared early layers, all experts averaged (Wang et al., ICLR 2021)."""

    name, display_name = "ride", "RIDE"
    hyperparameters = {
        "num_experts": Setting(3, "experts, each with its own later stages and classifier", low=1, high=64,
                               source=f"{CIFAR_CONFIG} arch.args: num_experts 3; {PAPER} Table 1: 3 experts"),
        "reduce_dimension": Setting(True, "narrower later stages per expert (CIFAR 24/48 channels, ResNet 192/384 "
                                    "planes instead of 32/64, 256/512)",
                                    source=f"{CIFAR_CONFIG} arch.args: reduce_dimension true; "
                                    f"{RIDE} model/ldam_drw_resnets/ride_resnet_cifar.py L110-120"),
        "max_margin": Setting(0.5, "the largest LDAM margin (the rarest class's)", above=0, high=10,
                              source=f"{LOSS} L125: RIDELoss(max_m=0.5)"),
        "scale": Setting(30.0, "s, the scale of each expert's cosine logits", above=0, high=1000,
                         source=f"{RIDE} model/ldam_drw_resnets/ride_resnet_cifar.py L99, L175: s=30 with use_norm"),
        "diversity_factor": Setting(-0.45, "lambda, the weight of the KL from the experts' mean (negative: diversity)",
                                    low=-100, high=100,
                                    source=f"{CIFAR_CONFIG} loss.args: additional_diversity_factor -0.45"),
        "diversity_temperature": Setting(1.0, "T, the base temperature of the diversity term", above=0, high=1000,
                                         source=f"{LOSS} L125: base_diversity_temperature=1.0"),
        "reweight_factor": Setting(0.05, "r of the per-class diversity temperatures w_c = C p_c r + 1 - r", low=0,
                                   below=1, source=f"{LOSS} L126: reweight_factor=0.05 (the CIFAR config sets none)"),
        "drw_beta": Setting(0.9999, "effective-number beta of the deferred LDAM re-weighting (Cui et al.)", low=0,
                            below=1, source=f"{LOSS} L153-157: betas = [0, 0.9999]"),
        "drw_start": Setting(0.8, "fraction of the epochs after which re-weighting and the per-class temperatures "
                             "start (160 of 200)", low=0, high=1,
                             source=f"{CIFAR_CONFIG} loss.args: reweight_epoch 160; {LOSS} L194: epoch > "
                             "reweight_epoch, 1-based epochs (base/base_trainer.py L75)"),
    }
    trainer_defaults = {"backbone": "resnet32_cifar", "epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
                        "weight_decay": 5e-4, "schedule": "step", "warmup_epochs": 5, "milestones": [0.8, 0.9],
                        "lr_factors": [0.01, 0.0001]}
    trainer_sources = {
        "backbone": f"{CIFAR_CONFIG} arch: ResNet32Model (ride_resnet_cifar.ResNet_s with num_experts > 1)",
        "epochs": f"{CIFAR_CONFIG} trainer: epochs 200",
        "batch_size": f"{CIFAR_CONFIG} data_loader.args: batch_size 128",
        "lr": f"{CIFAR_CONFIG} optimizer.args: lr 0.1",
        "momentum": f"{CIFAR_CONFIG} optimizer.args: momentum 0.9 (nesterov true; plain momentum here)",
        "weight_decay": f"{CIFAR_CONFIG} optimizer.args: weight_decay 5e-4",
        "schedule": f"{CIFAR_CONFIG} lr_scheduler: CustomLR; {CUSTOM_LR}",
        "warmup_epochs": f"{CIFAR_CONFIG} lr_scheduler.args: warmup_epoch 5; {CUSTOM_LR}: lr * (1 + epoch) / 5",
        "milestones": f"{CIFAR_CONFIG} lr_scheduler.args: step1 160, step2 180 (of 200)",
        "lr_factors": f"{CIFAR_CONFIG} lr_scheduler.args: gamma 0.01 (x0.01, then x0.0001); {CUSTOM_LR}",
    }
    dataset_trainer_defaults = {"imagenet_lt": _resnet50_schedule(IMAGENET_CONFIG, batch_size=256, lr=0.1),
                                "inat2018": _resnet50_schedule(INAT_CONFIG, batch_size=512, lr=0.2)}
    unconfirmed_protocol = {"places_lt": "RIDE reports no Places-LT result and has no Places-LT config"}

    @classmethod
    def settings(cls, dataset):
        own = super().settings(dataset)
        loss_default = f"{LOSS} L126: additional_diversity_factor=-0.2 (the config sets none)"
        by_dataset = {
            name: {"diversity_factor": (-0.2, f"{config} loss.args; {loss_default}"),
                   "reweight_factor": (factor, f"{config} loss.args: reweight_factor {factor}"),
                   "drw_start": (0.8, f"{config} loss.args: reweight_epoch 80 (of 100); {LOSS} L194")}
            for name, config, factor in (("imagenet_lt", IMAGENET_CONFIG, 0.02), ("inat2018", INAT_CONFIG, 0.015))}
        return with_dataset_defaults(own, dataset, by_dataset)

    @classmethod
    def check_backbone(cls, name):
        expert_form(name)

    @classmethod
    def create_backbone(cls, name, in_chans, hyperparameters):
        own = hyperparameters[RIDEExperts.name]
        return create_expert_backbone(name, in_chans, own["num_experts"], own["reduce_dimension"])

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        # one NormedLinear per expert (ride_resnet_cifar.py L127-128, use_norm true in the configs)
        self.classifiers = nn.ModuleList(NormedLinear(feature_dim, self.num_classes) for _ in range(hp["num_experts"]))
        self.ldam = LDAMLoss(self.class_counts, hp["max_margin"], hp["scale"])
        self.register_buffer("temperature_weights", diversity_weights(self.class_counts, hp["reweight_factor"]))

    def cosines(self, features: torch.Tensor) -> torch.Tensor:
        """Each expert's cosine logits, [batch, experts, classes], from features [batch, experts, dim]."""
        return torch.stack([head(features[:, k]) for k, head in enumerate(self.classifiers)], dim=1)

    def logits(self, features):
        # ride_resnet_cifar.py L175, L196: the mean of the experts' scaled logits
        return self.hp["scale"] * self.cosines(features).mean(1)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        return self.experts_loss(self.cosines(backbone(batch.views[0])), batch.labels, progress)

    def experts_loss(self, cosines: torch.Tensor, labels: torch.Tensor, progress) -> torch.Tensor:
        """RIDELoss on the experts' cosines at this step of the schedule (DRW, per-class temperatures)."""
        weights = deferred_weights(self, progress).to(labels.device)
        reweighting = progress.epoch >= drw_start_epoch(progress.epochs, self.hp["drw_start"])
        temperature = self.hp["diversity_temperature"] * (self.temperature_weights if reweighting else 1.0)
        return ride_loss(cosines, labels, self.ldam, self.hp["diversity_factor"], temperature,
                         weights if reweighting else None)
