"""GCL, Gaussian clouded logit adjustment (Li et al., CVPR 2022): stage 1 trains backbone and
cosine classifier with the GCL loss, which lowers each cosine logit of class j by
noise_mul |n| log(n_max / n_j) / log(n_max / n_min), n ~ N(0, 1/3) clipped to [-1, 1] and drawn
anew for every image and class, so a rarer class's logits form a wider cloud below its cosine;
then the target's cosine minus a margin m, scaled by s, goes to cross-entropy. Stage 2 keeps
the backbone, re-trains the stage-1 cosine classifier on class-balanced re-sampled batches with
the same loss (its own margin and scale) weighted as the focal loss.

Follows Keke921/GCLLoss at commit c2a62338ebb7753178b5c3ec5a69a4fb04069109: losses.py (GCLLoss,
L53-83; focal_loss, L9-13), cifar_train_backbone.py (stage 1), cifar_train_classifier.py
(stage 2), sampler.py (BalancedDatasetSampler), models/resnet_cifar.py (NormedLinear) and the
README's commands (--batch_size 64 --learning_rate 0.1 in both stages), utils.py (mixup_data
L142-158, mixup_criterion L139-140).

Both stages train on mixup batches, as both scripts do by default (--mixup default True,
cifar_train_backbone.py L39, L290-293; cifar_train_classifier.py L47, L324-336; `type=bool`
makes any value given on the command line True): mixup_data draws lambda ~ Beta(1, 1) and
pairs each image with another of its batch; mixup_criterion is lambda times the criterion on
the images' labels plus 1 - lambda times it on the partners'. Each criterion call draws its
own Gaussian noise, so the two terms see different clouds. Stage 2 mixes its class-balanced
batches before the frozen backbone and weights the focal GCL loss the same way. Here the
trainer mixes (ltbench.mixing, `batch_mix` / `mix_alpha` in stage 1, `gcl_batch_mix` /
`gcl_mix_alpha` in stage 2; `--set gcl_stage1.batch_mix=none` trains stage 1 on plain batches) and the
loss is `mixed_loss` of gcl_loss, which draws its noise per call as GCLLoss does. The Places-LT
backbone script mixes with alpha 0.2 (Places-LT/pla_train_backbone.py L294), stage 1's default
there.

Differences from the original, and why:

- Equal class counts: GCLLoss divides by max_j log(n_max / n_j), which is 0 when every class
  has as many images (0 / 0 = NaN); ltbench adds no noise there, the limit of a vanishing
  imbalance.
- Selection: both scripts keep the checkpoint best on the test set (stage 2 starts from
  ckpt.best.pth.tar); ltbench keeps the last epoch of each stage.
- Stage 2's sampler: the code's default and the README's command (--train_rule BalancedRS,
  cifar_train_classifier.py L37, L171-173) use BalancedDatasetSampler, which draws images with
  replacement, each with probability 1 / (C n_y); the paper's abstract names a "class-based
  effective number sampling" (the code's EffectNumRS / CBENRS rules). ltbench follows the
  command; its class_balanced sampler draws a class uniformly, then an image of it: the same
  distribution as BalancedRS.
- Mixup's lambda comes from torch's generator (np.random.beta in utils.py L145): the same
  Beta(alpha, alpha), another random stream, which checkpoints save and restore.
- The noise: GCLLoss samples torch.distributions.Normal(0, 1/3); ltbench scales a standard
  normal draw by 1/3 (the same distribution, another random stream), so a test can pass in
  a seeded generator.
- ImageNet-LT, iNaturalist 2018 and Places-LT: the repository's scripts cover CIFAR-LT only
  (Places-LT's fine-tune a pre-trained ResNet-152), so those protocols are marked unconfirmed.
"""

import torch
import torch.nn.functional as F

from ltbench.method import Draw, LinearClassifierMethod, Method
from ltbench.mixing import mix_options, mix_settings, mixed_loss
from ltbench.settings import Setting
from ltbench.stages import STAGE1_EPOCH
from ltbench_methods.common import NormedLinear, classifier_stage2, with_dataset_defaults

GCL = "Keke921/GCLLoss@c2a6233"
PAPER = "Li et al. 2022 (CVPR)"
BACKBONE = f"{GCL} cifar_train_backbone.py"
CLASSIFIER = f"{GCL} cifar_train_classifier.py"
README = f"{GCL} README.md"
UTILS = f"{GCL} utils.py"
NOT_IN_CODE = "the repository's scripts train CIFAR-LT only; no protocol for this dataset is in its code"
UNCONFIRMED = {name: NOT_IN_CODE for name in ("imagenet_lt", "inat2018", "places_lt")}


def cloud_amplitudes(class_counts: torch.Tensor) -> torch.Tensor:
    """log n_max - log n_j over its largest value (GCLLoss L58-59, L78): 0 for the most frequent
    class, 1 for the rarest; all 0 where every class has as many images."""
    gaps = class_counts.max().log() - class_counts.log()
    largest = gaps.max()
    return gaps / largest if largest > 0 else torch.zeros_like(gaps)


def gcl_loss(cosine: torch.Tensor, labels: torch.Tensor, class_counts: torch.Tensor, margin: float, scale: float,
             noise_mul: float, focal_gamma: float | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """GCLLoss.forward (losses.py L71-83): cosine - noise_mul |n| amplitude_j, the target's
    lowered by `margin` too, times `scale`, to cross-entropy; n ~ N(0, 1/3) clipped to [-1, 1]
    (L65, L75), drawn from `generator` (torch's default where None). With `focal_gamma` (the
    classifier stage's train_cls) the per-image cross-entropy is weighted by (1 - p_y)^gamma."""
    noise = (torch.randn(cosine.shape, generator=generator, device=cosine.device, dtype=cosine.dtype) / 3).clamp(-1, 1)
    clouded = cosine - noise_mul * noise.abs() * cloud_amplitudes(class_counts.to(cosine))
    clouded = clouded - margin * F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
    if focal_gamma is None:
        return F.cross_entropy(scale * clouded, labels)
    per_image = F.cross_entropy(scale * clouded, labels, reduction="none")
    # focal_loss (L9-13): the weight uses p = exp(-CE), detached
    return ((1 - torch.exp(-per_image.detach())) ** focal_gamma * per_image).mean()


class GCLStage1(LinearClassifierMethod):
    """GCL stage 1: backbone and cosine classifier trained with the Gaussian clouded logit loss (Li et al., CVPR 2022)."""

    name, display_name = "gcl_stage1", "GCL stage 1"
    hyperparameters = {
        "margin": Setting(0.0, "margin m taken off the target's cosine", low=0, high=1,
                          source=f"{BACKBONE} L238: GCLLoss(m=0.)"),
        "scale": Setting(30.0, "scale s of the cosine logits", above=0, high=1000,
                         source=f"{BACKBONE} L238: GCLLoss(s=30)"),
        "noise_mul": Setting(0.5, "amplitude of the Gaussian cloud on the rarest class's cosine", low=0, high=10,
                             source=f"{BACKBONE} L238: GCLLoss(noise_mul=0.5)"),
        **mix_settings("mixup", 1.0, f"{BACKBONE} L39: --mixup default True; L290-293: mixup_data, mixup_criterion",
                       f"{BACKBONE} L291: mixup_data(input, target), alpha default 1.0 ({UTILS} L142, L145)"),
    }
    draws = {"main": Draw(mix="mixup", mix_alpha=1.0)}  # an instance's follow its hyperparameters
    by_dataset = {"places_lt": {"mix_alpha": (0.2, f"{GCL} Places-LT/pla_train_backbone.py L294: "
                                                   "mixup_data(input, target, alpha=0.2)")}}
    trainer_defaults = {
        "epochs": 200,
        "batch_size": 64,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 2e-4,
        "schedule": "step",
        "warmup_epochs": 5,
        "milestones": [0.8, 0.9],
        "lr_factors": [0.1, 0.01],
    }
    trainer_sources = {
        "epochs": f"{BACKBONE} L45: --epochs default 200",
        "batch_size": f"{README} L12: --batch_size 64; {BACKBONE} L49",
        "lr": f"{README} L12: --learning_rate 0.1; {BACKBONE} L52",
        "momentum": f"{BACKBONE} L54: --momentum default 0.9",
        "weight_decay": f"{BACKBONE} L56: --wd default 2e-4",
        "schedule": f"{BACKBONE} L406-418: adjust_learning_rate, steps at epochs 160 and 180",
        "warmup_epochs": f"{BACKBONE} L409-410: lr * epoch / 5 over the first 5 epochs",
        "milestones": f"{BACKBONE} L411-414: epoch > 160 and > 180 (1-based) of 200",
        "lr_factors": f"{BACKBONE} L412, L414: lr * 0.1, then lr * 0.01",
    }
    unconfirmed_protocol = UNCONFIRMED

    @classmethod
    def settings(cls, dataset):
        return with_dataset_defaults(super().settings(dataset), dataset, cls.by_dataset)

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.draws = {"main": Draw(**mix_options(hp))}
        # models/resnet_cifar.py L106-108: use_norm for the GCL loss, the cosine classifier
        self.classifier = NormedLinear(feature_dim, self.num_classes)

    def criterion(self, logits, labels, progress):
        return gcl_loss(logits, labels, self.class_counts, self.hp["margin"], self.hp["scale"], self.hp["noise_mul"])


class GCL(Method):
    """GCL: GCL-loss backbone, cosine classifier re-trained on class-balanced re-sampled batches (Li et al., CVPR 2022)."""

    name, display_name = "gcl", "GCL"
    stage1 = GCLStage1
    # an instance's follow its hyperparameters
    draws = {"main": Draw(sampler="class_balanced", mix="mixup", mix_alpha=1.0)}
    hyperparameters = {
        "stage1_epoch": STAGE1_EPOCH,
        "gcl_margin": Setting(0.1, "stage-2 margin m taken off the target's cosine", low=0, high=1,
                              source=f"{CLASSIFIER} L221: GCLLoss(m=0.1)"),
        "gcl_scale": Setting(20.0, "stage-2 scale s of the cosine logits", above=0, high=1000,
                             source=f"{CLASSIFIER} L221: GCLLoss(s=20)"),
        "gcl_noise_mul": Setting(0.5, "stage-2 amplitude of the Gaussian cloud on the rarest class", low=0, high=10,
                                 source=f"{CLASSIFIER} L222: GCLLoss(noise_mul=0.5)"),
        "gcl_focal_gamma": Setting(1.0, "stage-2 focal weight (1 - p_y)^gamma on each image's loss", low=0, high=10,
                                   source=f"{CLASSIFIER} L222: GCLLoss(train_cls=True, gamma=1.)"),
        "gcl_lr": Setting(0.002, "stage-2 learning rate (cosine to 0)", above=0, high=1e3,
                          source=f"{CLASSIFIER} L466-476: 0.1 x 0.1 (1 + cos(pi e / E)) x --learning_rate 0.1 "
                                 f"(README L21) = 0.002 (1 + cos) / 2"),
        "gcl_epochs": Setting(30, "stage-2 epochs", low=1, high=100_000, source=f"{CLASSIFIER} L43: --epochs default 30"),
        "gcl_batch_size": Setting(64, "stage-2 batch size", low=1, high=1_000_000,
                                  source=f"{README} L21: --batch_size 64; {CLASSIFIER} L48"),
        "gcl_momentum": Setting(0.9, "stage-2 SGD momentum", low=0, below=1, source=f"{CLASSIFIER} L53"),
        "gcl_weight_decay": Setting(2e-4, "stage-2 weight decay", low=0, high=1,
                                    source=f"{CLASSIFIER} L55: --wd default 2e-4"),
        "gcl_bn_train": Setting(False, "keep the frozen backbone's BatchNorm in train mode in stage 2",
                                source=f"{CLASSIFIER} L312: model.eval() on the backbone in training"),
        "gcl_lr_step_first": Setting(False, "step the cosine schedule before each epoch",
                                     source=f"{CLASSIFIER} L274: adjust_learning_rate(epoch) with the 0-based epoch, "
                                            "epoch 0 at the peak"),
        # under gcl_* names as the rest of stage 2's, so a plain --set batch_mix is stage 1's
        **{f"gcl_{key}": setting for key, setting in mix_settings(
            "mixup", 1.0, f"{CLASSIFIER} L47: --mixup default True; L324-336: mixup_data on the class-balanced "
                          "batch, mixup_criterion",
            f"{CLASSIFIER} L325: mixup_data(input, target), alpha default 1.0 ({UTILS} L142, L145)").items()},
    }
    unconfirmed_protocol = UNCONFIRMED

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = NormedLinear(feature_dim, self.num_classes)
        self.draws = {"main": Draw(sampler="class_balanced", mix=hp["gcl_batch_mix"], mix_alpha=hp["gcl_mix_alpha"])}

    def load_stage1(self, stage1):
        # cifar_train_classifier.py L240-244 loads the stage-1 linear.weight into the classifier
        self.classifier.load_state_dict(stage1.classifier.state_dict())

    def stage2(self):
        return classifier_stage2(self.hp, "gcl")

    def logits(self, features):
        return self.classifier(features)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        hp = self.hp

        def criterion(cosine, labels):
            return gcl_loss(cosine, labels, self.class_counts, hp["gcl_margin"], hp["gcl_scale"], hp["gcl_noise_mul"],
                            focal_gamma=hp["gcl_focal_gamma"])

        # cifar_train_classifier.py L336: mixup_criterion of the focal GCL loss on a mixed batch
        return mixed_loss(criterion, self.logits(backbone(batch.views[0])).float(), batch)
