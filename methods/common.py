"""Pieces several long-tailed methods share: class weights, class priors, the cosine classifier."""

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ltbench.data.datasets import has_validation
from ltbench.errors import UserError
from ltbench.metrics import ClassCounts
from ltbench.settings import LR_SEARCH, Search, Setting, Stage2Plan, with_default
from ltbench.stages import STAGE1_EPOCH


def effective_number_weights(class_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al. (CVPR 2019): w_j = (1 - beta) / (1 - beta^n_j), normalised to sum to C.
    beta = 0 gives every class weight 1."""
    counts = class_counts.double()
    weights = (1 - beta) / (1 - beta**counts)
    return (weights / weights.sum() * len(counts)).float()


def drw_start_epoch(epochs: int, start: float) -> int:
    """Deferred re-weighting starts at this 0-based epoch. LDAM-DRW starts at epoch 160 of 200,
    the epoch of the first learning-rate decay; rounded the way the trainer rounds milestones so
    the two stay together under any --epochs."""
    return round(start * epochs)


def drw_weights(class_counts: torch.Tensor, beta: float, epoch: int, epochs: int, start: float) -> torch.Tensor:
    """LDAM-DRW's `betas = [0, beta]; idx = epoch // 160`: uniform weights, then effective-number
    weights from the DRW start epoch on."""
    return effective_number_weights(class_counts, beta if epoch >= drw_start_epoch(epochs, start) else 0.0)


def deferred_weights(method, progress) -> torch.Tensor:
    """A DRW method's class weights for this step (`drw_beta`, `drw_start` in its settings);
    whether re-weighting is on goes to the run's history as `drw` (0 or 1)."""
    hp = method.hp
    method.record(drw=float(progress.epoch >= drw_start_epoch(progress.epochs, hp["drw_start"])))
    return drw_weights(method.class_counts, hp["drw_beta"], progress.epoch, progress.epochs, hp["drw_start"])


def log_prior(class_counts: torch.Tensor) -> torch.Tensor:
    """log pi_j, the training label distribution (Menon et al. 2021)."""
    counts = class_counts.float()
    return (counts / counts.sum()).log()


@torch.no_grad()
def choose_on_validation(trainer, method, name: str, grid: list, logits_of) -> dict:
    """A post-hoc parameter chosen from `grid` by balanced accuracy (the mean over the classes
    it has images of) on the validation split, never the test set or the training images the
    model has fit; ties go to the first in grid order. `logits_of(features, value)` scores the
    backbone's features with the parameter at `value`. One value in the grid is no choice, and
    needs no validation image. Returns what the result row records, the choice under `name`."""
    if len(grid) == 1:
        return {name: grid[0], "selection": "fixed (one value in the grid)"}
    data = trainer.data
    if not has_validation(data):
        raise UserError(f"{method.name} chooses {name} on the validation split, and {data.name} has no validation "
                        "image here (the construction keeps every image: imbalance factor 1?)",
                        hint=f"fix it with one value, e.g. --set {method.name}.{name}_grid=1.0")
    features = trainer.features(data.val_x, data.val_y)
    labels = torch.from_numpy(np.asarray(data.val_y)).to(features.device)
    scores = []
    for value in grid:
        predictions = logits_of(features, value).argmax(1)
        per_class = ClassCounts.from_predictions(predictions, labels, method.num_classes).per_class
        scores.append(float(np.nanmean(per_class)))
    best = int(np.argmax(scores))
    return {name: grid[best], "selection": "balanced accuracy on the validation split",
            "val_images": len(labels), "val_classes": int(torch.unique(labels).numel()),
            "balanced_accuracy": round(scores[best], 2)}


class NormedLinear(nn.Module):
    """LDAM-DRW's cosine classifier: cos(x, w_j), no bias. Weight stored (in, out) as in the
    original, whose init `uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)` gives unit columns."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # LDAM scales cosines by s = 30: bf16 rounding of the cosine (~0.4 %) would become
        # logit noise of ~0.1, so this small product stays in fp32 under autocast
        with torch.autocast(x.device.type, enabled=False):
            return F.normalize(x.float(), dim=1) @ F.normalize(self.weight.float(), dim=0)


def require(condition: bool, message: str, hint: str | None = None) -> None:
    if not condition:
        raise UserError(message, hint=hint)


# Deferred re-weighting's two settings, shared by LDAM-DRW and CE-DRW
DRW_SETTINGS = {
    "drw_beta": Setting(0.9999, "effective-number beta of the re-weighting (Cui et al.)", low=0, below=1,
                        source="LDAM-DRW cifar_train.py train_rule DRW: betas = [0, 0.9999]"),
    "drw_start": Setting(0.8, "fraction of the epochs after which re-weighting starts (160 of 200)", low=0, high=1,
                         source="LDAM-DRW cifar_train.py train_rule DRW: idx = epoch // 160",
                         search=Search(0.5, 0.9, source="ltbench default: Cao et al. start at the first lr decay (160 "
                                       "of 200); from half the run to the second decay (0.9), so re-weighting always "
                                       "has epochs to act")),
}


# classifier-balancing at commit 22370c6 (facebookresearch/classifier-balancing): its one
# training loop, run_networks.py, runs both stages.
RUN_NETWORKS = "classifier-balancing run_networks.py"


def classifier_stage2_settings(prefix: str, epochs: int, config: str) -> dict[str, Setting]:
    """Decoupling's classifier stage under `<prefix>_*` names, as classifier-balancing's
    ImageNet-LT `config` (e.g. config/ImageNet_LT/cls_crt.yaml) and run_networks.py run it:
    lr 0.2 cosine to 0, batch 512, wd 5e-4, 4 images per class draw, the frozen backbone's
    BatchNorm in train mode, and the schedule stepped before each epoch."""
    cb = f"classifier-balancing {config}"
    return {
        f"{prefix}_lr": Setting(0.2, "stage-2 learning rate (cosine to 0)", above=0, high=1e3,
                                source=f"{cb} L15: lr 0.2; L1, L8: coslr, endlr 0.0",
                                search=replace(LR_SEARCH, source="ltbench default, as the trainer's lr: a decade, "
                                               "log-uniform, centred on the config's stage-2 lr")),
        f"{prefix}_epochs": Setting(epochs, "stage-2 epochs", low=1, high=100_000,
                                    source=f"{cb} L34: num_epochs {epochs}"),
        f"{prefix}_batch_size": Setting(512, "stage-2 batch size", low=1, high=1_000_000,
                                        source=f"{cb} L27: batch_size 512"),
        f"{prefix}_momentum": Setting(0.9, "stage-2 SGD momentum", low=0, below=1, source=f"{cb} L15: momentum 0.9"),
        f"{prefix}_weight_decay": Setting(5e-4, "stage-2 weight decay", low=0, high=1,
                                          source=f"{cb} L15: weight_decay 0.0005"),
        f"{prefix}_per_class": Setting(4, "images of a class per class-balanced draw (ClassAwareSampler)", low=1,
                                       high=100_000, source=f"{cb} L37: ClassAwareSampler, num_samples_cls 4"),
        # run_networks.py L247-249 puts every network in train mode each epoch, the frozen
        # feat_model too (`fix`, L115-120, only stops its gradients), so BatchNorm normalises
        # with the class-balanced batch's statistics and its running statistics follow them
        f"{prefix}_bn_train": Setting(True, "keep the frozen backbone's BatchNorm in train mode in stage 2 (its "
                                      "running statistics follow the class-balanced batches)",
                                      source=f"{RUN_NETWORKS} L247-249: model.train() on every network, the frozen "
                                      "feat_model too", earlier=False),
        # run_networks.py L255 steps CosineAnnealingLR(T_max=num_epochs, eta_min=endlr)
        # (L159-160) before each epoch's steps: epoch e (1-based) trains at the lr of e / E,
        # so the first starts just below the peak and the last trains at lr 0
        f"{prefix}_lr_step_first": Setting(True, "step the cosine schedule before each epoch, so epoch e of E trains "
                                           "at the lr of (e + 1) / E and the last at 0",
                                           source=f"{RUN_NETWORKS} L255: scheduler.step() before the epoch; "
                                           "L159-160: CosineAnnealingLR(num_epochs, eta_min=endlr)", earlier=False),
        "stage1_epoch": STAGE1_EPOCH,
    }


# The stage 2 of a post-hoc method (tau-norm, post-hoc logit adjustment): no epoch trains; the
# method adjusts the stage-1 classifier (calibrating on training images where it chooses a value)
# and is evaluated. The batch size only sizes the loader the trainer builds and never draws from.
POST_HOC = Stage2Plan(epochs=0, batch_size=512)


def with_dataset_defaults(own: dict[str, Setting], dataset, by_dataset: dict) -> dict[str, Setting]:
    """`own` with a dataset's own paper values: by_dataset = {dataset name: {key: (value, source)}}."""
    for key, (value, source) in by_dataset.get(dataset.name, {}).items():
        own[key] = with_default(own[key], value, source)
    return own


def dataset_stage2_settings(own: dict[str, Setting], prefix: str, dataset, by_dataset: dict) -> dict[str, Setting]:
    """`own` with a dataset's own stage-2 values: by_dataset = {dataset name: {key without the prefix: (value, source)}}."""
    prefixed = {name: {f"{prefix}_{key}": value for key, value in values.items()} for name, values in by_dataset.items()}
    return with_dataset_defaults(own, dataset, prefixed)


# Cao et al.'s iNaturalist 2018 protocol, App. B: "we followed the same training strategy used by
# [He et al., 2016] and trained ResNet-50 ... We train the network for 90 epochs with an initial
# learning rate of 0.1. We anneal the learning rate at epoch 30 and 60. For our two-stage training
# schedule, we rebalance the training data starting from epoch 60. We tune C ... so that the
# largest enforced margin is 0.3." What it leaves to He et al. (Sec. 3.4): batch 256, weight
# decay 1e-4, the lr divided by 10, no warm-up. The fractions are published.csv's, so a run
# is compared with the figures of Cao et al.'s Table 3 (30 and 60 of 90 under any rounding).
CAO_INAT = "Cao et al. 2019 (arXiv:1906.07413v2) App. B, iNaturalist 2018"
HE_2016 = "He et al. 2016 Sec. 3.4, the training strategy Cao et al. App. B follows on iNaturalist 2018"
CAO_INAT_TRAINER = {"inat2018": {
    "epochs": (90, f"{CAO_INAT}: we train the network for 90 epochs"),
    "lr": (0.1, f"{CAO_INAT}: an initial learning rate of 0.1"),
    "schedule": ("step", f"{CAO_INAT}: we anneal the learning rate at epoch 30 and 60"),
    "milestones": ([0.3333, 0.6667], f"{CAO_INAT}: we anneal the learning rate at epoch 30 and 60 (of 90)"),
    "lr_factors": ([0.1, 0.01], f"{HE_2016}: the learning rate is divided by 10"),
    "warmup_epochs": (0, f"{CAO_INAT}: no warm-up described"),
    "batch_size": (256, f"{HE_2016}: a mini-batch size of 256"),
    "weight_decay": (1e-4, f"{HE_2016}: a weight decay of 0.0001"),
}}
CAO_INAT_DRW = {"inat2018": {"drw_start": (0.6667, f"{CAO_INAT}: we rebalance the training data starting from "
                                                   "epoch 60 (of 90)")}}
CAO_INAT_MARGIN = {"inat2018": {"max_margin": (0.3, f"{CAO_INAT}: the largest enforced margin is 0.3")}}


def classifier_stage2(hp: dict, prefix: str) -> Stage2Plan:
    """Decoupling's classifier stage (Kang et al. 2020, classifier-balancing configs): SGD with
    momentum, cosine lr to 0 with no warm-up, read from the method's `<prefix>_*`
    hyperparameters; its class-balanced draw of `<prefix>_per_class` images a class is the
    method's Draw (ltbench_methods.decoupling).

    The original keeps the stage-2 epoch, and the stage-1 checkpoint it starts from, that did
    best on its validation split (run_networks.py L342, L357-362, L376; load_model L665-674
    loads stage 1's `state_dict_best`). Here stage 2 ends at its last epoch, the rule the
    report's headline uses for every method, and starts from stage 1's last epoch unless
    `stage1_epoch` is bestval (ltbench.stages: the epoch best on ltbench's validation split,
    never the test set). The test set is evaluated once, after the last epoch."""
    epochs = hp[f"{prefix}_epochs"]
    return Stage2Plan(
        epochs=epochs, batch_size=hp[f"{prefix}_batch_size"],
        settings={"lr": hp[f"{prefix}_lr"], "momentum": hp[f"{prefix}_momentum"],
                  "weight_decay": hp[f"{prefix}_weight_decay"], "schedule": "cosine", "warmup_epochs": 0,
                  "eval_every": epochs},
        lr_step_first=hp[f"{prefix}_lr_step_first"], bn_train=hp[f"{prefix}_bn_train"])
