"""MiSLAS (Zhong et al., CVPR 2021, "Improving Calibration for Long-Tailed Recognition"): stage 1
learns the representation with cross-entropy on mixup batches (`ce_mixup`); stage 2 keeps that
backbone, fine-tunes its classifier together with learnable weight scaling on class-balanced
batches under label-aware smoothing, and re-estimates the backbone's BatchNorm statistics on
those batches (the paper's shift learning on BatchNorm).

Follows dvlab-research/MiSLAS at commit 0fc381e333d8a11170851b7af2058c59840969e0:
methods.py (mixup_data L8-24, mixup_criterion L27-28, LabelAwareSmoothing L31-64,
LearnableWeightScaling L67-73), train_stage1.py, train_stage2.py and config/*/*.yaml.

- Label-aware smoothing (methods.py L31-64): class j's target is 1 - eps_j on its label and
  eps_j / K spread over all K classes, eps_j = eps_K + (eps_1 - eps_K) sin(pi (n_j - n_K) /
  (2 (n_1 - n_K))), the concave schedule train_stage2.py L238-239 uses by default (n_1 the
  largest class, n_K the smallest); the loss is the batch mean.
- Stage 2 (train_stage2.py): the stage-1 classifier is loaded, not re-initialised (L200-201), and
  trains with the scales of LearnableWeightScaling (ones at the start), logits = s * (W x + b);
  SGD over those two only (L241-244), the classifier at lr_factor times the lr (L458-462);
  cosine to 0 from the epoch's start (L452-456), no warm-up; the class-balanced loader
  (datasets/*.py train_balance: ClassAwareSampler, 4 images a class draw, sampler.py L131), an
  epoch of as many steps as the long-tailed set has batches (L294-295).
- Shift learning on BatchNorm: with shift_bn the backbone runs in train mode (L310-313) under
  no_grad (L341-345): its running mean and variance follow the class-balanced batches while its
  BatchNorm weight and bias, like every other backbone weight, stay as stage 1 left them. So
  `mislas_bn_train` is the config's shift_bn and stage 2 trains ("classifier",) as in the code;
  `mislas_bn_affine` (off) also trains the BatchNorm weight and bias, a reading of "shift
  learning" the code does not take.

Differences from the original protocol, and why:

- The classifier's lr factor: the shared trainer gives every parameter one lr, so the
  classifier's gradient is scaled instead, factor * (grad + wd * w), with weight decay off for it
  in the optimiser: SGD's momentum is linear in the step, so the update is SGD's at factor * lr
  (tests/test_methods_mislas.py checks one against the other).
- Per imbalance factor: the CIFAR configs change smooth_head, smooth_tail, shift_bn and lr_factor
  with the imbalance factor; a method's defaults depend on the dataset only, so they default to
  the IF-100 config, and published.csv records the IF-10 and IF-50 values with those figures.
- Selection: train_stage2.py reports the best test epoch ("Best Prec@1", L260-264); ltbench's
  headline is the last epoch, top1_best keeps the best test epoch and top1_bestval the epoch best
  on the validation split.
- Places-LT: MiSLAS fine-tunes one extra Bottleneck on a frozen ImageNet-pretrained ResNet-152
  (train_stage1.py L123-126, L312-316); ltbench trains from scratch, so that protocol is marked
  unconfirmed and a run there is never labelled paper.
- ResNet-32 on CIFAR: MiSLAS's resnet32_fe (models/resnet_cifar.py) is LDAM-DRW's ResNet-32, as
  ltbench's resnet32_cifar.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.method import Draw, Method, classifier_init
from ltbench.mixing import mix_options, mix_settings
from ltbench.settings import Setting, Stage2Plan, with_default
from ltbench.stages import STAGE1_EPOCH
from ltbench_methods.ce import CrossEntropy
from ltbench_methods.common import with_dataset_defaults

MISLAS = "dvlab-research/MiSLAS@0fc381e"
STAGE1 = f"{MISLAS} train_stage1.py"
STAGE2 = f"{MISLAS} train_stage2.py"
CIFAR10 = f"{MISLAS} config/cifar10/cifar10_imb001"  # IF 100
CIFAR100 = f"{MISLAS} config/cifar100/cifar100_imb001"
IMAGENET = f"{MISLAS} config/imagenet/imagenet_resnet50"
INAT = f"{MISLAS} config/ina2018/ina2018_resnet50"
PLACES = f"{MISLAS} config/places/places_resnet152"
LARGE_INIT = f"{MISLAS} models/resnet.py L312-319: Classifier is a plain nn.Linear (its own init)"


def label_aware_epsilon(class_counts: torch.Tensor, smooth_head: float, smooth_tail: float) -> torch.Tensor:
    """Each class's smoothing factor, the concave schedule of methods.py L39:
    eps_j = eps_K + (eps_1 - eps_K) sin(pi (n_j - n_K) / (2 (n_1 - n_K)))."""
    counts = class_counts.double()
    n_1, n_k = counts.max(), counts.min()
    # equal counts leave nothing to tell head from tail: every class is the head (the original divides 0 by 0)
    share = (counts - n_k) / (n_1 - n_k) if n_1 > n_k else torch.ones_like(counts)
    return (smooth_tail + (smooth_head - smooth_tail) * torch.sin(share * math.pi / 2)).float()


def label_aware_smoothing_loss(logits: torch.Tensor, labels: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """(1 - eps_y) (-log p_y) + eps_y mean_k (-log p_k), averaged over the batch (methods.py L55-64)."""
    smoothing = epsilon[labels]
    log_p = F.log_softmax(logits, dim=-1)
    nll = -log_p.gather(1, labels.unsqueeze(1)).squeeze(1)
    return ((1 - smoothing) * nll + smoothing * -log_p.mean(dim=-1)).mean()


def _stage1_large(config: str, epochs: int, weight_decay: float) -> dict:
    where = f"{config}_stage1_mixup.yaml"
    return {
        "epochs": (epochs, f"{where} L42: num_epochs {epochs}"),
        "batch_size": (256, f"{where} L40: batch_size 256"),
        "weight_decay": (weight_decay, f"{where} L41: weight_decay {weight_decay}"),
        "schedule": ("cosine", f"{where} L44: cos True; {STAGE1} L435-438: cosine to 0 from each epoch's start"),
        "warmup_epochs": (0, f"{STAGE1} L435-438: the cosine schedule has no warm-up"),
    }


class MixupCrossEntropy(CrossEntropy):
    """Cross-entropy on mixup batches (Zhang et al., ICLR 2018), MiSLAS's stage 1 (Zhong et al., CVPR 2021)."""

    name, display_name = "ce_mixup", "CE (mixup)"
    hyperparameters = {
        "classifier_init": classifier_init("kaiming_normal", f"{MISLAS} models/resnet_cifar.py L32-35, L157-161: "
                                                             "kaiming_normal_ on the Classifier's nn.Linear"),
        **mix_settings("mixup", 1.0, f"{CIFAR10}_stage1_mixup.yaml L45: mixup True; {STAGE1} L310-320",
                       f"{CIFAR10}_stage1_mixup.yaml L46: alpha 1.0; {MISLAS} methods.py L11: np.random.beta"),
    }
    draws = {"main": Draw(mix="mixup", mix_alpha=1.0)}  # an instance's follow its hyperparameters
    trainer_defaults = {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4,
                        "schedule": "step", "warmup_epochs": 5, "milestones": [0.8, 0.9], "lr_factors": [0.1, 0.01]}
    trainer_sources = {
        "epochs": f"{CIFAR10}_stage1_mixup.yaml L42: num_epochs 200",
        "batch_size": f"{CIFAR10}_stage1_mixup.yaml L40: batch_size 128",
        "lr": f"{CIFAR10}_stage1_mixup.yaml L39: lr 0.1",
        "momentum": f"{CIFAR10}_stage1_mixup.yaml L43: momentum 0.9",
        "weight_decay": f"{CIFAR10}_stage1_mixup.yaml L41: weight_decay 2e-4",
        "schedule": f"{CIFAR10}_stage1_mixup.yaml L44: cos False; {STAGE1} L439-448: steps",
        "warmup_epochs": f"{STAGE1} L441-442: lr * epoch / 5 over the first 5 epochs (1-based)",
        "milestones": f"{STAGE1} L443-446: x0.1 after epoch 160, x0.01 after 180 (of 200)",
        "lr_factors": f"{STAGE1} L443-446: lr * 0.1, then lr * 0.01",
    }
    dataset_trainer_defaults = {
        "imagenet_lt": {**_stage1_large(IMAGENET, 180, 5e-4),
                        "backbone": ("resnet50", f"{IMAGENET}_stage1_mixup.yaml L13: backbone resnet50_fe")},
        "inat2018": {**_stage1_large(INAT, 200, 1e-4),
                     "train_color_jitter": (0.4, f"{MISLAS} datasets/ina2018.py L96: ColorJitter(0.4, 0.4, 0.4)")},
        "places_lt": {**_stage1_large(PLACES, 90, 5e-4),
                      "backbone": ("resnet152", f"{PLACES}_stage1_mixup.yaml L13: backbone resnet152_fe")},
    }
    unconfirmed_protocol = {
        "places_lt": "MiSLAS trains one extra Bottleneck on a frozen ImageNet-pretrained ResNet-152 (train_stage1.py "
                     "L123-126, L312-316); ltbench trains the whole ResNet-152 from scratch",
    }
    by_dataset = {name: {"mix_alpha": (0.2, f"{config}_stage1_mixup.yaml L46: alpha 0.2")}
                  for name, config in (("imagenet_lt", IMAGENET), ("inat2018", INAT), ("places_lt", PLACES))}

    @classmethod
    def settings(cls, dataset):
        own = with_dataset_defaults(super().settings(dataset), dataset, cls.by_dataset)
        if dataset.family != "cifar":
            own["classifier_init"] = with_default(own["classifier_init"], "default", LARGE_INIT)
        return own

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.draws = {"main": Draw(**mix_options(hp))}


def _stage2(config: str, head: float, tail: float, shift: bool, factor: float, batch: int | None = None,
            weight_decay: float | None = None) -> dict[str, tuple]:
    """A MiSLAS stage-2 config's values (`config` without _stage2_mislas.yaml), where they differ from CIFAR-10-LT's."""
    where = f"{config}_stage2_mislas.yaml"
    values = {"smooth_head": (head, f"{where} L39: smooth_head {head}"),
              "smooth_tail": (tail, f"{where} L40: smooth_tail {tail}"),
              "mislas_bn_train": (shift, f"{where} L41: shift_bn {shift}"),
              "classifier_lr_factor": (factor, f"{where} L42: lr_factor {factor}")}
    if batch is not None:
        values["mislas_batch_size"] = (batch, f"{where} L44: batch_size {batch}")
    if weight_decay is not None:
        values["mislas_weight_decay"] = (weight_decay, f"{where} L45: weight_decay {weight_decay}")
    return values


BY_DATASET = {
    "cifar100_lt": _stage2(CIFAR100, 0.4, 0.1, True, 0.2),
    "imagenet_lt": _stage2(IMAGENET, 0.3, 0.0, True, 0.05, batch=256, weight_decay=5e-4),
    "inat2018": _stage2(INAT, 0.3, 0.0, True, 0.05, batch=256, weight_decay=1e-4),
    "places_lt": _stage2(PLACES, 0.4, 0.1, True, 0.05, batch=256, weight_decay=5e-4),
}
C10 = f"{CIFAR10}_stage2_mislas.yaml"


class MiSLAS(Method):
    """MiSLAS: mixup stage 1, then label-aware smoothing and BatchNorm shift on class-balanced batches (Zhong et al., CVPR 2021)."""

    name, display_name = "mislas", "MiSLAS"
    stage1 = MixupCrossEntropy
    draws = {"main": Draw(sampler="class_balanced", per_class=4)}
    hyperparameters = {
        "stage1_epoch": STAGE1_EPOCH,
        "smooth_head": Setting(0.3, "eps_1, the label smoothing of the largest class", low=0, high=1,
                               source=f"{C10} L39: smooth_head 0.3"),
        "smooth_tail": Setting(0.0, "eps_K, the label smoothing of the smallest class", low=0, high=1,
                               source=f"{C10} L40: smooth_tail 0.0"),
        "classifier_lr_factor": Setting(0.5, "the classifier's share of the stage-2 lr (the scales train at the "
                                        "full lr)", above=0, high=100,
                                        source=f"{C10} L42: lr_factor 0.5; {STAGE2} L458-462"),
        "mislas_lr": Setting(0.1, "stage-2 learning rate (cosine to 0)", above=0, high=1e3,
                             source=f"{C10} L43: lr 0.1; {STAGE2} L452-456: cosine"),
        "mislas_epochs": Setting(10, "stage-2 epochs", low=1, high=100_000, source=f"{C10} L46: num_epochs 10"),
        "mislas_batch_size": Setting(128, "stage-2 batch size", low=1, high=1_000_000,
                                     source=f"{C10} L44: batch_size 128"),
        "mislas_momentum": Setting(0.9, "stage-2 SGD momentum", low=0, below=1, source=f"{C10} L47: momentum 0.9"),
        "mislas_weight_decay": Setting(2e-4, "stage-2 weight decay", low=0, high=1,
                                       source=f"{C10} L45: weight_decay 2e-4"),
        "mislas_per_class": Setting(4, "images of a class per class-balanced draw (ClassAwareSampler)", low=1,
                                    high=100_000, source=f"{MISLAS} datasets/sampler.py L131: num_samples_cls=4"),
        "mislas_bn_train": Setting(False, "shift learning on BatchNorm: the frozen backbone's BatchNorm in train "
                                   "mode, its running statistics following the class-balanced batches",
                                   source=f"{C10} L41: shift_bn False; {STAGE2} L310-313"),
        "mislas_bn_affine": Setting(False, "also train the backbone's BatchNorm weight and bias in stage 2",
                                    source=f"{STAGE2} L241-244, L341-345: only the classifier and the scales "
                                           "train, the backbone under no_grad"),
    }

    @classmethod
    def settings(cls, dataset):
        return with_dataset_defaults(super().settings(dataset), dataset, BY_DATASET)

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = nn.Linear(feature_dim, self.num_classes)
        self.scales = nn.Parameter(torch.ones(self.num_classes))  # LearnableWeightScaling's learned_norm
        self.register_buffer("epsilon", label_aware_epsilon(self.class_counts, hp["smooth_head"], hp["smooth_tail"]))
        self.draws = {"main": Draw(sampler="class_balanced", per_class=hp["mislas_per_class"])}
        factor, decay = hp["classifier_lr_factor"], hp["mislas_weight_decay"]
        for weight in self.classifier.parameters():
            # the classifier's SGD step at factor * lr: its weight decay is added here (and is
            # off for it in the optimiser, no_weight_decay) so that both are scaled
            weight.register_hook(lambda grad, w=weight: factor * (grad + decay * w.detach()))

    def no_weight_decay(self):
        return {"classifier.weight", "classifier.bias"}

    def load_stage1(self, stage1):
        self.classifier.load_state_dict(stage1.classifier.state_dict())

    def logits(self, features):
        return self.classifier(features) * self.scales

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        return label_aware_smoothing_loss(self.logits(backbone(batch.views[0])).float(), batch.labels, self.epsilon)

    def stage2(self):
        hp = self.hp
        # train_stage2.py evaluates after every epoch (L258), and reports the best
        return Stage2Plan(
            epochs=hp["mislas_epochs"], batch_size=hp["mislas_batch_size"],
            settings={"lr": hp["mislas_lr"], "momentum": hp["mislas_momentum"],
                      "weight_decay": hp["mislas_weight_decay"], "schedule": "cosine", "warmup_epochs": 0,
                      "eval_every": 1},
            bn_train=hp["mislas_bn_train"],
            trains=("classifier", "batchnorm_affine") if hp["mislas_bn_affine"] else ("classifier",))

