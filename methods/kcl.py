"""KCL, k-positive contrastive learning (Kang et al., ICLR 2021, "Exploring Balanced Feature
Spaces for Representation Learning"): stage 1 learns the representation with a supervised
contrastive loss in which each anchor takes as positives the other view of its own image and
at most k other images of its class, drawn at random anew every step, so a head class pulls
no harder on its anchors than a class with k + 1 images; stage 2 trains a linear classifier
with class-balanced sampling on the frozen backbone.

    L(z_i) = -1 / (1 + k_i) * sum_{p in {view(i)} u K_i} log( exp(z_i . z_p / tau) / sum_{a != i} exp(z_i . z_a / tau) )

K_i: min(k, |P(i)|) images drawn without replacement from P(i), the other images of i's class
in the batch (both views of each), k_i = |K_i|; the denominator runs over every other embedding.

The paper's code is not public; ltbench follows the re-implementation in TSC's repository,
LTH14/targeted-supcon at commit c4f15ebf67756088f40b672d7612b341529c7447: moco/builder.py
(class KCL, L168-433; the k positives L391-403, the loss L421-428), main_moco_supcon_imba.py
(arguments, L37-116; augmentation, L265-272) and the README's commands (stage 1: --cos --epochs
200 --K 6 --moco-dim 128 --mlp --lr 0.1 --batch-size 256; stage 2: main_lincls_imba.py --epochs
40 --schedule 20 30 -b 2048). Its in-batch CIFAR variant, cifar_dirty/tsc_cifar_loss.py
(L95-146), draws the positives the same way.

Differences from the original, and why:

- Momentum encoder and queue: the released code contrasts each query with a MoCo key (its
  other view through a momentum encoder, m 0.999) and a queue of 65,536 past keys, from which
  the k positives are drawn. ltbench contrasts the batch's two views with each other through
  the one backbone (SupCon's form, and the form of the repository's CIFAR loss), so the
  positives and negatives come from the batch: at batch 256 a class has far fewer candidate
  positives than in a 65,536-key queue, and a tail anchor can have fewer than k.
- Several devices: the released code's loss is per GPU under DDP (main_moco_supcon_imba.py
  L212), each GPU's queries against its own keys (shuffled across GPUs, moco/builder.py
  L321-331) and the queue, which holds every GPU's keys (concat_all_gather, L241-244); the
  CIFAR script, whose in-batch form ltbench's is, computes the loss of the whole batch on one
  GPU (nn.DataParallel, cifar_dirty/main_supcon_imba.py L316). ltbench's batch stands in for
  the queue, so data-parallel each rank's anchors contrast with every rank's embeddings,
  gathered with their gradient: the ranks' loss is the one-device loss of the global batch.
- Stage 1's evaluation: the original evaluates only after stage 2. So that a stage-1 run has a
  prediction of its own (ltbench evaluates every run), a linear probe on the detached backbone
  features of the first view trains beside the loss with instance-sampled cross-entropy; no
  gradient of it reaches the backbone, and stage 2 starts a fresh classifier.
- Augmentation: RandomResizedCrop, flip and ColorJitter(0.4, 0.4, 0.4, 0) applied always
  (main_moco_supcon_imba.py L268-272); ltbench's contrastive views (ltbench.data.augment) crop
  with SupCon's scale (0.2, 1) and apply a jitter of 0.4 (hue 0.1) with probability 0.8.
- Selection: main_lincls_imba.py evaluates the test set every epoch; ltbench keeps the last.
- Protocol: ImageNet-LT's is the README's commands; CIFAR-LT's is the authors' supplementary
  material (supp_release.pdf in the repository, App. A): stage 1 for 1000 epochs at batch 1024,
  lr 0.5 cosine, as SimCLR-style supervised contrastive learning (in-batch, as here); stage 2
  for 200 epochs with "LDAM loss and class re-weighting", batch 128, lr 0.1 divided by 10 at
  epochs 140, 180 and 190. ltbench reads the re-weighting as LDAM-DRW's effective-number
  weights from the first epoch (the text describes no deferral), on instance-sampled batches.
  Fashion-MNIST-LT takes CIFAR's. iNaturalist's and Places-LT's KCL protocols are not given.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ltbench import distributed
from ltbench.data.augment import CONTRASTIVE_CROPS
from ltbench.method import Draw, Method, Progress
from ltbench.settings import Setting, Stage2Plan, with_default
from ltbench_methods.common import NormedLinear, effective_number_weights
from ltbench_methods.decoupling import ClassifierStage
from ltbench_methods.hybrid import TEMPERATURE_SEARCH, ProjectionHead
from ltbench_methods.ldam_drw import LDAMLoss

TSC = "LTH14/targeted-supcon@c4f15eb"
BUILDER = f"{TSC} moco/builder.py"
MAIN = f"{TSC} main_moco_supcon_imba.py"
LINCLS = f"{TSC} main_lincls_imba.py"
README = f"{TSC} README.md"
# the authors' supplementary material, supp_release.pdf in the repository, Appendix A
SUPPLEMENT = f"Li et al. CVPR 2022, supplementary ({TSC} supp_release.pdf)"
APPENDIX = f"{SUPPLEMENT} App. A"
UNCONFIRMED = {
    "places_lt": "the TSC repository and its appendix give no Places-LT protocol",
    "inat2018": "the TSC appendix gives iNaturalist's protocol for TSC only; KCL's there is not given",
}
CIFAR_DIRTY = f"{TSC} cifar_dirty/main_supcon_imba.py"
# the appendix's CIFAR-LT protocol; Fashion-MNIST-LT, CIFAR-sized, takes it too
CIFAR_NAMES = ("cifar10_lt", "cifar100_lt", "fashion_mnist_lt")


def image_ids(n: int, views: int, first: int = 0) -> torch.Tensor:
    """The image of each of a batch's V N rows (V blocks of N, view after view), numbered after
    the `first // views` images of the ranks before this one, so ids are unique over ranks."""
    return first // views + torch.arange(n) % (n // views)


def k_positive_mask(labels: torch.Tensor, views: int, k: int, generator: torch.Generator | None = None,
                    contrast_labels: torch.Tensor | None = None, contrast_images: torch.Tensor | None = None,
                    first: int = 0) -> torch.Tensor:
    """(V N, M) boolean: anchor i's positives, the other views of its own image and min(k,
    |P(i)|) embeddings drawn uniformly without replacement from P(i), the other views' and images'
    embeddings of its class that are not its own image's. The anchors are the batch's V N rows,
    V blocks of N, view after view, as the batch's views are concatenated; the M columns are the
    same rows (M = V N), or, data-parallel, every rank's rows gathered (`contrast_labels`, and
    `contrast_images` from image_ids), this rank's from row `first`. Random keys from `generator`
    (torch's default where None) pick the k: the k largest keys among the candidates."""
    n = len(labels)
    images = image_ids(n, views, first).to(labels.device)
    if contrast_labels is None:
        contrast_labels, contrast_images = labels, images
    rows = torch.arange(n, device=labels.device)
    self_pair = torch.zeros(n, len(contrast_labels), dtype=torch.bool, device=labels.device)
    self_pair[rows, first + rows] = True
    same_image = (images[:, None] == contrast_images[None, :]) & ~self_pair
    candidates = (labels[:, None] == contrast_labels[None, :]) & (images[:, None] != contrast_images[None, :])
    chosen = same_image.clone()
    if k > 0 and candidates.any():
        keys = torch.rand(self_pair.shape, generator=generator, device=generator.device if generator else labels.device)
        keys = keys.to(labels.device).masked_fill(~candidates, -1.0)
        top, index = keys.topk(min(k, len(contrast_labels)), dim=1)
        picked = torch.zeros_like(chosen).scatter_(1, index, top >= 0)
        chosen |= picked
    return chosen


def k_positive_contrastive_loss(embeddings: torch.Tensor, positives: torch.Tensor, temperature: float,
                                targets: torch.Tensor | None = None, target_positive: torch.Tensor | None = None,
                                contrast: torch.Tensor | None = None, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The class term and the target term of moco/builder.py L421-426 over a batch's anchors.
    Each anchor's softmax runs over every other embedding (of `contrast`, every rank's gathered,
    where given: the anchors are its rows from `first`) and, where given, every target (rows
    of `targets`, fixed points on the sphere); `positives` (k_positive_mask) are its positive
    embeddings, `target_positive` (anchors x targets, boolean) its positive targets. Both terms
    divide by the anchor's number of positives of both kinds (L425-426 divide by
    mask_pos_view.sum, the targets included) and average over every rank's anchors."""
    n = len(embeddings)
    contrast = embeddings if contrast is None else contrast
    m = len(contrast)
    rows = torch.arange(n, device=embeddings.device)
    self_pair = torch.zeros(n, m, dtype=torch.bool, device=embeddings.device)
    self_pair[rows, first + rows] = True
    logits = (embeddings @ contrast.T / temperature).masked_fill(self_pair, float("-inf"))
    if targets is not None:
        logits = torch.cat([logits, embeddings @ targets.T / temperature], dim=1)
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    count = positives.sum(dim=1).float()
    if target_positive is not None:
        count = count + target_positive.sum(dim=1)
    class_term = distributed.anchor_mean(-log_prob[:, :m].masked_fill(~positives, 0.0).sum(dim=1) / count)
    if target_positive is None:
        return class_term, embeddings.sum() * 0.0
    target_term = distributed.anchor_mean(-log_prob[:, m:].masked_fill(~target_positive, 0.0).sum(dim=1) / count)
    return class_term, target_term


def global_batch(embeddings: torch.Tensor, labels: torch.Tensor, views: int, k: int):
    """Every rank's embeddings, gathered with their gradient, the row where this rank's start,
    and this rank's anchors' k-positive mask over them: the contrast set of one device holding
    the global batch (in one process, the batch itself)."""
    contrast, first = distributed.gather_with_grad(embeddings)
    contrast_labels = distributed.gather(labels)
    contrast_images = distributed.gather(image_ids(len(labels), views, first).to(labels.device))
    return contrast, first, k_positive_mask(labels, views, k, None, contrast_labels, contrast_images, first)


class KCLStage1(Method):
    """KCL stage 1: k-positive supervised contrastive representation, with a detached linear probe (Kang et al., ICLR 2021)."""

    name, display_name = "kcl_stage1", "KCL stage 1"
    hyperparameters = {
        "k": Setting(6, "positives of the anchor's class beside its other view (at most)", low=0, high=100_000,
                     source=f"{README} L57: --K 6; {MAIN} L108: --K default 6"),
        "temperature": Setting(0.07, "temperature of the contrastive softmax", above=0, high=100,
                               source=f"{MAIN} L94: --moco-t default 0.07 (the README's commands keep it)",
                               search=TEMPERATURE_SEARCH),
        "projection_dim": Setting(128, "width of the normalised embedding", low=1, high=65_536,
                                  source=f"{README} L57: --moco-dim 128"),
        "projection_hidden": Setting(0, "hidden width of the projection MLP; 0: the backbone's feature width",
                                     low=0, high=65_536, source=f"{BUILDER} L214-217: --mlp, Linear(dim_mlp, dim_mlp), "
                                     "ReLU, Linear(dim_mlp, dim)"),
        "contrastive_crop": Setting("resized", "pad: RandomCrop(32, padding 4); resized: RandomResizedCrop",
                                    choices=tuple(CONTRASTIVE_CROPS), source=f"{MAIN} L269: RandomResizedCrop(224)"),
        "grayscale_p": Setting(0.0, "probability of random grayscale on the views", low=0, high=1,
                               source=f"{MAIN} L268-272: no RandomGrayscale"),
        "color_jitter": Setting(0.4, "ColorJitter strength on the views", low=0, high=1,
                                source=f"{MAIN} L271: ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)"),
    }
    trainer_defaults = {
        "epochs": 200,
        "batch_size": 256,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "warmup_epochs": 0,
    }
    trainer_sources = {
        "epochs": f"{README} L57: --epochs 200; {SUPPLEMENT} App. B: 200 epochs for KCL, as the KCL paper uses",
        "batch_size": f"{README} L59: --batch-size 256",
        "lr": f"{README} L59: --lr 0.1",
        "momentum": f"{MAIN} L58: --momentum default 0.9",
        "weight_decay": f"{MAIN} L60: --wd default 1e-4",
        "schedule": f"{README} L57: --cos; {MAIN} L491-493: lr 0.5 (1 + cos(pi epoch / epochs))",
        "warmup_epochs": f"{MAIN} L491-498: no warm-up",
    }
    dataset_trainer_defaults = {name: {
        "epochs": (1000, f"{APPENDIX}: on CIFAR the encoder is trained for 1000 epochs (KCL and TSC alike, App. B)"),
        "batch_size": (1024, f"{APPENDIX}: on CIFAR, batch size 1024"),
        "lr": (0.5, f"{APPENDIX}: on CIFAR, the learning rate is set to 0.5 initially"),
        "schedule": ("cosine", f"{APPENDIX}: decreased using cosine annealing"),
        "warmup_epochs": (0, f"{APPENDIX}: no warm-up described"),
    } for name in CIFAR_NAMES}
    unconfirmed_protocol = UNCONFIRMED
    draws = {"feature": Draw("instance", views=2, augment="contrastive")}

    @classmethod
    def settings(cls, dataset):
        own = super().settings(dataset)
        if dataset.family != "cifar":
            return own
        # the appendix builds CIFAR's TSC on SimCLR-style supervised contrastive learning; the
        # repository's CIFAR script has that recipe's views
        return {**own, "grayscale_p": with_default(own["grayscale_p"], 0.2, f"{CIFAR_DIRTY} L248: "
                                                   "RandomGrayscale(p=0.2)"),
                "contrastive_crop": with_default(own["contrastive_crop"], "resized", f"{CIFAR_DIRTY} L242: "
                                                 "RandomResizedCrop(size=32, scale=(0.2, 1.))"),
                "color_jitter": with_default(own["color_jitter"], 0.4, f"{CIFAR_DIRTY} L245-247: "
                                             "RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)")}

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        views = {"crop": hp["contrastive_crop"], "grayscale_p": hp["grayscale_p"], "color_jitter": hp["color_jitter"]}
        self.draws = {"feature": Draw("instance", views=2, augment="contrastive", augment_options=views)}
        self.projection = ProjectionHead(feature_dim, hp["projection_hidden"], hp["projection_dim"])
        self.probe = nn.Linear(feature_dim, self.num_classes)

    def contrastive_terms(self, embeddings: torch.Tensor, labels: torch.Tensor,
                          progress: Progress | None) -> dict[str, torch.Tensor]:
        """The loss's terms by name (their sum is the contrastive loss) at `progress` (None: at
        the end of training); TSC adds its target term."""
        contrast, first, positives = global_batch(embeddings, labels, 2, self.hp["k"])
        return {"loss_class": k_positive_contrastive_loss(embeddings, positives, self.hp["temperature"],
                                                          contrast=contrast, first=first)[0]}

    def feature_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The contrastive loss of the batch's embeddings, in full (TSC's with its targets), as
        `ltbench bench --memory` measures the hybrids' feature losses."""
        return sum(self.contrastive_terms(embeddings, labels, None).values())

    def loss(self, backbone, batches, progress):
        batch = batches["feature"]
        n = len(batch.labels)
        features = backbone(torch.cat(batch.views))
        # the cosine / tau logits run in fp32, as the hybrids' (ltbench_methods.hybrid)
        with torch.autocast(features.device.type, enabled=False):
            embeddings = self.projection(features.float())
            terms = self.contrastive_terms(embeddings, batch.labels.repeat(2), progress)
        probe = F.cross_entropy(self.probe(features[:n].detach()).float(), batch.labels)
        self.record(loss_probe=probe.detach(), **{name: term.detach() for name, term in terms.items()})
        return sum(terms.values()) + probe

    def logits(self, features):
        return self.probe(features)


STAGE2_LOSSES = ("ce_balanced", "ldam_reweighted")


def linear_stage_settings(prefix: str) -> dict[str, Setting]:
    """The linear stage under `<prefix>_*` names: main_lincls_imba.py as the README runs it
    (ImageNet-LT); CIFAR's and iNaturalist's values come from LINEAR_BY_DATASET."""
    return {
        f"{prefix}_loss": Setting("ce_balanced", "stage-2 loss: ce_balanced (cross-entropy on class-balanced batches, "
                                  "linear classifier) or ldam_reweighted (LDAM with effective-number class weights on "
                                  "instance batches, cosine classifier)", choices=STAGE2_LOSSES,
                                  source=f"{APPENDIX}: on ImageNet-LT and iNaturalist, CE loss and class-balanced "
                                  f"sampling; {LINCLS} L135, L161-163"),
        f"{prefix}_lr": Setting(10.0, "stage-2 learning rate (divided by 10 at each milestone)", above=0, high=1e3,
                                source=f"{APPENDIX}: lr 10 on ImageNet-LT; {LINCLS} L47: --lr default 10"),
        f"{prefix}_epochs": Setting(40, "stage-2 epochs", low=1, high=100_000,
                                    source=f"{APPENDIX}: 40 epochs; {README} L75: --epochs 40"),
        f"{prefix}_milestones": Setting([0.5, 0.75], "fractions of the stage-2 epochs where the lr drops by 10",
                                        low=0, high=1, source=f"{APPENDIX}: multiplied by 0.1 at epoch 20 and 30 (of "
                                        f"40); {README} L75: --schedule 20 30; {LINCLS} L382-388"),
        f"{prefix}_batch_size": Setting(2048, "stage-2 batch size", low=1, high=1_000_000,
                                        source=f"{APPENDIX}: batch size 2048; {README} L75: -b 2048"),
        f"{prefix}_momentum": Setting(0.9, "stage-2 SGD momentum", low=0, below=1, source=f"{LINCLS} L51"),
        f"{prefix}_weight_decay": Setting(0.0, "stage-2 weight decay", low=0, high=1,
                                          source=f"{LINCLS} L53: --wd default 0"),
        f"{prefix}_per_class": Setting(4, "images of a class per class-balanced draw (ClassAwareSampler)", low=1,
                                       high=100_000, source=f"{LINCLS} L161-163: ClassAwareSampler, num_samples_cls 4"),
        f"{prefix}_bn_train": Setting(True, "keep the frozen backbone's BatchNorm in train mode in stage 2",
                                      source=f"{LINCLS} L225: model.train() (only fc requires grad, L92-95)"),
    }


CIFAR_STAGE2 = {
    "loss": ("ldam_reweighted", f"{APPENDIX}: on CIFAR, LDAM loss and class re-weighting (read here as LDAM-DRW's "
                                "effective-number weights, beta 0.9999, from the first epoch: no deferral is described)"),
    "lr": (0.1, f"{APPENDIX}: on CIFAR, the learning rate is set to 0.1 initially"),
    "epochs": (200, f"{APPENDIX}: on CIFAR, the linear classifier is trained for 200 epochs"),
    "milestones": ([0.7, 0.9, 0.95], f"{APPENDIX}: on CIFAR, multiplied by 0.1 at epoch 140, 180 and 190 (of 200)"),
    "batch_size": (128, f"{APPENDIX}: on CIFAR, batch size 128"),
    "weight_decay": (2e-4, "not given in the appendix; LDAM-DRW cifar_train.py --wd default 2e-4, whose loss it uses"),
    "bn_train": (False, "not given in the appendix; ltbench default: the frozen encoder keeps its statistics"),
}
LINEAR_BY_DATASET = {
    **{name: CIFAR_STAGE2 for name in CIFAR_NAMES},
    "inat2018": {"lr": (30.0, f"{APPENDIX}: the learning rate is set to 30 on iNaturalist")},
}
# LDAM-DRW's CIFAR values, the loss the appendix names for CIFAR's second stage
LDAM_MAX_MARGIN, LDAM_SCALE, REWEIGHT_BETA = 0.5, 30.0, 0.9999


class LinearStage(ClassifierStage):
    """The second stage of KCL and TSC: a fresh classifier on the frozen stage-1 backbone.
    ce_balanced is main_lincls_imba.py's (a linear layer, weight ~ N(0, 0.01^2), bias 0,
    class-balanced batches, cross-entropy); ldam_reweighted the appendix's CIFAR stage (LDAM-DRW's
    cosine classifier and loss, class weights by effective number, instance batches)."""

    by_dataset = LINEAR_BY_DATASET

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        if hp[f"{self.name}_loss"] == "ldam_reweighted":
            self.draws = {"main": Draw(sampler="instance")}
            self.classifier = NormedLinear(feature_dim, self.num_classes)
            self.ldam = LDAMLoss(self.class_counts, LDAM_MAX_MARGIN, LDAM_SCALE)
            self.register_buffer("class_weights", effective_number_weights(self.class_counts, REWEIGHT_BETA))
        else:
            self.classifier = nn.Linear(feature_dim, self.num_classes)
            # main_lincls_imba.py L96-98
            nn.init.normal_(self.classifier.weight, std=0.01)
            nn.init.zeros_(self.classifier.bias)

    def stage2(self):
        hp, prefix = self.hp, self.name
        epochs, milestones = hp[f"{prefix}_epochs"], list(hp[f"{prefix}_milestones"])
        return Stage2Plan(
            epochs=epochs, batch_size=hp[f"{prefix}_batch_size"],
            settings={"lr": hp[f"{prefix}_lr"], "momentum": hp[f"{prefix}_momentum"],
                      "weight_decay": hp[f"{prefix}_weight_decay"], "schedule": "step", "milestones": milestones,
                      "lr_factors": [0.1**(i + 1) for i in range(len(milestones))], "warmup_epochs": 0,
                      "eval_every": epochs},
            bn_train=hp[f"{prefix}_bn_train"])

    def loss(self, backbone, batches, progress):
        if not hasattr(self, "ldam"):
            return super().loss(backbone, batches, progress)
        batch = batches["main"]
        return self.ldam(self.logits(backbone(batch.views[0])).float(), batch.labels, self.class_weights)

    def logits(self, features):
        return self.classifier(features)


class KCL(LinearStage):
    """KCL: k-positive contrastive backbone, linear classifier re-trained class-balanced (Kang et al., ICLR 2021)."""

    name, display_name = "kcl", "KCL"
    stage1 = KCLStage1
    hyperparameters = linear_stage_settings("kcl")
    unconfirmed_protocol = UNCONFIRMED
