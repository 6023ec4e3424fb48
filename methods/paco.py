"""PaCo (Cui et al., ICCV 2021): supervised contrastive learning against a momentum encoder's
keys and a queue of earlier keys, with a set of parametric class-wise learnable centres as extra
positives, weighted so that the centres rebalance what the samples bias towards the head:

    L_i = - sum_{z+ in P(i) u {c_y}} w(z+) log( exp(z+ . T(x_i)) / sum_{z_k in A(i) u C} exp(z_k . T(x_i)) )

w = alpha for a sample of the same class (P(i): the batch's queries and keys and the queue,
x_i itself excluded), beta for the class centre c_y; in the denominator every centre counts
once and every other sample gamma times; the sum is divided by the sum of the weights.

Follows dvlab-research/Parametric-Contrastive-Learning at commit
fe56535ecd716e56a72e75c4e818f2059e557584, PaCo/LT: losses.py (PaCoLoss), moco/builder.py (MoCo),
paco_cifar.py and sh/CIFAR100_train_imb0.01.sh (the CIFAR-100-LT command), paco_lt.py with
sh/ImageNetLT_train_X50.sh and sh/Inat_train_R50.sh (ImageNet-LT and iNaturalist 2018). Where the paper's
text and the code differ ltbench follows the code, whose runs gave the published figures:

- The centres are the linear classifier on the backbone's pooled 64-d feature (builder.py L44,
  L227: `self.linear(self.feat_after_avg_q)`, the hook on the pool, L71): a centre's term is
  w_c . f(x_i) + b_c, neither normalised nor divided by the temperature (losses.py L41); the
  sample terms are cosines of the 32-d projections divided by the temperature (L36-38). The
  same classifier is the one used at test time (builder.py L231-236).
- Logit adjustment (losses.py L41): the centre logits are shifted by log pi_c, the training
  prior, before the loss and not at test time (Menon et al.'s logit-adjusted loss with tau 1),
  so the centre part of the loss is a balanced softmax. `logit_adjust=false` drops it.
- The loss multiplies by temperature / base_temperature, 1 in PaCo (base_temperature unset,
  losses.py L11); it is left out.

PaCo's key encoder and queue are ltbench.momentum's: the key encoder (backbone and projection
head) moves by momentum 0.999 before each step's keys are computed (builder.py L209), the queue
of K = 1024 keys and their labels is read before this step's keys are written over its oldest
(L221-224), and it starts from random features and labels as MoCo's does (L63-66). Both are
buffers of the method, so they are checkpointed and resume with it. Data-parallel, as the
original's DDP (paco_cifar.py L212, paco_lt.py L219): the keys are encoded with MoCo's batch
shuffle across ranks (builder.py L143-192, L211-218), every rank writes every rank's keys into
its queue in rank order (concat_all_gather, L123-126), so the queues stay one queue, and each
rank's loss contrasts its own queries with its own keys and that queue (L221-222 concatenate the
GPU's own q and k), the per-GPU losses DDP averages. GPaCo's enqueue gathers alike (GPaCo/LT
builder.py L86-89).

Differences from the original protocol, and why:

- Warm-up: paco_cifar.py's adjust_learning_rate (L586-597) ramps lr * (epoch + 1) / 10 while
  epoch <= 10, so its 11th epoch runs at 1.1 lr; the shared trainer ramps over epochs 0-9 and
  runs epoch 10 at lr.
- The last batch of an epoch: the original drops it (drop_last=True, L395) and asserts that the
  queue is a multiple of the batch (builder.py L132); here the last, smaller batch trains and
  the queue wraps around at any batch size.
- AutoAugment: torchvision's CIFAR-10 policy rather than autoaug.py's PIL one (the same
  sub-policies; see ltbench.data.paired_augment for the two differences).
- Selection: paco_cifar.py prints the best test accuracy over epochs (L415-418); ltbench reports
  the last epoch, and separately the one chosen on validation.
- Backbone: PaCo's CIFAR ResNet-32 is LDAM-DRW's (models/resnet_cifar.py, 64-d), as ltbench's
  resnet32_cifar is.
- Views: the query and the key are two views of the same images, one draw (MoCo's
  TwoCropsTransform, paco_cifar.py L367-368, paco_lt.py L390-401), on every loader.
- The large datasets: ImageNet-LT and iNaturalist 2018 follow paco_lt.py and their commands
  (sh/ImageNetLT_train_X50.sh, the ResNeXt-50 of ltbench's imagenet_lt protocol, and
  sh/Inat_train_R50.sh): the query augmentation_randnclsstack (ImageNet-LT) or
  augmentation_randncls (iNaturalist), the key augmentation_sim, alpha 0.05, temperature 0.07 /
  0.2, 8192 keys of 128 dimensions, 400 epochs, batch 128, lr 0.02, cosine after a 10-epoch
  warm-up, wd 5e-4 / 1e-4. Their RandAugment is timm's rand_augment_transform with paco_lt.py's
  'rand-n2-m10-mstd0.5' and ra_params, which draws as the randaugment.py it imports, a copy of
  timm's (ltbench.data.paired_augment says what differs: names only). paco_lt.py's
  cosine, lr * (1 + cos(pi (e - 9) / (E - 9))) / 2 after the warm-up (L618-629), never reaches 0;
  the shared trainer's does. Places-LT stays unconfirmed:
  PaCo fine-tunes an ImageNet-pretrained ResNet-152 there (sh/PlacesLT_train_R152.sh).

GPaCo (Cui et al., TPAMI 2023; GPaCo/LT at the same commit) is `variant=gpaco`: no momentum
encoder, the keys come from the online encoder with their gradient and are anchors too (both
views, 2N anchors, each with its centre logits; GPaCo/LT/moco/builder.py L111-127,
losses.py L33), the projection head is Linear-ReLU-Linear-ReLU-Linear without BatchNorm
(builder.py L47), and the key view's blur has p 0.2 (paco_cifar.py L285-297,
`augmentation_aug_cifar` for an imbalanced CIFAR). GPaCo's long-tailed CIFAR command is not in
the repository (its sh/CIFAR runs balanced CIFAR-100 with ResNet-50), so every other value
stays PaCo's.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.data.loader import AUGMENTATIONS
from ltbench.method import Draw, Method, View
from ltbench.momentum import FeatureQueue, MomentumEncoder
from ltbench.settings import Search, Setting
from ltbench_methods.common import log_prior, with_dataset_defaults

PACO = "dvlab-research/Parametric-Contrastive-Learning@fe56535"
PAPER = "Cui et al. 2021 (ICCV, arXiv:2107.12028)"
COMMAND = f"{PACO} PaCo/LT/sh/CIFAR100_train_imb0.01.sh"
TRAIN = f"{PACO} PaCo/LT/paco_cifar.py"
BUILDER = f"{PACO} PaCo/LT/moco/builder.py"
LOSSES = f"{PACO} PaCo/LT/losses.py"
GPACO = f"{PACO} GPaCo/LT"
LARGE = f"{PACO} PaCo/LT/paco_lt.py"
IMAGENET = f"{PACO} PaCo/LT/sh/ImageNetLT_train_X50.sh"
INAT = f"{PACO} PaCo/LT/sh/Inat_train_R50.sh"

VARIANTS = ("paco", "gpaco")
# the key augmentations with SimCLR's blur, whose probability key_blur_p sets
BLURRED_KEYS = ("simclr_blur", "sim_blur", "sim_blur_rand")


def paco_loss(anchors: torch.Tensor, labels: torch.Tensor, contrast: torch.Tensor, contrast_labels: torch.Tensor,
              centre_logits: torch.Tensor, alpha: float, beta: float, gamma: float,
              temperature: float) -> torch.Tensor:
    """Mean PaCo loss of the anchors (rows 0..n-1 of `contrast`, each its own excluded pair):

    - `contrast` (M, d), `contrast_labels` (M,): the samples, L2-normalised;
    - `centre_logits` (n, C): each anchor's centre terms, already adjusted (PaCo adds log pi);
    - weights: beta on the anchor's own centre, alpha on each other sample of its class; in the
      denominator the centres count 1 and the other samples gamma.
    """
    n = len(labels)
    sample_logits = anchors @ contrast.T / temperature
    self_pair = torch.zeros_like(sample_logits, dtype=torch.bool)
    self_pair[torch.arange(n), torch.arange(n)] = True
    positives = (labels[:, None] == contrast_labels[None, :]) & ~self_pair
    log_gamma = math.log(gamma) if gamma > 0 else float("-inf")
    others = sample_logits.masked_fill(self_pair, float("-inf")) + log_gamma
    log_denominator = torch.cat([centre_logits, others], dim=1).logsumexp(dim=1)
    log_prob_centre = centre_logits.gather(1, labels[:, None]).squeeze(1) - log_denominator
    log_prob_samples = (sample_logits - log_denominator[:, None]).masked_fill(~positives, 0.0).sum(dim=1)
    weights = beta + alpha * positives.sum(dim=1).to(log_prob_samples.dtype)
    return -((beta * log_prob_centre + alpha * log_prob_samples) / weights).mean()


class ProjectionMLP(nn.Module):
    """PaCo's projection head on the pooled feature, L2-normalised, in fp32 (a cosine divided by
    a temperature of 0.05 would carry bf16's rounding into the logits 20 times over).

    PaCo: Linear(d, d), BatchNorm1d(d), ReLU, then the encoder's own fc, Linear(d, dim),
    kaiming-normal as the ResNet's init gives it (builder.py L48-51, resnet_cifar.py L10-13,
    L87). GPaCo: Linear, ReLU, Linear, ReLU, Linear, no BatchNorm (GPaCo builder.py L47).
    """

    def __init__(self, in_features: int, out_features: int, variant: str):
        super().__init__()
        if variant == "gpaco":
            layers = [nn.Linear(in_features, in_features), nn.ReLU(inplace=True),
                      nn.Linear(in_features, in_features), nn.ReLU(inplace=True)]
        else:
            layers = [nn.Linear(in_features, in_features), nn.BatchNorm1d(in_features), nn.ReLU(inplace=True)]
        last = nn.Linear(in_features, out_features)
        nn.init.kaiming_normal_(last.weight)
        self.mlp = nn.Sequential(*layers, last)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):
            return F.normalize(self.mlp(features.float()), dim=1)


# PaCo/LT/paco_lt.py trains ImageNet-LT and iNaturalist 2018 with its own arguments; the ImageNet-LT
# values are the ResNeXt-50 command's, the backbone ltbench's imagenet_lt protocol trains
def _large(temperature: tuple, query: tuple) -> dict:
    return {
        "alpha": (0.05, "--alpha 0.05 of the ImageNet-LT and iNaturalist commands (" + IMAGENET + " L19, "
                  + INAT + " L19)"),
        "temperature": temperature,
        "queue_size": (8192, f"{LARGE} L97: --moco-k default 8192 (the commands keep it)"),
        "projection_dim": (128, f"{LARGE} L95: --moco-dim default 128 (the commands keep it)"),
        "query_augment": query,
        "key_augment": ("sim_blur", f"{LARGE} L325-335, L396-399: the key of randcls_sim and randclsstack_sim "
                        "is augmentation_sim (RandomResizedCrop, ColorJitter(0.4, 0.4, 0.4, 0) p 1, grayscale "
                        "p 0.2, blur p 0.5, flip)"),
    }


BY_DATASET = {
    "imagenet_lt": _large((0.07, f"{IMAGENET} L25: --moco-t 0.07"),
                          ("sim_blur_rand", f"{IMAGENET} L26: --aug randclsstack_sim; {LARGE} L351-362, L398-399: "
                           "augmentation_randnclsstack, RandAugment rand-n2-m10-mstd0.5")),
    "inat2018": _large((0.2, f"{INAT} L25: --moco-t 0.2"),
                       ("rand_cls", f"{INAT} L26: --aug randcls_sim; {LARGE} L364-373, L396-397: "
                        "augmentation_randncls, RandAugment rand-n2-m10-mstd0.5")),
}
_TRAINER = {
    "epochs": (400, f"{IMAGENET} L30, {INAT} L31: --epochs 400"),
    "batch_size": (128, f"{LARGE} L56: -b default 128, the batch of all GPUs together (L217)"),
    "lr": (0.02, f"{IMAGENET} L24, {INAT} L24: --lr 0.02"),
    "schedule": ("cosine", f"{LARGE} L109, L618-629: --cos default True, cosine after the warm-up"),
    "warmup_epochs": (10, f"{LARGE} L119: --warmup_epochs default 10"),
}
TRAINER_BY_DATASET = {
    "imagenet_lt": {**_TRAINER, "weight_decay": (5e-4, f"{IMAGENET} L22: --wd 5e-4")},
    "inat2018": {**_TRAINER, "weight_decay": (1e-4, f"{INAT} L22: --wd 1e-4")},
}


class PaCo(Method):
    """PaCo, parametric contrastive learning: class centres, momentum keys and a queue (Cui et al., ICCV 2021)."""

    name, display_name = "paco", "PaCo"
    hyperparameters = {
        "alpha": Setting(0.01, "weight of each same-class sample among the positives (the centre's is beta)",
                         low=0, high=100, source=f"{COMMAND} L19: --alpha 0.01 (also at IF 50 and 10)",
                         search=Search(0.001, 0.1, log=True, source="ltbench default: a decade either side of the "
                                       "CIFAR commands' 0.01")),
        "beta": Setting(1.0, "weight of the class centre among the positives", above=0, high=100,
                        source=f"{COMMAND} L20: --beta 1.0"),
        "gamma": Setting(1.0, "weight of the other samples in the denominator (the centres' is 1)", low=0, high=100,
                         source=f"{COMMAND} L21: --gamma 1.0"),
        "temperature": Setting(0.05, "temperature of the sample terms (the centre terms have none)", above=0, high=100,
                               source=f"{COMMAND} L25: --moco-t 0.05",
                               search=Search(0.02, 0.2, log=True, source="ltbench default: log-uniform around the "
                                             "CIFAR command's 0.05, up to MoCo's 0.2")),
        "queue_size": Setting(1024, "keys in the queue (K)", low=1, high=10_000_000,
                              source=f"{COMMAND} L26: --moco-k 1024"),
        "projection_dim": Setting(32, "width of the normalised projection", low=1, high=65_536,
                                  source=f"{COMMAND} L27: --moco-dim 32"),
        "key_momentum": Setting(0.999, "momentum m of the key encoder, theta_k <- m theta_k + (1 - m) theta_q",
                                low=0, high=1, source=f"{TRAIN} L98: --moco-m default 0.999 (the command keeps "
                                                      f"it); {BUILDER} L116-119: the update"),
        "logit_adjust": Setting(True, "shift the centre logits by the log training prior in the loss",
                                source=f"{LOSSES} L41: sup_logits + torch.log(self.weight + 1e-9)"),
        "query_augment": Setting("autoaugment_cutout", "augmentation of the query view (autoaugment_cutout: PaCo's "
                                 "CIFAR recipe; rand_cls, sim_blur_rand: its RandAugment ones on the large datasets)",
                                 choices=tuple(AUGMENTATIONS),
                                 source=f"{TRAIN} L312-320, L367-368: --aug cifar100, augmentation_regular "
                                        "(RandomCrop, flip, CIFAR10Policy, Cutout(1, 16))"),
        "key_augment": Setting("simclr_blur", "augmentation of the key view (simclr_blur: PaCo's CIFAR key; "
                               "sim_blur: its key on the large datasets)", choices=tuple(AUGMENTATIONS),
                               source=f"{TRAIN} L322-332, L367-368: augmentation_sim_cifar (RandomResizedCrop(0.2, "
                                      "1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, blur)"),
        "key_blur_p": Setting(0.5, "probability of the Gaussian blur of the key view (SimCLR's, sigma 0.1-2)",
                              low=0, high=1, source=f"{TRAIN} L322-332: augmentation_sim_cifar, "
                                                    "RandomApply([GaussianBlur([.1, 2.])], p=0.5)"),
        "variant": Setting("paco", "paco (a momentum key encoder) or gpaco (GPaCo, TPAMI 2023: one encoder, both "
                           "views anchors, no BatchNorm in the head, key blur p 0.2)", choices=VARIANTS,
                           source=f"{PAPER}; GPaCo: {GPACO}/moco/builder.py, losses.py"),
    }
    trainer_defaults = {
        "epochs": 400,
        "batch_size": 128,
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "step",
        "warmup_epochs": 10,
        "milestones": [0.8025, 0.9025],
        "lr_factors": [0.1, 0.01],
    }
    trainer_sources = {
        "epochs": f"{COMMAND} L31: --epochs 400",
        "batch_size": f"{TRAIN} L53: -b default 128 (the command keeps it)",
        "lr": f"{COMMAND} L24: --lr 0.05",
        "momentum": f"{TRAIN} L64: --momentum default 0.9",
        "weight_decay": f"{COMMAND} L22: --wd 5e-4",
        "schedule": f"{TRAIN} L586-597: adjust_learning_rate, steps (the --cos flag is never read)",
        "warmup_epochs": f"{TRAIN} L119, L588-589: warmup_epochs 10, lr * (epoch + 1) / 10",
        "milestones": f"{TRAIN} L590-593: x0.1 for epoch > 320, x0.01 for epoch > 360 (epochs 321 and 361 of 400)",
        "lr_factors": f"{TRAIN} L591, L593: lr * 0.1, then lr * 0.01",
    }
    dataset_trainer_defaults = TRAINER_BY_DATASET
    unconfirmed_protocol = {
        "places_lt": "PaCo fine-tunes an ImageNet-pretrained ResNet-152 for 30 epochs in fp16 (PaCo/LT/sh/"
                     "PlacesLT_train_R152.sh: --reload_torch, --epochs 30, --fp16); ltbench trains it from scratch",
    }
    draws = {"main": Draw("instance", per_view=(View("autoaugment_cutout"), View("simclr_blur")))}

    @classmethod
    def settings(cls, dataset):
        return with_dataset_defaults(super().settings(dataset), dataset, BY_DATASET)

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        gpaco = hp["variant"] == "gpaco"
        # GPaCo's imbalanced-CIFAR key view blurs with p 0.2 (GPaCo/LT/paco_cifar.py L285-297)
        blur = 0.2 if gpaco else hp["key_blur_p"]
        key_options = {"blur_p": blur} if hp["key_augment"] in BLURRED_KEYS else {}
        # one draw, two views of the same images: the query and the key (MoCo's TwoCropsTransform)
        self.draws = {"main": Draw("instance", per_view=(View(hp["query_augment"]),
                                                         View(hp["key_augment"], key_options)))}
        self.classifier = nn.Linear(feature_dim, self.num_classes)
        self.projection = ProjectionMLP(feature_dim, hp["projection_dim"], hp["variant"])
        self.key_encoder = None if gpaco else MomentumEncoder(hp["key_momentum"])
        self.queue = FeatureQueue(hp["queue_size"], hp["projection_dim"], self.num_classes)

    def centre_logits(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(features).float()
        return logits + log_prior(self.class_counts) if self.hp["logit_adjust"] else logits

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        n = len(batch.labels)
        query_images, key_images = batch.views
        query_features = backbone(query_images)
        queries = self.projection(query_features)
        if self.key_encoder is not None:
            # MoCo moves the key encoder first, then encodes this step's keys with it
            self.key_encoder.follow(backbone, self.projection)
            keys = self.key_encoder(key_images).float()
            return self.feature_loss(torch.cat([queries, keys]), batch.labels.repeat(2), query_features)
        # GPaCo: the keys come from the same encoder with their gradient, and are anchors too
        key_features = backbone(key_images)
        anchors, labels = torch.cat([queries, self.projection(key_features)]), batch.labels.repeat(2)
        centre_logits = self.centre_logits(torch.cat([query_features, key_features]))
        return self.contrast(anchors, labels, anchors, labels, centre_logits, anchors[n:], batch.labels)

    def feature_loss(self, embeddings: torch.Tensor, labels: torch.Tensor,
                     features: torch.Tensor | None = None) -> torch.Tensor:
        """PaCo's loss given a step's queries over its keys (`embeddings`, 2N x d, L2-normalised,
        `labels` repeated as the hybrids' feature losses take two views), the centres scoring
        `features` (default: the queries, where the method was built on features that wide, as
        `ltbench bench --memory` builds it); the keys enter the queue after."""
        n = len(labels) // 2
        queries, keys = embeddings[:n], embeddings[n:].detach()
        centre_logits = self.centre_logits(queries if features is None else features)
        return self.contrast(queries, labels[:n], torch.cat([queries, keys]), labels, centre_logits, keys, labels[n:])

    def contrast(self, anchors, labels, samples, sample_labels, centre_logits, keys, key_labels) -> torch.Tensor:
        """The loss of the anchors (the first rows of `samples`) against the samples and the queue
        as it was before this step, whose oldest entries the keys then replace."""
        # a copy of the queue: the keys are written over it below
        contrast = torch.cat([samples, self.queue.features.clone()])
        contrast_labels = torch.cat([sample_labels, self.queue.labels.clone()])
        # cosines divided by 0.05: the products stay in fp32 under autocast, as the head does
        with torch.autocast(anchors.device.type, enabled=False):
            loss = paco_loss(anchors.float(), labels, contrast.float(), contrast_labels, centre_logits.float(),
                             self.hp["alpha"], self.hp["beta"], self.hp["gamma"], self.hp["temperature"])
        self.queue.enqueue(keys.detach(), key_labels)
        return loss

    def logits(self, features):
        return self.classifier(features)
