"""BCL, balanced contrastive learning (Zhu, Wang, Chen, Chen and Jiang, CVPR 2022): one backbone,
two branches trained together on the same instance-sampled batches,

    L = alpha * L_LC + beta * L_BCL

L_LC is the logit-compensated cross-entropy of a cosine classifier, -log softmax(s cos + log pi)_y
(logit adjustment with the training prior, Menon et al. 2021), whose plain logits s cos are the
prediction. L_BCL is a supervised contrastive loss over two views of the batch and one prototype
per class, the classifier's weight vectors passed through an MLP head of their own:

    L_BCL(z_i) = -1/|P(i)| sum_{p in P(i)} log( exp(z_i . z_p / tau)
                 / sum_{j in Y} 1/|A_j(i)| sum_{k in A_j(i)} exp(z_i . z_k / tau) )

over the set A of the batch's other embeddings and the C prototypes: P(i) = the members of A with
y_i's class, A_j(i) = A's members of class j, i itself left out. Class-complement is the
prototypes in A (every class is in every batch, and every anchor has its prototype as a
positive); class-averaging is the 1/|A_j(i)|, which gives every class the same weight in the
denominator however many of its images the batch holds.

Follows FlamieZhu/Balanced-Contrastive-Learning at commit
f72d0703794bcec8b00da86774c9d780dc721701 (the same snapshot as FlamieZhu/BCL): loss/contrastive.py
L17-58 (BalSCL), loss/logitadjust.py L10-20 (LogitAdjust), models/resnext.py L8-18 and L285-309
(NormedLinear, s = 30; BCLModel's two heads and its prototypes
`normalize(head_fc(fc.weight.T))`), main.py L24-71 (arguments), L151-192 (views), L299-311 (a
training step), randaugment.py (rand_augment_transform). Where the paper's equation and the code
could differ, ltbench follows the code: |A_j(i)| counts the prototype, and the anchor's own class counts one member fewer (contrastive.py
L49-51: `batch_cls_count[y_j] - mask`), since i is no term of its own denominator.

Differences from the original, and why:

- Views: as main.py (L182-184, L299-311), one instance-sampled draw gives each image three ways,
  the classifier's RandAugment view and two contrastive views, and the backbone takes all three
  in one pass. RandAugment is timm's `rand_augment_transform` with main.py's config
  rand-n2-m10-mstd0.5 and ra_params (ltbench.data.paired_augment), which draws as
  randaugment.py, the copy of timm's that main.py imports (its 15 ops, each applied with p 0.5,
  magnitude N(10, 0.5), bilinear or bicubic at random), seeded from the batch's generator; the
  batched crop and colour jitter are ltbench.data.augment's
  (fixed order of its four adjustments). `contrastive_augment` takes main.py's `--cl_views` pairs
  (`rand` being its augmentation_randnclsstack, SimAugment then RandAugment; the code's branch
  for rand-rand is named randstack-randstack, L188) or any one registered augmentation for both.
- CIFAR-10/100-LT: the released code trains ImageNet-LT and iNaturalist 2018 only (it has no CIFAR
  script), and the paper's text (its CIFAR implementation details and tables) was not readable
  here, so on CIFAR the defaults are main.py's own (lr 0.1, batch 256, wd 5e-4, cosine,
  temperature 0.07, alpha 1, beta 0.35, its views at 32 pixels: RandomResizedCrop(0.08, 1) for
  both branches) on the CIFAR ResNet-32 and 200 epochs of every other method. Every CIFAR figure of
  BCL in published.csv is unconfirmed for the same reason, so no report compares a run with one.
- Schedule: main.py sets a cosine lr once an epoch, lr * (1 + cos(pi (e + 1) / (E + 1))) / 2 for
  0-based epoch e (L398-409), so its last epoch is not at 0; the shared trainer's cosine goes to 0.
- Selection: main.py keeps the epoch best on its validation list (the ImageNet-LT val split; on
  iNaturalist the val list that is also its test set); ltbench reports the last epoch.
"""

import torch

from ltbench import distributed
from ltbench.data.loader import AUGMENTATIONS
from ltbench.method import Draw, Method, View
from ltbench.settings import Search, Setting
from ltbench_methods.common import NormedLinear
from ltbench_methods.hybrid import ProjectionHead
from ltbench_methods.logit_adjust import logit_adjusted_loss

CODE = "FlamieZhu/Balanced-Contrastive-Learning@f72d070"
MAIN = f"{CODE} main.py"
README = f"{CODE} README.md"


def balanced_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor | None,
                              temperature: float, class_averaging: bool = True) -> torch.Tensor:
    """Mean of L_BCL over the anchors (`embeddings`, L2-normalised, every view of the batch, with
    their `labels`), contrasted against every rank's embeddings and the class `prototypes`
    (normalised, one row per class; None leaves class-complement out). With class_averaging off
    the denominator is SupCon's sum over every other member. An anchor without a positive adds
    nothing (none is without one while the prototypes are in). Data-parallel, the embeddings of
    every rank are gathered with their gradient and the mean runs over all ranks' anchors, so the
    ranks' loss is the one-device loss of the global batch: the original's, whose nn.DataParallel
    (main.py L118) gathers the whole batch's features onto one GPU before BalSCL (L304-309), and
    whose class counts (contrastive.py L26) are the whole batch's. Memory: a (V N) x (V N + C)
    similarity matrix."""
    contrast, first = distributed.gather_with_grad(embeddings)
    contrast_labels = distributed.gather(labels)
    if prototypes is not None:
        contrast = torch.cat([contrast, prototypes])
        contrast_labels = torch.cat([contrast_labels, torch.arange(len(prototypes), device=labels.device)])
    n = len(labels)
    rows = torch.arange(n, device=labels.device)
    self_pair = torch.zeros(n, len(contrast_labels), dtype=torch.bool, device=labels.device)
    self_pair[rows, first + rows] = True
    logits = embeddings @ contrast.T / temperature
    positives = (labels[:, None] == contrast_labels[None, :]) & ~self_pair
    denominator_terms = logits
    if class_averaging:
        members = torch.bincount(contrast_labels).to(logits.dtype)
        # each term divided by the size of its class in the contrast set, less the anchor in its own
        denominator_terms = logits - (members[contrast_labels][None, :] - positives.to(logits.dtype)).log()
    log_denominator = denominator_terms.masked_fill(self_pair, float("-inf")).logsumexp(dim=1, keepdim=True)
    log_prob = logits - log_denominator
    n_positives = positives.sum(dim=1)
    anchors = n_positives > 0
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(dim=1)[anchors] / n_positives[anchors]
    return distributed.anchor_mean(per_anchor)


# main.py L182-190: the contrastive views of each --cl_views choice; its argparse says rand-rand
# (L58), the branch that builds it randstack-randstack (L188), both SimAugment then RandAugment
CL_VIEWS = {"sim-sim": ("sim", "sim"), "sim-rand": ("sim_rand", "sim"), "rand-rand": ("sim_rand", "sim_rand")}


def bcl_views(classifier: str, contrastive: str) -> tuple[View, View, View]:
    """main.py's transform_train: the classifier's view, then the two contrastive views."""
    first, second = CL_VIEWS.get(contrastive, (contrastive, contrastive))
    return View(classifier), View(first), View(second)


BY_DATASET = {
    "imagenet_lt": {
        "epochs": (90, f"{README} L41: --epochs 90"),
        "lr": (0.1, f"{README} L41: --lr 0.1"),
        "weight_decay": (5e-4, f"{README} L43: --wd 5e-4"),
    },
    "inat2018": {
        "epochs": (100, f"{README} L60: --epochs 100"),
        "lr": (0.2, f"{README} L60: --lr 0.2"),
        "weight_decay": (1e-4, f"{README} L62: --wd 1e-4"),
    },
}


class BCL(Method):
    """BCL, balanced contrastive learning with class prototypes and a logit-compensated cosine classifier (Zhu et al., CVPR 2022)."""

    name, display_name = "bcl", "BCL"
    hyperparameters = {
        "alpha": Setting(1.0, "weight of the logit-compensated CE branch", low=0, high=100,
                         source=f"{MAIN} L55: --alpha 1.0; L311: loss = alpha * ce_loss + beta * scl_loss",
                         search=Search(0.5, 2.0, source="ltbench default: around the code's alpha = 1, "
                                       "halved and doubled")),
        "beta": Setting(0.35, "weight of the balanced contrastive loss", low=0, high=100,
                        source=f"{MAIN} L56: --beta 0.35",
                        search=Search(0.1, 1.0, source="ltbench default: from under a third to about three "
                                      "times the code's beta = 0.35")),
        "temperature": Setting(0.07, "temperature of the balanced contrastive loss", above=0, high=100,
                               source=f"{MAIN} L30: --temp 0.07; L232: BalSCL(cls_num_list, args.temp)",
                               search=Search(0.05, 0.5, log=True, source="ltbench default: log-uniform from "
                                             "0.05 to 0.5, around the code's 0.07 and SupCon's 0.1")),
        "tau": Setting(1.0, "weight of the log prior added to the logits in the CE branch (logit compensation)",
                       low=0, high=100, source=f"{CODE} loss/logitadjust.py L10: LogitAdjust(tau=1), as main.py "
                       "L231 builds it"),
        "class_averaging": Setting(True, "average each class's terms in the contrastive denominator",
                                   source=f"{CODE} loss/contrastive.py L47-51: exp_logits.div(per_ins_weight)"),
        "class_complement": Setting(True, "contrast against one prototype per class besides the batch",
                                    source=f"{CODE} loss/contrastive.py L37-39: features = cat([features, "
                                    "centers1])"),
        "projection_dim": Setting(1024, "width of the normalised embedding and of the prototypes", low=1,
                                  high=65_536, source=f"{MAIN} L60: --feat_dim 1024"),
        "projection_hidden": Setting(0, "hidden width of both MLP heads; 0: the backbone's feature width", low=0,
                                     high=65_536, source=f"{CODE} models/resnext.py L291, L301: "
                                     "Linear(dim_in, dim_in), BatchNorm1d, ReLU, Linear(dim_in, feat_dim)"),
        "cosine_classifier": Setting(True, "cosine classifier s cos(x, w_j) (False: nn.Linear)",
                                     source=f"{MAIN} L66: --use_norm True; models/resnext.py L297-300"),
        "cosine_scale": Setting(30.0, "s, the scale of the cosine classifier's logits", above=0, high=1000,
                                source=f"{CODE} models/resnext.py L14: self.s = 30"),
        "contrastive_augment": Setting("sim-sim", "augmentation of the contrastive branch's two views: one of main.py's "
                                       "--cl_views pairs (sim-sim, sim-rand, rand-rand; rand is SimAugment then "
                                       "RandAugment), or any registered augmentation for both",
                                       choices=(*CL_VIEWS, *AUGMENTATIONS),
                                       source=f"{MAIN} L58: --cl_views sim-sim; L172-184: augmentation_sim"),
        "classifier_augment": Setting("rand_cls", "augmentation of the classifier branch's view",
                                      choices=tuple(AUGMENTATIONS),
                                      source=f"{MAIN} L151-160, L183: augmentation_randncls (RandomResizedCrop, "
                                      "flip, ColorJitter(0.4, 0.4, 0.4, 0), RandAugment rand-n2-m10-mstd0.5)"),
    }
    trainer_defaults = {
        "batch_size": 256,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 0,
    }
    trainer_sources = {
        "batch_size": f"{MAIN} L33: --batch-size 256",
        "lr": f"{MAIN} L38: --lr 0.1",
        "momentum": f"{MAIN} L42: --momentum 0.9",
        "weight_decay": f"{MAIN} L44: --wd 5e-4",
        "schedule": f"{MAIN} L64: --cos True; L403-404: cosine, set once an epoch",
        "warmup_epochs": f"{MAIN} L61: --warmup_epochs 0",
    }
    dataset_trainer_defaults = BY_DATASET
    draws = {"main": Draw("instance", per_view=bcl_views("rand_cls", "sim-sim"))}

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        # one draw, three views of the same images, as main.py's dataset returns them
        self.draws = {"main": Draw("instance", per_view=bcl_views(hp["classifier_augment"],
                                                                  hp["contrastive_augment"]))}
        self.projection = ProjectionHead(feature_dim, hp["projection_hidden"], hp["projection_dim"], batch_norm=True)
        self.prototype_head = ProjectionHead(feature_dim, hp["projection_hidden"], hp["projection_dim"],
                                             batch_norm=True)
        if hp["cosine_classifier"]:
            self.classifier = NormedLinear(feature_dim, self.num_classes)
        else:
            self.classifier = torch.nn.Linear(feature_dim, self.num_classes)

    def class_weights(self) -> torch.Tensor:
        """The classifier's weight vectors, one row per class, unnormalised as BCLModel feeds them."""
        weight = self.classifier.weight
        return weight.T if isinstance(self.classifier, NormedLinear) else weight

    def prototypes(self) -> torch.Tensor:
        return self.prototype_head(self.class_weights().float())

    def feature_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        prototypes = self.prototypes() if self.hp["class_complement"] else None
        return balanced_contrastive_loss(embeddings, labels, prototypes, self.hp["temperature"],
                                         self.hp["class_averaging"])

    def logits(self, features):
        if isinstance(self.classifier, NormedLinear):
            return self.hp["cosine_scale"] * self.classifier(features)
        return self.classifier(features)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        n, labels = len(batch.labels), batch.labels
        # one pass through the backbone, so BatchNorm sees the three views together as in main.py L301-304
        images = torch.cat(batch.views)
        class_features, contrast_features = backbone(images).split([n, len(images) - n])
        # the heads and the contrastive loss in fp32: a bf16 cosine over a temperature of 0.07 is
        # logit noise of ~0.06 inside exp()
        with torch.autocast(images.device.type, enabled=False):
            embeddings = self.projection(contrast_features.float())
            l_bcl = self.feature_loss(embeddings, labels.repeat(len(batch.views) - 1))
        counts = self.class_counts.to(class_features.device)
        l_ce = logit_adjusted_loss(self.logits(class_features).float(), labels, counts, self.hp["tau"])
        self.record(loss_ce=l_ce.detach(), loss_bcl=l_bcl.detach())
        return self.hp["alpha"] * l_ce + self.hp["beta"] * l_bcl
