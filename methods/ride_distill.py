"""RIDE with knowledge distillation (Wang et al., ICLR 2021; "RIDE + Distill" in the code's MODEL_ZOO.md): a
3-expert RIDE student learns from a frozen 6-expert RIDE teacher trained first with the same
recipe; the student's loss adds to RIDE's a KL divergence from the teacher's prediction.

Follows frank-xwang/RIDE-LongTailRecognition at commit ab8be5c21124612493aff87c7cf235d950bda178:
model/loss.py RIDELossWithDistill (L249-284), configs/config_imbalance_cifar100_distill_ride.json
(the student: RIDE's CIFAR recipe with a 20-epoch warm-up and distill_temperature 1.5),
configs/config_imbalance_cifar100_ride_teacher.json (the teacher: `ride` with num_experts 6),
config_imagenet_lt_resnet50_distill_ride.json and config_iNaturalist_resnet50_distill_ride.json
(RIDE's ResNet-50 recipes, 5-epoch warm-up, distill_temperature 1.5, a 6-expert teacher), and
trainer/trainer.py L17-38 and L89-138 (how the teacher predicts). With z the student's
prediction (the mean of its experts' scaled logits), t the teacher's, T the distillation
temperature and E the student's experts, the loss of a batch is what L271-284 compute:

    sum over the E experts of [ RIDELoss(experts, y)  +  alpha T^2 KL(softmax(t / T) || softmax(z / T)) ]

with KL's batchmean reduction and the teacher's side without gradients. The loop runs once
per student expert but adds the whole RIDE loss (itself a sum over the experts, L223-245)
and the same distillation term each time, never the expert's own logits (`logits_item` is
unused): the loss is E times (RIDE loss + alpha T^2 KL). This is reproduced as the code has it,
so the RIDE part weighs E times what it weighs in `ride` (ltbench_methods.ride): with plain
SGD that is a larger step on it, not only a rescaled figure.

The teacher (trainer.py L98) predicts on the student's batch itself, with the same
augmentation, under no_grad; it is a finished `ride` run on the same data and seed
(ltbench.teacher), trained first and shared by every student that names it.

Differences from the original, and why:

- The teacher predicts in evaluation mode. trainer.py never calls `.eval()` on it (only the
  student's `self.model.train()`, L71), so in the original its BatchNorm normalises with each
  batch's statistics and moves its running statistics, which nothing reads. Here its
  prediction is that of the finished model, a function of the image alone, as a
  teacher's is in evaluation, and its weights and statistics never change.
- The teacher is the teacher run's last epoch. The original loads a checkpoint the user
  names (`distill_checkpoint`); the teacher config saves every 40 epochs and the epoch best
  on its validation loader, the test set on CIFAR, and MODEL_ZOO.md does not say which it released.
- Everything else is `ride`'s (ltbench_methods.ride): its differences (plain momentum where
  the configs set Nesterov, no RandomRotation on CIFAR-100, the last epoch reported, every
  expert predicting: the router, `ride_ea`, is a second stage of its own) hold here too.
- `ride_loss_factor` (L250, 1.0; no config sets it) is not a setting: it multiplies what the
  diversity factor and the distillation factor already weigh.
"""

import torch
import torch.nn.functional as F

from ltbench.experts import RIDE, create_expert_backbone
from ltbench.settings import Setting, with_default
from ltbench.teacher import Teacher, teacher_of
from ltbench_methods.ride import CIFAR_CONFIG, IMAGENET_CONFIG, INAT_CONFIG, RIDEExperts, _resnet50_schedule

LOSS = f"{RIDE} model/loss.py"
CIFAR_DISTILL = f"{RIDE} configs/config_imbalance_cifar100_distill_ride.json"
IMAGENET_DISTILL = f"{RIDE} configs/config_imagenet_lt_resnet50_distill_ride.json"
INAT_DISTILL = f"{RIDE} configs/config_iNaturalist_resnet50_distill_ride.json"
TEACHER_CONFIG = f"{RIDE} configs/config_imbalance_cifar100_ride_teacher.json"
# the distillation configs hold `ride`'s values but for the warm-up and the teacher: its
# sources name them instead of the plain RIDE configs they copy
SAME_VALUES = {CIFAR_CONFIG: CIFAR_DISTILL, IMAGENET_CONFIG: IMAGENET_DISTILL, INAT_CONFIG: INAT_DISTILL}


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """loss.py L277-282: T^2 KL(softmax(teacher / T) || softmax(student / T)), batchmean."""
    own = F.log_softmax(student / temperature, dim=1)
    target = F.softmax(teacher.detach() / temperature, dim=1)
    return temperature * temperature * F.kl_div(own, target, reduction="batchmean")


def ride_distill_loss(ride: torch.Tensor, distill: torch.Tensor, experts: int, factor: float) -> torch.Tensor:
    """RIDELossWithDistill.forward (loss.py L271-284) from `ride`, the RIDE loss of the batch,
    and `distill`, the distillation term, for a student of `experts` experts."""
    # L273-283 add the whole RIDE loss and the same distillation term once per student expert
    return experts * (ride + factor * distill)


def _in_distill_configs(source: str) -> str:
    for plain, distill in SAME_VALUES.items():
        source = source.replace(plain, distill)
    return source


class RIDEDistill(RIDEExperts):
    """RIDE distilled from a frozen 6-expert RIDE teacher, all experts averaged (Wang et al., ICLR 2021)."""

    name, display_name = "ride_distill", "RIDE + distill"
    teacher = Teacher("ride", lambda own: {"num_experts": own["teacher_experts"]})
    hyperparameters = {
        **RIDEExperts.hyperparameters,
        "teacher_experts": Setting(6, "experts of the RIDE teacher (a `ride` run of the same spec, trained first)",
                                   low=1, high=64, source=f"{CIFAR_DISTILL} distill_arch.args: num_experts 6; "
                                   f"{TEACHER_CONFIG} arch.args: num_experts 6"),
        "distill_temperature": Setting(1.5, "T, the temperature of both predictions in the distillation KL",
                                       above=0, high=1000,
                                       source=f"{CIFAR_DISTILL} loss.args: distill_temperature 1.5"),
        "distill_factor": Setting(1.0, "alpha, the weight of the distillation term T^2 KL(teacher || student)",
                                  low=0, high=1000,
                                  source=f"{LOSS} L250: additional_distill_loss_factor=1.0 (no config sets it)"),
    }
    trainer_defaults = {**RIDEExperts.trainer_defaults, "warmup_epochs": 20}
    trainer_sources = {
        **{key: _in_distill_configs(source) for key, source in RIDEExperts.trainer_sources.items()},
        "warmup_epochs": f"{CIFAR_DISTILL} lr_scheduler.args: warmup_epoch 20 (the teacher's: 5); "
                         f"{RIDE} train.py L50-62 CustomLR: lr * (1 + epoch) / 20",
    }
    dataset_trainer_defaults = {"imagenet_lt": _resnet50_schedule(IMAGENET_DISTILL, batch_size=256, lr=0.1),
                                "inat2018": _resnet50_schedule(INAT_DISTILL, batch_size=512, lr=0.2)}

    @classmethod
    def settings(cls, dataset):
        return {key: with_default(setting, setting.default, _in_distill_configs(setting.source))
                for key, setting in super().settings(dataset).items()}

    @classmethod
    def create_backbone(cls, name, in_chans, hyperparameters):
        own = hyperparameters[cls.name]
        return create_expert_backbone(name, in_chans, own["num_experts"], own["reduce_dimension"])

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        images = batch.views[0]
        cosines = self.cosines(backbone(images))
        ride = self.experts_loss(cosines, batch.labels, progress)
        # trainer.py L98: the teacher sees the student's batch, augmentation and all
        teacher = teacher_of(self)(images).float()
        student = self.hp["scale"] * cosines.float().mean(1)
        distill = distillation_loss(student, teacher, self.hp["distill_temperature"])
        self.record(ride=ride.detach(), distill=distill.detach())
        return ride_distill_loss(ride, distill, cosines.shape[1], self.hp["distill_factor"])
